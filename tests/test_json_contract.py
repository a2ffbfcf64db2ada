"""Every command's `--json` document against the contract in docs/json.md: the key lists there are
parsed and each command's real output is checked against them, so the page cannot drift."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliFn, Run
from tests.emulator import EmulatedModel

DOCS = Path(__file__).resolve().parent.parent / "docs" / "json.md"
TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "number": (int, float),
    "bool": (bool,),
    "null": (type(None),),
    "object": (dict,),
    "list": (list,),
}
Spec = list[tuple[str, list[str], bool]]  # (path, types, optional)


def contract() -> dict[str, Spec]:
    """The ``keys`` blocks of docs/json.md by name: the block's label, else its heading."""
    text = DOCS.read_text(encoding="utf-8")
    specs: dict[str, Spec] = {}
    heading = ""
    for block in re.finditer(r"^### ([^\n]+)$|^```keys ?(\S*)\n(.*?)^```", text, re.M | re.S):
        if block.group(1):
            heading = block.group(1).removeprefix("shape: ").strip()
            continue
        spec: Spec = []
        for line in block.group(3).splitlines():
            path, kinds = line.split()
            spec.append((path, kinds.rstrip("?").split("|"), kinds.endswith("?")))
        specs[block.group(2) or heading] = spec
    return specs


def problems(value: Any, spec: Spec, specs: dict[str, Spec], where: str = "") -> list[str]:
    found = []
    for path, kinds, optional in spec:
        for label, present, item in _at(value, path, where):
            if not present:
                if not optional:
                    found.append(f"{label}: missing")
                continue
            if not any(_matches(item, kind, specs, label, found) for kind in kinds):
                found.append(f"{label}: {type(item).__name__} is not {'|'.join(kinds)}")
    return found


def _matches(item: Any, kind: str, specs: dict[str, Spec], label: str, found: list[str]) -> bool:
    if kind.startswith("@"):
        if not isinstance(item, dict):
            return False
        found.extend(problems(item, specs[kind[1:]], specs, label))
        return True
    return isinstance(item, TYPES[kind]) and not (kind in ("int", "number") and isinstance(item, bool))


def _at(value: Any, path: str, where: str) -> Iterator[tuple[str, bool, Any]]:
    """Every place ``path`` names in ``value``: (label, present, item)."""
    if path == ".":
        yield where or ".", True, value
        return
    current = [(where, value)]
    parts = path.split(".")
    for index, part in enumerate(parts):
        key, each = (part[:-2], True) if part.endswith("[]") else (part, False)
        following = []
        for label, node in current:
            if not isinstance(node, dict):
                continue  # null or wrong type: reported by the parent's own line
            here = f"{label}.{key}" if label else key
            if key not in node:
                if index == len(parts) - 1:
                    yield here, False, None
                continue
            if each:
                following += [(f"{here}[{n}]", item) for n, item in enumerate(node[key] or [])]
            else:
                following.append((here, node[key]))
        current = following
    for label, item in current:
        yield label, True, item


def check(result: Run, document: str, exit_code: int = 0) -> dict[str, Any]:
    """The run wrote one document of the kind ``document`` names, in the contract's shape."""
    assert result.exit_code == exit_code, result.stderr
    data = result.json()
    assert isinstance(data, dict) and next(iter(data)) == "schema_version" and data["schema_version"] == 1
    specs = contract()
    assert problems(data, specs[document], specs) == []
    assert unrounded_seconds(data) == []
    if exit_code:
        assert data["error"]["exit_code"] == exit_code
        assert data["error"]["message"] in result.stderr
    else:
        assert "error" not in data
    return data


def unrounded_seconds(value: Any, key: str = "") -> list[str]:
    if isinstance(value, dict):
        return [bad for name, item in value.items() for bad in unrounded_seconds(item, name)]
    if isinstance(value, list):
        return [bad for item in value for bad in unrounded_seconds(item, key)]
    if isinstance(value, float) and key.endswith("_s") and not key.endswith("_per_s") and value != round(value, 4):
        return [f"{key}={value}"]
    return []


MODELS = [
    EmulatedModel("fast:1b", file_mib=4),
    EmulatedModel("coder:7b", file_mib=6),
    EmulatedModel("embed:small", file_mib=2, capabilities=["embedding"]),
]

CONFIG = """
[models.fast]
name = "fast:1b"
[models.coder]
name = "coder:7b"

[pipelines.trace]
stages = [
  { name = "list", model = "fast", prompts = ["list the files"] },
  { name = "code", model = "coder", prompts = ["write it"] },
]

[pipelines.broken]
stages = [{ name = "fails", model = "fast", command = "exit 7" }]
"""


@pytest.fixture
def emu(ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=None, max_loaded_models=4, unload_delay_s=0.01)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


@pytest.fixture
def config(emu: Any, write_config: Callable[[str], Path]) -> str:
    return str(write_config(CONFIG))


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_the_contract_page_parses_and_names_every_document() -> None:
    specs = contract()
    documents = {"status", "load", "loads", "load --dry-run", "dry_run", "unload", "pin", "list", "repair"}
    documents |= {"run-pipeline --dry-run", "run-pipeline", "doctor", "bench", "alternate", "wait", "failure"}
    assert documents | {"error", "step", "resident", "load_report", "load_plan"} == set(specs)
    kinds = {kind.lstrip("@") for spec in specs.values() for _, types, _ in spec for kind in types}
    assert kinds <= set(TYPES) | set(specs)  # every type named is a type or a shape


