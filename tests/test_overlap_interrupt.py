"""Ctrl-C while the next stage's model loads in the background, in a real process against the Ollama
emulator: the load is unloaded (not left half-done or cancelled by a dropped connection), exit 130,
and `--resume` finishes the run. The test sends SIGINT only once it has seen the load in progress."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliFn
from tests.emulator import EmulatedModel

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGINT and FIFOs are POSIX")

MODELS = [EmulatedModel("fast:1b", file_mib=4), EmulatedModel("reason:14b", file_mib=10)]
BOUND_S = 60.0  # an upper bound for what the test waits to observe, never a pass condition


@pytest.fixture
def emu(ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=None, max_loaded_models=8, unload_delay_s=0.02)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_ctrl_c_during_a_background_load_unloads_it_and_resume_finishes(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path], tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    fifo, once = tmp_path / "gate", tmp_path / "blocked-once"
    os.mkfifo(fifo)
    path = str(
        write_config(
            '[models.fast]\nname = "fast:1b"\n[models.reason]\nname = "reason:14b"\n'
            '[memory]\nbudget = "100GiB"\nheadroom = "0"\n'
            "[pipelines.p]\nstages = [\n"
            f'  {{ name = "one", model = "fast", command = "test -f {once} || {{ touch {once}; cat {fifo}; }}" }},\n'
            '  { name = "two", model = "reason", command = "true" },\n]\n'
        )
    )
    assert cli("--config", path, "load", "fast:1b", "--no-warm").exit_code == 0  # stage one is a hit
    emu.faults.slow_load_s = 3  # reason's load is still running when the test interrupts the run

    process = subprocess.Popen(
        [sys.executable, "-m", "sourceprep_models", "--config", path, "run-pipeline", "p"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(process)
    assert until(lambda: once.exists() and emu.loading_name() == "reason:14b"), "no background load in stage one"
    assert process.poll() is None  # still in stage one's work: the load runs beside it
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=BOUND_S)

    assert process.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and "--resume" in last
    assert "the background load of reason:14b was stopped (unloaded)" in last
    assert "Traceback" not in err
    assert until(lambda: emu.loaded_names() == ["fast:1b"]), emu.loaded_names()
    assert emu.aborted_loads == 0  # unloaded by request, never cancelled by dropping its connection

    emu.faults.slow_load_s = 0
    resumed = cli("--config", path, "run-pipeline", "p", "--resume", "--json")

    assert resumed.exit_code == 0, resumed.stderr
    assert [row["status"] for row in resumed.json()["stages"]] == ["ok", "ok"]
    assert sorted(emu.loaded_names()) == ["fast:1b", "reason:14b"]


def test_a_background_load_past_its_deadline_stops_the_stage_that_needed_it(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path]
) -> None:
    path = str(
        write_config(
            f'[endpoints.ollama]\nkind = "ollama"\nurl = "{emu.url}"\nload_timeout = 1\n'
            '[models.fast]\nname = "fast:1b"\n[models.reason]\nname = "reason:14b"\n'
            '[memory]\nbudget = "100GiB"\nheadroom = "0"\n'
            "[pipelines.p]\nstages = [\n"
            '  { name = "one", model = "fast", command = "true" },\n'
            '  { name = "two", model = "reason", command = "true" },\n]\n'
        )
    )
    assert cli("--config", path, "load", "fast:1b", "--no-warm").exit_code == 0
    emu.faults.slow_load_s = 30  # far past the endpoint's 1 s load deadline

    stopped = cli("--config", path, "run-pipeline", "p", "--json")

    assert stopped.exit_code == 1, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage 'two':") and "reason:14b" in last and "--resume" in last
    assert "Traceback" not in stopped.stderr
    assert [(row["stage"], row["status"]) for row in stopped.json()["stages"]] == [("one", "ok")]
    assert until(lambda: emu.loaded_names() == ["fast:1b"]), emu.loaded_names()

    emu.faults.slow_load_s = 0
    resumed = cli("--config", path, "run-pipeline", "p", "--resume", "--json")

    assert resumed.exit_code == 0, resumed.stderr
    assert [row["action"] for row in resumed.json()["stages"]] == ["resumed", "load"]
