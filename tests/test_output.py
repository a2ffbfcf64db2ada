"""The output rules a script relies on: streams, verbosity, colour, Ctrl-C."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import CliFn
from tests.emulator import EmulatedModel
from tests.test_cli_basics import COMMAND


@pytest.fixture
def emu(ollama_emulator, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    emulator = ollama_emulator(models=[EmulatedModel("qwen3:4b")], gpu_vram_mib=64)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def test_quiet_keeps_stderr_empty_and_stdout_data(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("-q", "load", "qwen3:4b", "--json")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.json()["outcome"] == "loaded"


def test_verbose_adds_step_detail_on_stderr(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("-v", "load", "qwen3:4b")
    assert result.exit_code == 0
    assert any(line.startswith("load qwen3:4b: ") for line in result.stderr.splitlines())


def test_no_colour_or_escape_codes_in_a_pipe(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("load", "qwen3:4b")
    assert "\x1b[" not in result.stdout + result.stderr


def test_errors_still_show_with_quiet(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("-q", "load", "missing:1b")
    assert result.exit_code == 3 and result.stderr.startswith("error: model 'missing:1b' not found")


def test_ctrl_c_is_exit_130_with_a_hint(cli: CliFn, emu, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from sourceprep_models.providers.ollama import OllamaProvider

    def interrupted(self, request):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(OllamaProvider, "load", interrupted)
    result = cli("load", "qwen3:4b")
    assert result.exit_code == 130
    assert (
        result.stderr.splitlines()[-1] == "error: interrupted; see what is loaded now with `sourceprep-models status`"
    )


# -- a reader that goes away (`status | head -1`) ----------------------------------------------


def run_into_closed_pipe(*args: str, stderr_too: bool) -> subprocess.CompletedProcess[bytes]:
    """Run the installed command with stdout (and stderr) on a pipe whose reader has already gone,
    so every write meets EPIPE: what `| head -1` does once it has its line, without the race."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [COMMAND, *args],
            stdout=write,
            stderr=write if stderr_too else subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)


def test_status_into_a_closed_pipe_exits_0_quietly(emu) -> None:  # type: ignore[no-untyped-def]
    result = run_into_closed_pipe("status", "--no-hardware", stderr_too=False)
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr and b"Exception ignored" not in result.stderr
    assert b"BrokenPipe" not in result.stderr


def test_unload_all_into_a_closed_pipe_finishes_the_unload_and_exits_0(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    assert cli("load", "qwen3:4b").exit_code == 0
    assert emu.loaded_names() == ["qwen3:4b"]
    result = run_into_closed_pipe("unload", "--all", stderr_too=True)
    # The reader leaving is no failure of the work, and must not stop it halfway (ui/output.py).
    assert result.returncode == 0
    assert emu.loaded_names() == []


def test_load_json_into_a_closed_pipe_still_loads_and_exits_0(emu) -> None:  # type: ignore[no-untyped-def]
    result = run_into_closed_pipe("load", "qwen3:4b", "--json", stderr_too=False)
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr and b"Exception ignored" not in result.stderr
    assert emu.loaded_names() == ["qwen3:4b"]
