"""`bench` against the Ollama emulator: cold/warm loads and first token, and the A/B alternation
before and after keeping both models resident, with the recommendation it ends on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sourceprep_models import hardware
from tests.conftest import CliFn
from tests.emulator import EmulatedModel
from tests.test_hardware import FakeSystem

MODELS = [EmulatedModel("embed:small", file_mib=3), EmulatedModel("rerank:small", file_mib=4)]


def emulator_with(ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch, max_loaded: int) -> Any:
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=None, max_loaded_models=max_loaded, unload_delay_s=0.01)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def test_bench_models_reports_cold_and_warm_loads_and_first_token(
    cli: CliFn, ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = emulator_with(ollama_emulator, monkeypatch, 3)

    result = cli("bench", "embed:small", "rerank:small", "--json")

    assert result.exit_code == 0, result.stderr
    rows = {row["model"]: row for row in result.json()["models"]}
    for row in rows.values():
        assert row["cold_load_s"] > 0 and row["warm_load_s"] > 0 and row["ttft_s"] is not None
        assert row["cache"] == "cold"  # the weights are local files: their cache was dropped first
    assert emu.load_count == {"embed:small": 2, "rerank:small": 2}  # one cold, one warm load each

    table = cli("bench", "embed:small")
    assert table.exit_code == 0
    assert table.stdout.split()[:6] == ["MODEL", "COLD", "LOAD", "WARM", "LOAD", "TTFT"]


def on_recorded_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine is a recorded Linux one (64 GiB, no GPU), so advice written for the OS is known."""
    probe = hardware.probe
    monkeypatch.setattr(hardware, "probe", lambda system=None: probe(FakeSystem()))


def test_alternation_on_a_server_that_keeps_one_model_recommends_the_fix(
    cli: CliFn, ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = emulator_with(ollama_emulator, monkeypatch, 1)  # OLLAMA_MAX_LOADED_MODELS=1: every call swaps
    on_recorded_linux(monkeypatch)

    result = cli("bench", "embed:small", "rerank:small", "--alternate", "4", "--json")

    assert result.exit_code == 0, result.stderr
    alternation = result.json()["alternation"]
    assert [call["model"] for call in alternation["calls"]] == ["embed:small", "rerank:small"] * 2
    assert emu.load_count["embed:small"] >= 2 and emu.load_count["rerank:small"] >= 2  # swapped call by call
    assert alternation["after_possible"] is False
    assert "evicted" in alternation["why_not"]
    assert "OLLAMA_MAX_LOADED_MODELS" in alternation["recommendation"]
    # doctor's own fix, written for the machine's OS (a systemd drop-in on Linux)
    assert alternation["recommendation"] == (
        "let Ollama keep both: OLLAMA_MAX_LOADED_MODELS=2 — run `sudo systemctl edit ollama`, add the two lines "
        '`[Service]` and `Environment="OLLAMA_MAX_LOADED_MODELS=2"`, then `sudo systemctl restart ollama` (started '
        "by hand instead? restart it as `OLLAMA_MAX_LOADED_MODELS=2 ollama serve`); then "
        "`sourceprep-models pin embed:small` and `sourceprep-models pin rerank:small`"
    )

    table = cli("bench", "embed:small", "rerank:small", "--alternate", "2")
    assert table.exit_code == 0
    assert table.stdout.split()[:4] == ["CALL", "MODEL", "BEFORE", "AFTER"]
    assert "recommendation: let Ollama keep both" in table.stdout


def test_alternation_where_both_already_stay_says_nothing_to_change(
    cli: CliFn, ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator_with(ollama_emulator, monkeypatch, 3)
    result = cli("bench", "embed:small", "rerank:small", "--alternate", "6", "--json")
    assert result.exit_code == 0, result.stderr
    alternation = result.json()["alternation"]
    assert alternation["after_possible"] is True
    assert all(call["after_s"] is not None for call in alternation["calls"])
    assert alternation["recommendation"].startswith("nothing to change")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("embed:small", "rerank:small", "embed:small", "--alternate", "4"), 2, "exactly two models"),
        (("embed:smal",), 3, "did you mean"),
    ],
)
def test_bench_usage_errors(
    cli: CliFn, ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], code: int, message: str
) -> None:
    emu = emulator_with(ollama_emulator, monkeypatch, 3)
    result = cli("bench", *args)
    assert result.exit_code == code and message in result.stderr
    assert emu.load_count == {}


def test_bench_on_a_cloud_endpoint_is_a_usage_error(cli: CliFn, write_config: Callable[[str], Path]) -> None:
    path = str(write_config('[endpoints.cloud]\nkind = "openai"\nurl = "http://127.0.0.1:9/v1"\n'))
    result = cli("--config", path, "bench", "gpt-4.1")
    assert result.exit_code == 2 and "cloud API: nothing is loaded there" in result.stderr


