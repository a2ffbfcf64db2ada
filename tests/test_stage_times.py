"""Each stage row says when its work started and ended, and the totals say how long the stages took from
the first one's start to the last one's end (``stages_wall_s``): a figure without the planning and the first
model's load, which the run's wall clock includes. Checked against timestamps the stage commands write."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.conftest import CliFn, WriteConfig
from tests.emulator import EmulatedModel

# Generous: the tool's clock starts before the shell and `date` do, and a loaded machine may delay either.
TOLERANCE_S = 0.5


@pytest.fixture
def emu(ollama_emulator, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    emulator = ollama_emulator(
        models=[EmulatedModel("fast:1b", file_mib=2), EmulatedModel("other:1b", file_mib=2)], gpu_vram_mib=64
    )
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def stamped(tmp_path: Path, extra: str = "") -> tuple[str, Path]:
    """A stage command that writes "<stage> start <epoch s>" and "<stage> end <epoch s>" lines around ``extra``,
    and the file it writes them to."""
    stamps, script = tmp_path / "stamps", tmp_path / "stage.sh"
    write = 'echo "$SOURCEPREP_STAGE {} $(date +%s.%N)" >> "$STAMPS"\n'
    script.write_text(f"STAMPS={shlex.quote(str(stamps))}\n{write.format('start')}{extra}{write.format('end')}")
    return f"sh {shlex.quote(str(script))}", stamps


def read_stamps(stamps: Path) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for line in stamps.read_text().splitlines():
        stage, edge, value = line.split()
        found.setdefault(stage, {})[edge] = float(value)
    return found


def pipeline(write_config: WriteConfig, command: str) -> Path:
    command = json.dumps(command)[1:-1]  # inside a TOML basic string
    return write_config(
        '[models.fast]\nname = "fast:1b"\n[models.other]\nname = "other:1b"\n[pipelines.timed]\nstages = [\n'
        f'  {{ name = "a", model = "fast", command = "{command}" }},\n'
        f'  {{ name = "b", model = "other", command = "{command}" }},\n'
        f'  {{ name = "c", model = "fast", command = "{command}" }},\n]\n'
    )


def test_each_stage_reports_when_its_work_ran_as_its_command_saw_it(
    cli: CliFn,
    emu,  # type: ignore[no-untyped-def]
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    command, stamps = stamped(tmp_path)
    path = pipeline(write_config, command)

    result = cli("--config", str(path), "run-pipeline", "timed", "--json")

    assert result.exit_code == 0, result.stderr
    report = result.json()
    rows = {row["stage"]: row for row in report["stages"]}
    seen = read_stamps(stamps)
    assert list(rows) == list(seen) == ["a", "b", "c"]
    # Ordered: each stage's work starts after the previous one ended, and ends after it starts.
    edges = [edge for row in rows.values() for edge in (row["work_started_s"], row["work_ended_s"])]
    assert edges == sorted(edges) and edges[0] >= 0
    assert edges[-1] <= report["totals"]["wall_s"]
    # The same intervals as the commands' own clock, measured from the first stage's start.
    for stage, row in rows.items():
        for edge, key in (("start", "work_started_s"), ("end", "work_ended_s")):
            commands = seen[stage][edge] - seen["a"]["start"]
            assert row[key] - rows["a"]["work_started_s"] == pytest.approx(commands, abs=TOLERANCE_S), (stage, edge)
    totals = report["totals"]
    assert totals["stages_wall_s"] == pytest.approx(seen["c"]["end"] - seen["a"]["start"], abs=TOLERANCE_S)
    assert totals["stages_wall_s"] == pytest.approx(edges[-1] - edges[0], abs=1e-3)
    assert totals["work_s"] <= totals["stages_wall_s"] + 1e-3 <= totals["wall_s"] + 2e-3


def test_a_resumed_run_times_only_the_stages_it_ran_itself(
    cli: CliFn,
    emu,  # type: ignore[no-untyped-def]
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    marker = shlex.quote(str(tmp_path / "failed-once"))
    # Stage b fails the first time (after writing its start), so the run stops there and --resume runs b and c.
    fails_once = f'test "$SOURCEPREP_STAGE" != b || test -e {marker} || {{ touch {marker}; exit 3; }}\n'
    command, stamps = stamped(tmp_path, fails_once)
    path = pipeline(write_config, command)

    first = cli("--config", str(path), "run-pipeline", "timed", "--json")
    assert first.exit_code == 3, first.stderr
    stamps.write_text("")
    result = cli("--config", str(path), "run-pipeline", "timed", "--resume", "--json")

    assert result.exit_code == 0, result.stderr
    rows = {row["stage"]: row for row in result.json()["stages"]}
    assert rows["a"]["action"] == "resumed"
    assert rows["a"]["work_started_s"] is None and rows["a"]["work_ended_s"] is None
    seen = read_stamps(stamps)
    assert list(seen) == ["b", "c"]
    assert rows["b"]["work_started_s"] <= rows["b"]["work_ended_s"] <= rows["c"]["work_started_s"]
    assert result.json()["totals"]["stages_wall_s"] == pytest.approx(
        seen["c"]["end"] - seen["b"]["start"], abs=TOLERANCE_S
    )
