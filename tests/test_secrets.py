"""The API key never leaves the process, whatever a server echoes back; a key that cannot be sent is a
one-line config error naming its variable.

Every registered provider kind is pointed at ``tests.fakes.echo`` (a server that quotes each request,
its Authorization header included, in its replies) in each of its modes, and every command that talks
to an endpoint is run with keys of several shapes. The key must appear in no stdout, stderr, JSON,
run-state file or prompt outputs file, and every exit code is a documented one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sourceprep_models.providers import registered_kinds
from tests.conftest import CliFn, Run
from tests.emulator import EmulatedModel
from tests.fakes import llamaswap, lmstudio, omlx, openai, production_stack, vllm
from tests.fakes.echo import SHAPES, EchoServer, forward
from tests.fakes.llamacpp import FakeLlamaRouter
from tests.loopback import Handle, Reply, Request, serve

KEY_VAR = "ECHO_PROXY_KEY"
# Keys a server can be sent: an ordinary one; one full of JSON, regex and shell metacharacters (a
# server quoting it escapes them); one too short to be hidden inside other words.
GOOD_KEYS = {
    "plain": "sk-echo-7f3a9c2e5b1d4f6a8c0e2b4d",
    "quoted": 'sk-"echo"\\q+*?[1]{2}|$(x)-9d8e7f',
    "short": "k3y",
}
# Keys no HTTP header can carry (RFC 9110 §5.5: visible ASCII only).
BAD_KEYS = {
    "newline": "sk-echo-first\nsecond-line-77",
    "non-ascii": "sk-échø-ключ-5678",
    "control": "sk-echo\x07bell-4321",
}
MODES = (*SHAPES, "proxy")
DOCUMENTED_EXITS = {0, 1, 2, 3, 4, 5, 6}

COMMANDS: dict[str, tuple[str, ...]] = {
    "status": ("status", "--json"),
    "load": ("load", "m"),
    "unload": ("unload", "m"),
    "run-pipeline": ("run-pipeline", "p", "--json", "--no-prefetch"),
    "bench": ("bench", "m", "--json"),
    "doctor": ("doctor", "--json"),
}


def _ollama(start_emulator: Any) -> tuple[Handle, str, str]:
    emulator = start_emulator(models=[EmulatedModel("echo:1b", file_mib=4)], gpu_vram_mib=None)
    return forward(emulator.url), "echo:1b", ""


def _lmstudio(_: Any) -> tuple[Handle, str, str]:
    fake = lmstudio.FakeLMStudio()
    return (lambda r: fake.handle(r.method, r.path, r.body)), lmstudio.QWEN, ""


def _llamacpp(_: Any) -> tuple[Handle, str, str]:
    fake = FakeLlamaRouter()
    return (lambda r: fake.handle(r.method, r.path, r.body)), "tiny-a", ""


def _llamaswap(_: Any) -> tuple[Handle, str, str]:
    fake = llamaswap.FakeLlamaSwap()
    return (lambda r: fake.handle(r.method, r.path, r.headers)), llamaswap.QWEN, ""


def _openai(_: Any) -> tuple[Handle, str, str]:
    def handle(request: Request) -> Reply:
        reply = openai.listing(httpx.Request(request.method, "https://api.cloud.test" + request.path))
        return reply.status_code, reply.json()

    return handle, "gpt-4.1", "/v1"


# kind -> (a working fake for the proxy mode, the model it serves, the url suffix of the endpoint)
UPSTREAMS: dict[str, Callable[[Any], tuple[Handle, str, str]]] = {
    "ollama": _ollama,
    "lmstudio": _lmstudio,
    "llamacpp": _llamacpp,
    "llamaswap": _llamaswap,
    "vllm": lambda _: (vllm.FakeVLLM().handle, vllm.QWEN, ""),
    "omlx": lambda _: (omlx.FakeOMLX().loopback, omlx.QWEN, "/v1"),
    "openai": _openai,
    "production-stack": lambda _: (production_stack.FakeRouter().handle, production_stack.QWEN, ""),
}


def test_every_registered_kind_is_attacked() -> None:
    assert sorted(UPSTREAMS) == registered_kinds()


def forms(key: str) -> list[str]:
    """How a key can appear in text: as sent, JSON-escaped, repr-escaped; for a long key also any
    10-character piece of it (a quote cut short)."""
    found = {key, json.dumps(key)[1:-1], repr(key)[1:-1], json.dumps(key, ensure_ascii=False)[1:-1]}
    if len(key) >= 12:
        found |= {key[start : start + 10] for start in range(len(key) - 9)}
    return sorted(found)


def leaks(key: str, text: str) -> list[str]:
    if len(key) < 8:  # a short key shows up inside ordinary words; look for it as a word of its own
        return [m.group() for m in re.finditer(rf"(?<![\w\-.~+/]){re.escape(key)}(?![\w\-.~+/])", text)]
    return [form for form in forms(key) if form in text]


def written(root: Path) -> dict[str, str]:
    """Every file the tool wrote: run state, prompt outputs, caches."""
    files = {}
    for folder in ("xdg-state", "xdg-cache"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(root))] = path.read_text(encoding="utf-8", errors="replace")
    return files


@contextlib.contextmanager
def echo_endpoint(kind: str, mode: str, start_emulator: Any) -> Iterator[tuple[str, str]]:
    """The url of an echo server for ``kind`` in ``mode``, and the model name to ask for."""
    upstream, model, suffix = UPSTREAMS[kind](start_emulator if mode == "proxy" else _no_emulator)
    shape = ("ollama" if kind == "ollama" else "openai") if mode == "proxy" else mode
    server = EchoServer(shape, upstream if mode == "proxy" else None)
    with serve(server.handle) as url:
        yield url + suffix, model


def _no_emulator(**kwargs: Any) -> Any:
    class Nowhere:
        url = "http://127.0.0.1:9"

    return Nowhere()


def attack(
    cli: CliFn, write_config: Callable[[str], Path], url: str, kind: str, model: str, command: str, key: str
) -> Run:
    config = write_config(
        f'[endpoints.guarded]\nkind = "{kind}"\nurl = "{url}"\napi_key_env = "{KEY_VAR}"\n'
        f'[models.m]\nname = "{model}"\nendpoint = "guarded"\n'
        '[pipelines.p]\nstages = [{ name = "ask", model = "m", prompts = ["repeat after me"], max_tokens = 4 }]\n'
        '[memory]\nbudget = "1TiB"\nheadroom = "0"\n'
    )
    # The run's --report goes beside the state files, where ``written`` reads every file the tool wrote.
    report = ("--report", str(Path(os.environ["XDG_STATE_HOME"]) / "report.json")) if command == "run-pipeline" else ()
    return cli(
        "--config", str(config), *COMMANDS[command], *report, env={KEY_VAR: key, "SOURCEPREP_MODELS_TIMEOUT": "20"}
    )


# The suite's budget: every kind x mode once (the server's own error shape, a proxy's text page, a 200
# of the wrong shape, a proxy in front of a working fake), every command, the key shapes taking turns so
# that every kind and command meets each of them (168 runs). SOURCEPREP_MODELS_TEST_SECRETS_FULL=1 runs
# the whole product instead: every echo shape against every kind, every key with every command (756).
FULL = os.environ.get("SOURCEPREP_MODELS_TEST_SECRETS_FULL") == "1"
SUITE_MODES = MODES if FULL else ("native", "plain", "unexpected", "proxy")


def keys_for(options: dict[str, str], *indices: int) -> list[tuple[str, str]]:
    """All the key shapes in the full run; else the one whose turn it is."""
    if FULL:
        return list(options.items())
    shape = list(options)[sum(indices) % len(options)]
    return [(shape, options[shape])]


@pytest.mark.parametrize("mode", SUITE_MODES)
@pytest.mark.parametrize("kind", registered_kinds())
def test_an_echoed_key_reaches_no_output_and_no_file(
    cli: CliFn, write_config: Callable[[str], Path], ollama_emulator: Any, tmp_path: Path, kind: str, mode: str
) -> None:
    shape = ("ollama" if kind == "ollama" else "openai") if mode == "native" else mode
    with echo_endpoint(kind, shape, ollama_emulator) as (url, model):
        for turn, command in enumerate(COMMANDS):
            for key_shape, key in keys_for(GOOD_KEYS, SUITE_MODES.index(mode), turn):
                result = attack(cli, write_config, url, kind, model, command, key)
                where = f"{kind} {command} {shape} key={key_shape}"
                assert result.exit_code in DOCUMENTED_EXITS, (where, result.stderr)
                assert "Traceback" not in result.stderr, where
                assert not leaks(key, result.stdout), (where, result.stdout)
                assert not leaks(key, result.stderr), (where, result.stderr)
                for name, text in written(tmp_path).items():
                    assert not leaks(key, text), (where, name, text)
                if mode == "proxy" and command == "run-pipeline":  # the prompt was answered with the quote
                    assert result.exit_code == 0, (where, result.stderr)
                    outputs = written(tmp_path)["xdg-state/sourceprep-models/runs/p.outputs.jsonl"]
                    assert "authorization: Bearer " in outputs, outputs


# Where the command never sends the key, it cannot object to it: a cloud API has nothing loaded to ask
# about (status reads no server), and bench refuses a server it cannot load on before any request (usage).
KEY_NOT_SENT = {("openai", "status"): 0, ("openai", "bench"): 2}


@pytest.mark.parametrize("kind", registered_kinds())
def test_a_key_no_header_can_carry_is_a_config_error_naming_its_variable(
    cli: CliFn, write_config: Callable[[str], Path], tmp_path: Path, kind: str
) -> None:
    with echo_endpoint(kind, "ollama" if kind == "ollama" else "openai", None) as (url, model):
        for turn, command in enumerate(COMMANDS):
            for key_shape, key in keys_for(BAD_KEYS, registered_kinds().index(kind), turn):
                result = attack(cli, write_config, url, kind, model, command, key)
                where = f"{kind} {command} key={key_shape}"
                for text in (result.stdout, result.stderr, *written(tmp_path).values()):
                    assert not leaks(key, text), (where, text)
                assert "Traceback" not in result.stderr, where
                if command == "doctor":  # a problem found on the endpoint, not the end of the diagnosis
                    problems = [check["summary"] for check in result.json()["checks"] if check["status"] == "problem"]
                    assert result.exit_code == 1 and [KEY_VAR in message for message in problems] == [True], where
                    continue
                expected = KEY_NOT_SENT.get((kind, command), 5)
                assert result.exit_code == expected, (where, result.exit_code, result.stdout, result.stderr)
                errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
                if expected == 5:
                    assert len(errors) == 1 and KEY_VAR in errors[0], (where, result.stderr)


def test_a_proxy_quoting_the_request_leaves_no_key_in_the_outputs_or_the_state_file(
    cli: CliFn, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    key = GOOD_KEYS["plain"]
    runs = tmp_path / "xdg-state" / "sourceprep-models" / "runs"
    # A cloud API behind a proxy that answers the prompt with the request it got, header and all.
    with echo_endpoint("openai", "proxy", None) as (url, model):
        answered = attack(cli, write_config, url, "openai", model, "run-pipeline", key)
    assert answered.exit_code == 0, answered.stderr
    outputs = [json.loads(line) for line in (runs / "p.outputs.jsonl").read_text().splitlines()]
    assert [row["prompt"] for row in outputs] == ["repeat after me"]
    assert (
        outputs[0]["output"].startswith("authorization: Bearer ")
        and "POST /v1/chat/completions" in outputs[0]["output"]
    )
    assert not leaks(key, outputs[0]["output"])

    # The same proxy refusing the prompt: the run stops mid-stage, and its error is saved for --resume.
    upstream, model, suffix = UPSTREAMS["openai"](None)
    with serve(EchoServer("openai", upstream, answer_prompts=False).handle) as url:
        refused = attack(cli, write_config, url + suffix, "openai", model, "run-pipeline", key)
    assert refused.exit_code == 1, (refused.stdout, refused.stderr)
    state = json.loads((runs / "p.json").read_text())
    assert (
        state["status"] == "failed"
        and "answered 401 to a prompt" in state["message"]
        and "authorization: Bearer " in state["message"]
    )
    assert not leaks(key, state["message"]) and not leaks(key, refused.stderr)


def test_a_short_key_is_hidden_where_it_stands_alone_and_leaves_other_words_intact(
    cli: CliFn, write_config: Callable[[str], Path], ollama_emulator: Any
) -> None:
    # "qwen" is the key, and also the start of the name of a model the server does not have.
    with echo_endpoint("ollama", "proxy", ollama_emulator) as (url, _):
        result = attack(cli, write_config, url, "ollama", "qwen3:4b", "load", "qwen")
    assert result.exit_code == 1
    assert "Bearer qwen" not in result.stderr and "authorization: Bearer " in result.stderr
    assert "'qwen3:4b'" in result.stderr  # the model's name is not cut to pieces
