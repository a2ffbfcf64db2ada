"""kill -9 at the exact crash points of a config edit and of a pipeline stage, in a real process
(`python -m sourceprep_models`): the config is always the old file or the new one, a killed run is
resumable, and nothing the stage started keeps running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WriteConfig
from tests.emulator import EmulatedModel
from tests.test_pipeline import wait_gone

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and process groups are POSIX")

MODELS = [EmulatedModel("fast:1b", file_mib=4), EmulatedModel("coder:7b", file_mib=6)]

# Runs the CLI with os.replace / os.fsync wrapped so that the process SIGKILLs itself at one exact
# point of the n-th atomic write of a file whose name ends with the target.
INJECT = """
import os, signal, sys
point, target, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
real_replace, real_fsync = os.replace, os.fsync
seen = {"fsync": 0, "replace": 0}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def names_target(path):
    return os.path.basename(str(path)).lstrip(".").startswith(target)

def fsync(fd):
    if point == "before-fsync" and names_target(os.readlink(f"/proc/self/fd/{fd}")):
        seen["fsync"] += 1
        if seen["fsync"] == nth:
            die()
    real_fsync(fd)

def replace(src, dst, *args, **kwargs):
    hit = names_target(dst)
    if hit:
        seen["replace"] += 1
    if hit and seen["replace"] == nth and point == "before-replace":
        die()
    real_replace(src, dst, *args, **kwargs)
    if hit and seen["replace"] == nth and point == "after-replace":
        die()

os.replace, os.fsync = replace, fsync
sys.argv = ["sourceprep-models", *sys.argv[4:]]
from sourceprep_models.cli.app import main
main()
"""


@pytest.fixture
def emu(ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=None, max_loaded_models=8, unload_delay_s=0.02)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


@pytest.fixture
def started() -> Iterator[list[int]]:
    """PIDs a test started or learned of; each still running is killed at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sourceprep_models", *args], capture_output=True, text=True, timeout=120
    )


def injected(point: str, target: str, nth: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", INJECT, point, target, str(nth), *args], capture_output=True, text=True, timeout=120
    )


def pipeline_config(write_config: WriteConfig, tmp_path: Path) -> tuple[Path, Path]:
    """Two stages; the first, on its first run only, leaves a child in the background, writes the
    PIDs of both to a marker file and sleeps."""
    marker = tmp_path / "stage-started"
    first = (
        f"if [ -f {marker} ]; then exit 0; fi; sleep 60 > /dev/null 2>&1 & "
        f"echo $! $$ > {marker}.tmp && mv {marker}.tmp {marker} && exec sleep 60"
    )
    config = write_config(
        '[models.fast]\nname = "fast:1b"\n[models.coder]\nname = "coder:7b"\n'
        "[pipelines.p]\nstages = [\n"
        f'  {{ name = "one", model = "fast", command = "{first}" }},\n'
        '  { name = "two", model = "coder", command = "true" },\n]\n'
    )
    return config, marker


