"""The run state costs what a stage adds: a header written when a run starts and stops, and one journal
line per finished stage. A kill at any point of a stage's record, even one that tears its line,
leaves a run that ``--resume`` finishes; and the state written grows with the stages, not with
their square."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WriteConfig
from tests.emulator import EmulatedModel

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and /proc/self/fd are POSIX")

# Runs the CLI with the OS calls that write files wrapped: it SIGKILLs itself at one point of the n-th
# write(2) to a file whose name starts with the target ("torn": after writing half of it), or right after
# the first file of that name is renamed into place ("after-replace"), and it
# tallies, per file name, the bytes written with write(2) and the size of every file renamed into place
# with os.replace (an atomic rewrite), printing the tally to the file named by the last argument.
HARNESS = """
import atexit, json, os, signal, sys
point, target, nth, tally_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
real_write, real_replace = os.write, os.replace
seen = [0]
tally = {}

def name_of(fd):
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))

def count(name, size):
    entry = tally.setdefault(name, [0, 0])
    entry[0] += 1
    entry[1] += size

def write(fd, data):
    name = name_of(fd)
    if name.startswith(target):
        seen[0] += 1
        if seen[0] == nth and point == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        if seen[0] == nth and point == "torn":
            real_write(fd, bytes(data)[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    written = real_write(fd, data)
    count(name, written)
    if name.startswith(target) and seen[0] == nth and point == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return written

def replace(src, dst, *args, **kwargs):
    count(os.path.basename(str(dst)), os.path.getsize(src))
    real_replace(src, dst, *args, **kwargs)
    if point == "after-replace" and os.path.basename(str(dst)).startswith(target):
        os.kill(os.getpid(), signal.SIGKILL)

os.write, os.replace = write, replace
atexit.register(lambda: open(tally_path, "w").write(json.dumps(tally)))
sys.argv = ["sourceprep-models", *sys.argv[5:]]
from sourceprep_models.cli.app import main
main()
"""


@pytest.fixture
def emu(ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    models = [EmulatedModel("fast:1b", file_mib=2), EmulatedModel("coder:7b", file_mib=2)]
    emulator = ollama_emulator(models=models, gpu_vram_mib=None, max_loaded_models=8)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def config_of(write_config: WriteConfig, stages: int) -> Path:
    """``stages`` written-out stages of ``true``, alternating two models."""
    lines = [
        f'  {{ name = "s{index}", model = "{("fast", "coder")[index % 2]}", command = "true" }},'
        for index in range(stages)
    ]
    return write_config(
        '[models.fast]\nname = "fast:1b"\n[models.coder]\nname = "coder:7b"\n[pipelines.p]\nstages = [\n'
        + "\n".join(lines)
        + "\n]\n"
    )


def harnessed(tmp_path: Path, point: str, target: str, nth: int, *args: str) -> tuple[int, dict[str, list[int]]]:
    tally = tmp_path / "tally.json"
    tally.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, point, target, str(nth), str(tally), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, json.loads(tally.read_text()) if tally.exists() else {}


def resume(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sourceprep_models", "--config", str(config), "run-pipeline", "p", "--resume", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )


# The journal's 1st write starts it; its 2nd records stage s0 as finished, its 3rd s1.
@pytest.mark.parametrize(("point", "resumed"), [("before", []), ("torn", []), ("after", ["s0"])])
def test_a_kill_while_a_stage_is_recorded_leaves_a_run_that_resumes(
    emu: Any, write_config: WriteConfig, tmp_path: Path, point: str, resumed: list[str]
) -> None:
    config = config_of(write_config, 3)

    code, _ = harnessed(tmp_path, point, "p.stages", 2, "--config", str(config), "run-pipeline", "p")
    assert code == -signal.SIGKILL

    again = resume(config)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    rows = json.loads(again.stdout)["stages"]
    assert [row["stage"] for row in rows] == ["s0", "s1", "s2"]
    assert all(row["status"] == "ok" for row in rows)
    # Only a stage whose line landed whole counts as finished; a torn line is run again, never trusted.
    assert [row["stage"] for row in rows if row["action"] == "resumed"] == resumed
    # And the resumed run can itself be resumed no further: it finished.
    final = resume(config)
    assert final.returncode == 2 and "finished" in final.stderr


def test_a_resume_after_a_torn_line_records_the_stages_it_runs(
    emu: Any, write_config: WriteConfig, tmp_path: Path
) -> None:
    """Stages finished after a torn line are not lost behind it: a second kill, then a resume, keeps them."""
    config = config_of(write_config, 4)
    args = ("--config", str(config), "run-pipeline", "p", "--resume")

    assert harnessed(tmp_path, "torn", "p.stages", 3, *args[:-1])[0] == -signal.SIGKILL  # s0 whole, s1 torn
    assert harnessed(tmp_path, "before", "p.stages", 4, *args)[0] == -signal.SIGKILL  # s1, s2 recorded; s3 not

    rows = json.loads(resume(config).stdout)["stages"]
    assert [(row["stage"], row["action"] == "resumed") for row in rows] == [
        ("s0", True),
        ("s1", True),
        ("s2", True),
        ("s3", False),
    ]


def test_the_state_written_per_stage_does_not_grow_with_the_run(
    emu: Any, write_config: WriteConfig, tmp_path: Path
) -> None:
    written: dict[int, int] = {}
    header_writes: dict[int, int] = {}
    for stages in (10, 40):
        config = config_of(write_config, stages)
        code, tally = harnessed(tmp_path, "none", "-", 0, "--config", str(config), "run-pipeline", "p")
        assert code == 0
        state = {name: entry for name, entry in tally.items() if name.startswith("p.")}
        written[stages] = sum(size for _, size in state.values())
        header_writes[stages] = state["p.json"][0]

    # A header when the run starts and one when it ends, whatever its length.
    assert header_writes == {10: 2, 40: 2}
    # Linear in the stages: four times the stages write at most about four times the bytes (the whole
    # state rewritten after every stage wrote about sixteen times as much).
    assert written[40] <= 4.5 * written[10]


def test_a_new_run_killed_before_its_journal_starts_never_inherits_the_last_runs_stages(
    emu: Any, write_config: WriteConfig, tmp_path: Path
) -> None:
    """A run started afresh writes its header, then starts its journal: killed in between, the last run's
    journal is still on disk, and --resume must not count that run's stages as this one's."""
    config = config_of(write_config, 3)
    broken = config.read_text().replace(
        'name = "s1", model = "coder", command = "true"', 'name = "s1", model = "coder", command = "exit 3"'
    )
    config.write_text(broken)
    first = subprocess.run(
        [sys.executable, "-m", "sourceprep_models", "--config", str(config), "run-pipeline", "p"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 3  # s0 finished and journaled, s1 failed
    config.write_text(broken.replace("exit 3", "true"))

    code, _ = harnessed(tmp_path, "after-replace", "p.json", 1, "--config", str(config), "run-pipeline", "p")
    assert code == -signal.SIGKILL

    rows = json.loads(resume(config).stdout)["stages"]
    assert [(row["stage"], row["action"] == "resumed") for row in rows] == [
        ("s0", False),
        ("s1", False),
        ("s2", False),
    ]
