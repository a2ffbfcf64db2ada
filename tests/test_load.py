"""`load`: preload a model and wait until it is ready, against the Ollama emulator."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.providers import create_provider
from tests.conftest import CliFn
from tests.emulator import EmulatedModel, OllamaEmulator
from tests.helpers import wait_for
from tests.loopback import Request

MODELS = [
    EmulatedModel("qwen3:4b", file_mib=8, context_length=32768),
    EmulatedModel("qwen3-alias:latest", blob_of="qwen3:4b"),
    EmulatedModel("llama3.2:3b", file_mib=6),
    EmulatedModel("nomic-embed-text", file_mib=2, capabilities=["embedding"]),
]


@pytest.fixture
def emu(ollama_emulator, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=64)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def posted(emu, path: str) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return [r.body for r in emu.requests if r.method == "POST" and r.path == path and r.body is not None]


def test_load_chat_model(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("load", "qwen3:4b")
    assert result.exit_code == 0, result.stderr
    assert emu.loaded_names() == ["qwen3:4b"]
    assert "qwen3:4b loaded on ollama in " in result.stderr
    steps = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert steps == ["warm", "load", "verify", "total"]  # the weights are on this disk, so they are pre-read
    # Preloaded through the load shortcut: an empty prompt and no streaming (ollama.md §2.5).
    assert posted(emu, "/api/generate")[-1] == {"model": "qwen3:4b", "prompt": "", "stream": False}


def test_load_json_reports_steps_and_resident_state(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("load", "qwen3:4b", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["model"] == "qwen3:4b" and data["endpoint"] == "ollama" and data["outcome"] == "loaded"
    assert [step["step"] for step in data["steps"]] == ["warm", "load", "verify"]
    assert data["steps"][0]["wall_s"] > 0
    runner = emu.loaded()[0]
    assert data["resident"]["size"] == runner.size and data["resident"]["processor"] == "100% GPU"


def test_load_embedding_model_goes_through_embed(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("load", "nomic-embed-text")
    assert result.exit_code == 0, result.stderr
    assert emu.loaded_names() == ["nomic-embed-text:latest"]  # /api/ps shows normalized names (ollama.md §2.4)
    assert posted(emu, "/api/embed")[-1]["model"] == "nomic-embed-text"
    assert not any(body.get("model") == "nomic-embed-text" for body in posted(emu, "/api/generate"))


def test_load_with_keep_alive_and_context(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("load", "qwen3:4b", "--keep-alive", "30m", "--ctx", "8192")
    assert result.exit_code == 0, result.stderr
    body = posted(emu, "/api/generate")[-1]
    # keep_alive goes as a number of seconds: a unit-less string would be a 400 (ollama.md §3.1).
    assert body["keep_alive"] == 1800 and body["options"] == {"num_ctx": 8192}
    runner = emu.loaded()[0]
    assert runner.context_length == 8192 and runner.keep_alive_s == 1800


def test_load_forever_pins(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    assert cli("load", "qwen3:4b", "--keep-alive", "forever").exit_code == 0
    assert emu.loaded()[0].keep_alive_s is None
    assert cli("status", "--json").json()["endpoints"][0]["models"][0]["until"] == "forever"


def test_load_already_loaded_does_not_reload(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    assert cli("load", "qwen3:4b", "--ctx", "8192").exit_code == 0
    loads = dict(emu.load_count)
    result = cli("load", "qwen3:4b", "--ctx", "8192", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["outcome"] == "already-loaded"
    assert emu.load_count == loads
    assert "already loaded" in result.stderr


def test_alias_sharing_a_blob_counts_as_loaded(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    assert cli("load", "qwen3:4b").exit_code == 0
    loads = dict(emu.load_count)
    result = cli("load", "qwen3-alias", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["outcome"] == "already-loaded"
    assert emu.load_count == loads
    assert len(emu.loaded()) == 1


def test_load_with_a_new_context_reloads(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    assert cli("load", "qwen3:4b", "--ctx", "4096").exit_code == 0
    before = sum(emu.load_count.values())
    result = cli("load", "qwen3:4b", "--ctx", "16384", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["outcome"] == "reloaded"
    assert sum(emu.load_count.values()) == before + 1
    assert emu.loaded()[0].context_length == 16384


def test_load_configured_model_uses_its_options_and_pin(cli: CliFn, emu, write_config) -> None:  # type: ignore[no-untyped-def]
    path = write_config(
        '[models.fast]\nname = "qwen3:4b"\ncontext_length = 8192\nalways_available = true\n'
        "options = { num_batch = 256 }\n"
    )
    result = cli("--config", str(path), "load", "fast", "--keep-alive", "5m")
    assert result.exit_code == 0, result.stderr
    body = posted(emu, "/api/generate")[-1]
    assert body["options"] == {"num_batch": 256, "num_ctx": 8192}
    assert body["keep_alive"] == -1  # a pin wins over a finite --keep-alive, with a warning
    assert "always_available" in result.stderr
    runner = emu.loaded()[0]
    assert runner.context_length == 8192 and runner.keep_alive_s is None


def test_unknown_model_is_exit_3_with_a_suggestion(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("load", "qwen3:4")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "error: model 'qwen3:4' not found on endpoint 'ollama'; did you mean 'qwen3:4b'?"
    )
    assert emu.loaded_names() == []


def test_server_down_is_exit_4(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    emu.stop()
    result = cli("load", "qwen3:4b")
    assert result.exit_code == 4
    assert f"cannot reach Ollama at {emu.url}" in result.stderr


def test_out_of_memory_is_exit_6(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    emu.faults.oom_on_load = {"qwen3:4b"}
    result = cli("load", "qwen3:4b")
    assert result.exit_code == 6
    last = result.stderr.splitlines()[-1]
    assert last.startswith("error: qwen3:4b does not fit in memory on Ollama at")
    assert "out-of-memory" in last and "--ctx" in last
    assert emu.loaded_names() == []


def test_server_dies_during_load_is_a_clear_error(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    emu.faults.die_on_load = {"qwen3:4b"}
    result = cli("load", "qwen3:4b")
    assert result.exit_code == 1
    assert "llama-server process has terminated" in result.stderr
    assert "Traceback" not in result.stderr


def test_busy_server_is_exit_1_and_says_retry(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    emu.faults.busy_503 = -1
    result = cli("load", "qwen3:4b")
    assert result.exit_code == 1
    assert "is busy" in result.stderr and "retry" in result.stderr


def test_client_deadline_gives_up_and_the_server_cancels_the_load(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    emu.faults.slow_load_s = 3.0
    started = time.monotonic()
    result = cli("load", "qwen3:4b", "--timeout", "0.5")
    assert result.exit_code == 1
    assert time.monotonic() - started < 3.0
    assert "gave up after 0.5s waiting for qwen3:4b to load" in result.stderr
    # Leaving cancels the load on the server (ollama.md §4.2): it never becomes resident.
    wait_for(lambda: emu.aborted_loads >= 1, what="the emulator to abort the load")
    assert emu.loaded_names() == []


def test_load_with_bad_keep_alive_is_usage_error(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("load", "qwen3:4b", "--keep-alive", "soon")
    assert result.exit_code == 2
    assert "--keep-alive" in result.stderr
    zero = cli("load", "qwen3:4b", "--keep-alive", "0")
    assert zero.exit_code == 2 and "use `unload`" in zero.stderr
    assert emu.loaded_names() == []


def shorten_read_timeout(monkeypatch: pytest.MonkeyPatch, endpoint: Endpoint, seconds: float) -> None:
    """Every copy of READ_TIMEOUT_S in the package (modules import the name) set to ``seconds``."""
    create_provider(endpoint).close()  # imports the provider module, so its copy is patched too
    modules = [
        module
        for name, module in list(sys.modules.items())
        if name.split(".")[0] == "sourceprep_models" and hasattr(module, "READ_TIMEOUT_S")
    ]
    assert len(modules) >= 2  # constants and at least the Ollama provider
    for module in modules:
        monkeypatch.setattr(module, "READ_TIMEOUT_S", seconds)


def test_load_does_not_time_out_on_a_slow_but_progressing_load(
    cli: CliFn, emu: OllamaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every other request gives up after READ_TIMEOUT_S (30 s) of silence. A preload must not: a
    # client that leaves cancels the load on the server (ollama.md §4.2), so only --timeout counts.
    # With that read timeout cut to 0.2 s, a load that takes 1 s must still be waited for.
    shorten_read_timeout(monkeypatch, Endpoint(name="ollama", kind="ollama", url=emu.url), 0.2)
    emu.faults.slow_load_s = 1.0
    started = time.monotonic()
    result = cli("load", "qwen3:4b", "--no-warm", "--timeout", "20")
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started >= 1.0
    assert emu.loaded_names() == ["qwen3:4b"]
    reported = re.search(r"qwen3:4b loaded on ollama in (\d+\.\d+)s", result.stderr)
    assert reported and float(reported.group(1)) >= 1.0, result.stderr


def test_models_loaded_by_another_client_show_as_evicted(cli: CliFn, ollama_emulator, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Two 20 MiB models cannot share a 32 MiB GPU: the server evicts the first (ollama.md §4.5).
    emulator = ollama_emulator(
        models=[EmulatedModel("a:7b", file_mib=20), EmulatedModel("b:7b", file_mib=20)], gpu_vram_mib=32
    )
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    httpx.post(f"{emulator.url}/api/generate", json={"model": "a:7b", "stream": False}, timeout=30)
    result = cli("load", "b:7b", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["evicted_by_server"] == ["a:7b"]
    assert "the server evicted a:7b" in result.stderr
    assert emulator.loaded_names() == ["b:7b"]


def test_cold_weights_are_warmed_into_the_page_cache_first(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    from sourceprep_models.warming import pagecache

    blob = emu.blob_path("qwen3:4b")
    if not pagecache.drop(blob):
        pytest.skip("this platform cannot make a file cold without root (no posix_fadvise)")
    assert pagecache.residency(blob).resident_bytes == 0
    result = cli("load", "qwen3:4b", "--json")
    assert result.exit_code == 0, result.stderr
    warm = result.json()["steps"][0]
    # The estimate reads the GGUF header first, and readahead pulls in some pages: "before" is < 100 %.
    match = re.search(r"(\d+)% → 100% resident", warm["detail"])
    assert warm["step"] == "warm" and match and int(match.group(1)) < 100, warm["detail"]
    assert pagecache.residency(blob).fraction == 1.0


def test_no_warm_skips_the_page_cache_step(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("load", "qwen3:4b", "--no-warm", "--json")
    assert result.exit_code == 0, result.stderr
    assert [step["step"] for step in result.json()["steps"]] == ["load", "verify"]


def test_measured_size_replaces_the_estimate_after_a_load(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    first = cli("load", "llama3.2:3b", "--ctx", "2048", "--dry-run", "--json").json()
    assert first["prediction_source"] == "estimate"
    assert cli("load", "llama3.2:3b", "--ctx", "2048").exit_code == 0
    assert cli("unload", "llama3.2:3b").exit_code == 0
    again = cli("load", "llama3.2:3b", "--ctx", "2048", "--dry-run", "--json").json()
    assert again["prediction_source"] == "measured"
    assert cli("load", "llama3.2:3b", "--ctx", "2048").exit_code == 0
    assert again["predicted_size"] == emu.loaded()[0].size


def test_a_case_variant_of_a_configured_name_loads_with_the_configured_options(
    cli: CliFn,
    emu,
    write_config,  # type: ignore[no-untyped-def]
) -> None:
    # Ollama matches each part of a name case-insensitively (ollama.md §5, types/model/name.go), so
    # `Qwen3:4B` is the configured qwen3:4b: its context and its pin must come along.
    path = write_config('[models.fast]\nname = "qwen3:4b"\ncontext_length = 8192\nalways_available = true\n')
    assert cli("--config", str(path), "load", "fast").exit_code == 0

    result = cli("--config", str(path), "load", "Qwen3:4B", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["outcome"] == "already-loaded"
    body = posted(emu, "/api/generate")[-1]
    assert body["options"] == {"num_ctx": 8192} and body["keep_alive"] == -1
    [runner] = emu.loaded()
    assert runner.context_length == 8192 and runner.keep_alive_s is None  # not reloaded, still pinned


def _proxy(
    emu: OllamaEmulator, override: Callable[[Request], tuple[int, object] | None]
) -> Callable[[Request], tuple[int, object]]:
    """A server in front of the emulator that answers like it except where ``override`` answers."""

    def handle(request: Request) -> tuple[int, object]:
        answer = override(request)
        if answer is not None:
            return answer
        reply = httpx.request(request.method, emu.url + request.path, json=request.body, timeout=30)
        return reply.status_code, reply.json() if reply.content else None

    return handle


def _streamed(*lines: dict[str, object]) -> str:
    import json

    return "".join(json.dumps(line) + "\n" for line in lines)


@pytest.mark.parametrize(
    ("error", "code", "says"),
    [
        ("an error was encountered while running the model: unexpected EOF", 1, "unexpected EOF"),
        ("model requires more system memory (9.1 GiB) than is available (2.0 GiB)", 6, "does not fit in memory"),
    ],
)
def test_an_error_line_in_a_streamed_load_reply_is_the_servers_own_error(  # type: ignore[no-untyped-def]
    cli: CliFn, emu, write_config, error: str, code: int, says: str
) -> None:
    from tests.loopback import serve

    def load_fails(request: Request) -> tuple[int, object] | None:
        if request.method == "POST" and request.path == "/api/generate":
            # Status 200 was sent with the first line; the error comes as a later line (ollama.md §2.5).
            return 200, _streamed({"model": "qwen3:4b", "response": "", "done": False}, {"error": error})
        return None

    with serve(_proxy(emu, load_fails)) as url:
        path = write_config(f'[endpoints.ollama]\nkind = "ollama"\nurl = "{url}"\n')
        result = cli("--config", str(path), "load", "qwen3:4b", "--no-warm")

    assert result.exit_code == code, result.stderr
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ") and says in line and error in line
    assert "not an Ollama server" not in result.stderr and "really an Ollama server" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("entry", ["qwen3:4b", 7, None, ["qwen3:4b"]])
def test_api_ps_entries_that_are_not_objects_are_a_one_line_server_error(  # type: ignore[no-untyped-def]
    cli: CliFn, emu, write_config, entry: object
) -> None:
    from tests.loopback import serve

    def odd_ps(request: Request) -> tuple[int, object] | None:
        return (200, {"models": [entry]}) if request.path == "/api/ps" else None

    with serve(_proxy(emu, odd_ps)) as url:
        path = write_config(f'[endpoints.ollama]\nkind = "ollama"\nurl = "{url}"\n')
        results = [cli("--config", str(path), *command) for command in (["load", "qwen3:4b"], ["status"])]

    for result in results:
        assert result.exit_code == 1, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "/api/ps did not answer like Ollama" in result.stderr
    assert emu.loaded_names() == []