EMBEDDING_MODELS = [
    EmulatedModel("nomic-embed-text", file_mib=2, capabilities=["embedding"]),
    EmulatedModel("rerank:small", file_mib=4),
]
README_MODELS = '[models.embed]\nname = "nomic-embed-text"\n[models.rerank]\nname = "rerank:small"\n'


def test_the_readme_bench_of_an_embedding_model_goes_through_the_embedding_call(
    cli: CliFn, ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    emu = ollama_emulator(models=EMBEDDING_MODELS, gpu_vram_mib=None, max_loaded_models=3, unload_delay_s=0.01)
    monkeypatch.setenv("OLLAMA_HOST", emu.url)
    path = str(write_config(README_MODELS))

    result = cli("--config", path, "bench", "embed", "rerank", "--json")  # the README's example

    assert result.exit_code == 0, result.stderr
    rows = {row["model"]: row for row in result.json()["models"]}
    assert rows["nomic-embed-text"]["call"] == "embedding" and rows["rerank:small"]["call"] == "generate"
    assert rows["nomic-embed-text"]["ttft_s"] > 0 and rows["nomic-embed-text"]["tokens_per_s"] is None
    assert rows["nomic-embed-text"]["cold_load_s"] > 0 and rows["nomic-embed-text"]["warm_load_s"] > 0
    embedded = [r.body for r in emu.requests if r.path == "/api/embed" and r.body.get("input")]
    assert [body["model"] for body in embedded] == ["nomic-embed-text"]  # one real embedding, after the load
    generated = [r.body["model"] for r in emu.requests if r.path == "/api/generate" and r.body.get("prompt")]
    assert generated == ["rerank:small"]  # never a generate to the embedding model

    alternation = cli("--config", path, "bench", "embed", "rerank", "--alternate", "4", "--json")
    assert alternation.exit_code == 0, alternation.stderr
    calls = alternation.json()["alternation"]["calls"]
    assert [call["model"] for call in calls] == ["nomic-embed-text", "rerank:small"] * 2
    assert all(call["before_s"] > 0 and call["after_s"] is not None for call in calls)


def test_a_cold_measurement_drops_only_the_benchmarked_models_file(
    cli: CliFn, ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sourceprep_models.warming import pagecache

    emu = emulator_with(ollama_emulator, monkeypatch, 3)
    # The machine-wide switch, redirected to a file here: writing "3" to it would drop every file's cache.
    switch = tmp_path / "drop_caches"
    switch.write_text("0\n")
    monkeypatch.setattr(pagecache, "_DROP_CACHES", switch)
    dropped: list[Path] = []
    real_drop = pagecache.drop

    def recording_drop(path: Path) -> bool:
        dropped.append(Path(path))
        return real_drop(path)

    monkeypatch.setattr(pagecache, "drop", recording_drop)

    result = cli("bench", "embed:small", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["models"][0]["cache"] == "cold"
    assert dropped == [emu.blob_path("embed:small")]  # the benchmarked model's file, nothing else
    assert switch.read_text() == "0\n"  # the whole machine's page cache was never dropped


def test_the_advice_never_lowers_the_model_limit_the_server_runs_with(
    cli: CliFn, ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sourceprep_models.doctor.system import PsutilProcesses
    from sourceprep_models.providers.diagnostics import ServerProcess

    emu = emulator_with(ollama_emulator, monkeypatch, 1)  # the server keeps one model: every call swaps
    on_recorded_linux(monkeypatch)
    # The local `ollama serve` behind the endpoint, as the process table shows it: started with a limit of 3.
    serve = ServerProcess(
        4242,
        "ollama",
        ("ollama", "serve"),
        {"OLLAMA_HOST": f"127.0.0.1:{emu.port}", "OLLAMA_MAX_LOADED_MODELS": "3"},
    )
    monkeypatch.setattr(PsutilProcesses, "servers", lambda self, kind: [serve])

    result = cli("bench", "embed:small", "rerank:small", "--alternate", "4", "--json")

    assert result.exit_code == 0, result.stderr
    advice = result.json()["alternation"]["recommendation"]
    assert "OLLAMA_MAX_LOADED_MODELS=2" not in advice and "OLLAMA_MAX_LOADED_MODELS=1" not in advice
    assert advice.startswith("Ollama already keeps up to 3 models (OLLAMA_MAX_LOADED_MODELS=3, read from")
    assert "pid 4242" in advice and "sourceprep-models pin embed:small" in advice

    # The server's own limit read as 1: the advice raises it to 2.
    serve.environ["OLLAMA_MAX_LOADED_MODELS"] = "1"  # type: ignore[index]
    raised = cli("bench", "embed:small", "rerank:small", "--alternate", "2", "--json")
    assert "OLLAMA_MAX_LOADED_MODELS=2" in raised.json()["alternation"]["recommendation"]