def test_kill_9_during_a_stage_command_leaves_nothing_running_and_resume_finishes(
    emu: Any, write_config: WriteConfig, tmp_path: Path, started: list[int]
) -> None:
    config, marker = pipeline_config(write_config, tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "sourceprep_models", "--config", str(config), "run-pipeline", "p"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    started.append(process.pid)
    try:
        end = time.monotonic() + 60
        while not marker.exists() and process.poll() is None and time.monotonic() < end:
            time.sleep(0.02)
        assert marker.exists(), "the stage never started"
        pids = [int(pid) for pid in marker.read_text().split()]
        started.extend(pids)
        process.kill()  # SIGKILL: no handler of ours runs
        process.wait()
    finally:
        assert process.stderr is not None
        process.stderr.close()

    for pid in pids:  # the command (the exec'd sleep) and the child it left in the background
        assert wait_gone(pid), f"process {pid} of the stage outlived the killed run"

    resumed = tool("--config", str(config), "run-pipeline", "p", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    rows = json.loads(resumed.stdout)["stages"]
    assert [(row["stage"], row["status"]) for row in rows] == [("one", "ok"), ("two", "ok")]


@pytest.mark.parametrize(("point", "nth"), [("after-replace", 1)])
def test_kill_9_at_a_run_state_write_leaves_a_run_that_resumes(
    emu: Any, write_config: WriteConfig, tmp_path: Path, point: str, nth: int
) -> None:
    """The 1st state write is the one before stage 1. A stage's finish is a journal line, not a rewrite
    of this file: the kills while it is recorded are in tests/test_pipeline_state.py."""
    config, marker = pipeline_config(write_config, tmp_path)
    marker.touch()  # the first stage just exits

    killed = injected(point, "p.json", nth, "--config", str(config), "run-pipeline", "p")
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    resumed = tool("--config", str(config), "run-pipeline", "p", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    rows = json.loads(resumed.stdout)["stages"]
    assert [row["stage"] for row in rows] == ["one", "two"] and all(row["status"] == "ok" for row in rows)
    # Stage 1 is skipped only when the kill came after its finish was recorded; otherwise it ran again.
    assert (rows[0]["action"] == "resumed") == ((point, nth) == ("after-replace", 2))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an fd through /proc")
@pytest.mark.parametrize("point", ["before-fsync", "before-replace", "after-replace"])
def test_kill_9_while_pin_writes_the_config_leaves_the_old_file_or_the_new_one(
    emu: Any, write_config: WriteConfig, point: str
) -> None:
    old = '# my models\n[models.fast]\nname = "fast:1b"\n\n[models.coder]\nname = "coder:7b"\n'
    config = write_config(old)

    killed = injected(point, "config.toml", 1, "--config", str(config), "pin", "fast")

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    text = config.read_text(encoding="utf-8")
    if point == "after-replace":
        parsed = tomllib.loads(text)
        assert parsed["models"]["fast"]["always_available"] is True
        assert text.startswith("# my models\n") and parsed["models"]["coder"] == {"name": "coder:7b"}
    else:
        assert text == old
    fixed = tool("--config", str(config), "pin", "fast")  # and the next edit works on what is there
    assert fixed.returncode == 0, fixed.stderr
    assert tomllib.loads(config.read_text(encoding="utf-8"))["models"]["fast"]["always_available"] is True


# Runs the CLI with subprocess.Popen wrapped so that the process SIGKILLs itself at the moment it would start
# a stage's kill-9 watcher: its stage command is started, its watcher is not. Every started PID goes to a file,
# so the last one is the stage command's.
KILL_BEFORE_WATCHER = """
import os, signal, subprocess, sys
pid_file = sys.argv[1]
real_popen = subprocess.Popen

class Popen(real_popen):
    def __init__(self, args, *rest, **kwargs):
        if isinstance(args, list) and "-I" in args and "-S" in args:  # the watcher's interpreter
            os.kill(os.getpid(), signal.SIGKILL)
        super().__init__(args, *rest, **kwargs)
        with open(pid_file, "a") as out:
            out.write(f"{self.pid}\\n")

subprocess.Popen = Popen
sys.argv = ["sourceprep-models", *sys.argv[2:]]
from sourceprep_models.cli.app import main
main()
"""


def test_kill_9_after_a_stage_command_starts_but_before_its_watcher_runs_nothing(
    emu: Any, write_config: WriteConfig, tmp_path: Path, started: list[int]
) -> None:
    ran = tmp_path / "stage-ran"
    config = write_config(
        '[models.fast]\nname = "fast:1b"\n'
        f'[pipelines.p]\nstages = [{{ name = "one", model = "fast", command = "touch {ran}" }}]\n'
    )
    pid_file = tmp_path / "pids"
    killed = subprocess.run(
        [sys.executable, "-c", KILL_BEFORE_WATCHER, str(pid_file), "--config", str(config), "run-pipeline", "p"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    command_pid = int(pid_file.read_text().split()[-1])
    started.append(command_pid)

    assert wait_gone(command_pid), "the stage's shell outlived the killed run"
    assert not ran.exists(), "the stage command ran with no watcher to end it"
    resumed = tool("--config", str(config), "run-pipeline", "p", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert [row["status"] for row in json.loads(resumed.stdout)["stages"]] == ["ok"]
    assert ran.exists()
