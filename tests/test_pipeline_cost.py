"""A long pipeline's cost per stage stays flat: the config is parsed again only when its file changed,
and the report counts every second of the run (wall clock minus work is the swap penalty)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliFn, WriteConfig
from tests.emulator import EmulatedModel

STAGES = 30


@pytest.fixture
def emu(ollama_emulator, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    emulator = ollama_emulator(models=[EmulatedModel("fast:1b", file_mib=2)], gpu_vram_mib=64)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def counting_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every parse of the config file (the expensive part of a re-read)."""
    from sourceprep_models.config import loader

    parses: list[int] = []
    original = loader.parse_config

    def counted(*args: Any, **kwargs: Any) -> Any:
        parses.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(loader, "parse_config", counted)
    return parses


def long_pipeline(write_config: WriteConfig, extra: str = "") -> str:
    return str(
        write_config(
            '[models.fast]\nname = "fast:1b"\n[pipelines.long]\n'
            f'stages = [{{ name = "step", model = "fast", repeat = {STAGES}, command = "true" }}]\n{extra}'
        )
    )


def test_an_unchanged_config_is_not_parsed_again_between_stages(
    cli: CliFn,
    emu,  # type: ignore[no-untyped-def]
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = long_pipeline(write_config)
    parses = counting_parses(monkeypatch)

    result = cli("--config", path, "run-pipeline", "long", "--json")

    assert result.exit_code == 0, result.stderr
    assert len(result.json()["stages"]) == STAGES
    assert len(parses) == 1  # once at start, never between the 30 stages


def test_an_edit_between_stages_is_still_seen(cli: CliFn, emu, write_config: WriteConfig) -> None:  # type: ignore[no-untyped-def]
    config = Path(long_pipeline(write_config))
    # The first stage's command breaks the config; the next boundary must notice and pause the run.
    text = config.read_text().replace('command = "true"', f"command = \"echo 'not = [toml' > '{config}'\"")
    config.write_text(text)

    result = cli("--config", str(config), "run-pipeline", "long")

    assert result.exit_code == 5, result.stderr
    assert "the config changed and is now invalid" in result.stderr


def test_the_report_counts_every_second_of_the_run(cli: CliFn, emu, write_config: WriteConfig) -> None:  # type: ignore[no-untyped-def]
    path = long_pipeline(write_config)

    totals = cli("--config", path, "run-pipeline", "long", "--json").json()["totals"]

    assert totals["wall_s"] >= totals["total_s"] >= totals["work_s"] > 0
    assert totals["swap_penalty_s"] == pytest.approx(totals["wall_s"] - totals["work_s"], abs=2e-3)


def test_a_stage_ends_when_its_command_does_not_when_the_watcher_has_started(
    cli: CliFn,
    emu,  # type: ignore[no-untyped-def]
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The kill -9 watcher of a stage's command is an interpreter that takes tens of milliseconds to start;
    a stage of `true` must not wait for it. Here a watcher that stays until the test releases it (or gives
    up after 20 s, leaving a mark) must not hold the run."""
    from sourceprep_models.pipeline import work

    released, gave_up = tmp_path / "released", tmp_path / "gave-up"
    slow = (
        "import os, sys, time\nsys.stdin.buffer.read()\nend = time.monotonic() + 20\n"
        f"while not os.path.exists({str(released)!r}):\n"
        f"    if time.monotonic() > end:\n        open({str(gave_up)!r}, 'w').close()\n        break\n"
        "    time.sleep(0.01)\n"
    )
    monkeypatch.setattr(work, "_WATCHER", slow)
    path = write_config(
        '[models.fast]\nname = "fast:1b"\n[pipelines.short]\n'
        'stages = [{ name = "step", model = "fast", repeat = 2, command = "true" }]\n'
    )
    try:
        result = cli("--config", str(path), "run-pipeline", "short", "--json")
        assert result.exit_code == 0, result.stderr
        assert [row["status"] for row in result.json()["stages"]] == ["ok", "ok"]
        assert not gave_up.exists()  # the run returned while both watchers were still waiting
    finally:
        released.touch()
        work._reap_all()