def test_status_load_unload_and_pin_documents(cli: CliFn, config: str, emu: Any) -> None:
    def run(*args: str) -> Run:
        return cli("--config", config, *args, "--json")

    check(run("status"), "status")
    check(run("load", "fast", "--dry-run"), "load --dry-run")
    check(run("load", "fast", "coder", "--dry-run"), "dry_run")
    loaded = check(run("load", "fast"), "load")
    assert loaded["predicted_bytes"] == loaded["predicted_size"]  # the deprecated name says the same
    check(run("load", "fast", "coder"), "loads")
    status = check(run("status"), "status")
    assert {model["name"] for model in status["endpoints"][0]["models"]} == {"fast:1b", "coder:7b"}
    check(run("unload", "fast"), "unload")
    check(run("pin", "coder"), "pin")
    check(run("pin"), "list")
    check(run("pin", "--repair"), "repair")
    check(run("pin", "--remove", "coder"), "pin")
    assert emu.loaded_names() == ["coder:7b"]


def test_run_pipeline_doctor_bench_and_wait_documents(cli: CliFn, config: str, tmp_path: Path) -> None:
    def run(*args: str) -> Run:
        return cli("--config", config, *args, "--json")

    plan = check(run("run-pipeline", "trace", "--dry-run"), "run-pipeline --dry-run")
    assert [host["budget_bytes"] for host in plan["hosts"]] == list(plan["budgets"].values())
    report_file = tmp_path / "run.json"
    report = check(run("run-pipeline", "trace", "--report", str(report_file)), "run-pipeline")
    assert json.loads(report_file.read_text()) == report  # --report writes the same document
    check(run("doctor"), "doctor")
    check(run("bench", "fast"), "bench")
    check(run("bench", "fast", "coder", "--alternate", "2"), "alternate")
    check(run("wait"), "wait")


def test_a_failure_after_the_result_adds_the_error_to_that_document(
    cli: CliFn, config: str, write_config: Callable[[str], Path]
) -> None:
    failed = check(cli("--config", config, "run-pipeline", "broken", "--json"), "run-pipeline", exit_code=7)
    assert failed["stages"][0]["exit_code"] == 7 and failed["error"]["kind"] == "error"

    down = f'[endpoints.ollama]\nkind = "ollama"\nurl = "http://127.0.0.1:{unused_port()}"\n'
    tiny = str(write_config(CONFIG + down + '[memory]\nbudget = "1MiB"\nheadroom = "0"\n'))
    refused = check(cli("--config", tiny, "load", "fast", "--dry-run", "--json"), "failure", exit_code=4)
    assert refused["error"]["kind"] == "server_unreachable"
    status = check(cli("--config", tiny, "status", "--json"), "status", exit_code=4)
    assert status["endpoints"][0]["ok"] is False and status["error"]["message"] == status["endpoints"][0]["error"]
    doctor = check(cli("--config", tiny, "doctor", "--json"), "doctor", exit_code=1)
    # the summary line doctor prints on stderr (check() asserts the message is there)
    assert f"{doctor['summary']['problem']} problem" in doctor["error"]["message"]
    check(cli("--config", tiny, "wait", "--timeout", "0.2s", "--json"), "failure", exit_code=4)


def test_a_load_that_does_not_fit_is_its_plan_with_the_error(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path]
) -> None:
    tiny = str(write_config(CONFIG + '[memory]\nbudget = "1MiB"\nheadroom = "0"\n'))
    refused = check(cli("--config", tiny, "load", "fast", "--dry-run", "--json"), "load --dry-run", exit_code=6)
    assert refused["refused"] is True and refused["error"]["kind"] == "does_not_fit"
    check(cli("--config", tiny, "load", "fast", "--json"), "failure", exit_code=6)
    assert emu.loaded_names() == []


# Every command, failing before it has a result: the same exit code with and without --json.
FAILING = [
    (("status", "--endpoint", "nowhere"), 2),
    (("load", "nope:1b"), 3),
    (("load", "fast", "--dry-run", "--ctx", "5"), 2),
    (("unload", "nope:1b"), 3),
    (("pin", "nope:1b"), 3),
    (("pin", "--remove"), 2),
    (("run-pipeline", "nope"), 2),
    (("run-pipeline", "nope", "--dry-run"), 2),
    (("doctor", "--endpoint", "nowhere"), 2),
    (("bench", "nope:1b"), 3),
    (("wait", "--timeout", "0s"), 2),
]


@pytest.mark.parametrize(("args", "code"), FAILING, ids=lambda v: " ".join(v) if isinstance(v, tuple) else None)
def test_every_command_that_fails_writes_the_error_document(
    cli: CliFn, config: str, args: tuple[str, ...], code: int
) -> None:
    plain = cli("--config", config, *args)
    assert plain.exit_code == code and plain.stdout == ""
    result = cli("--config", config, *args, "--json")
    data = check(result, "failure", exit_code=code)
    assert set(data) == {"schema_version", "error"}
    assert result.stderr == plain.stderr  # stderr is unchanged: its one error line is the document's message
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {data['error']['message']}"
    ]


@pytest.mark.parametrize("command", ["status", "load fast", "unload fast", "pin fast", "run-pipeline trace", "wait"])
def test_a_broken_config_with_json_is_an_error_document(cli: CliFn, tmp_path: Path, command: str) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("models = [\n", encoding="utf-8")
    data = check(cli(*command.split(), "--json", "--config", str(broken)), "failure", exit_code=5)
    assert data["error"]["kind"] == "bad_config" and str(broken) in data["error"]["message"]
