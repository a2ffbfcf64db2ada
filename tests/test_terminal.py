"""Tables as a person sees them: through a pseudo-terminal at 60, 100 and 160 columns, and in a pipe.
Figures, names and statuses are never cut ("…"); prose wraps; a narrow pane gets one block per row."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios

import pytest

from tests.conftest import CliFn, WriteConfig
from tests.emulator import EmulatedModel

# The README's trace pipeline, with its model names (ordinary lengths).
MODELS = [
    EmulatedModel("qwen3:4b", file_mib=4),
    EmulatedModel("qwen3:14b", file_mib=6),
    EmulatedModel("qwen3-coder:30b", file_mib=8),
]
CONFIG = """
[models.fast]
name = "qwen3:4b"
[models.reason]
name = "qwen3:14b"
[models.coder]
name = "qwen3-coder:30b"
[memory]
budget = "{budget}"
headroom = "0"

[pipelines.trace]
stages = [
  {{ name = "catalogue", model = "fast", command = "true" }},
  {{ name = "group", model = "reason", command = "true" }},
  {{ name = "catalogue-tests", model = "fast", command = "true" }},
  {{ name = "code", model = "coder", command = "true" }},
  {{ name = "summary", model = "fast", command = "true" }},
]
"""


def on_terminal(argv: list[str], columns: int, env: dict[str, str]) -> str:
    """Run the command with stdout on a pseudo-terminal ``columns`` wide; return what it showed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    terminal_env = {key: value for key, value in env.items() if key not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(argv, stdout=follower, stderr=subprocess.DEVNULL, env=terminal_env)
    os.close(follower)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 60)
            if not ready:
                raise AssertionError(f"no output from {argv} within 60 s")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the command is done
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        process.wait(timeout=60)
        os.close(leader)
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.fixture
def setup(cli: CliFn, ollama_emulator, write_config: WriteConfig):  # type: ignore[no-untyped-def]
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=None, max_loaded_models=4)
    env = {**os.environ, "OLLAMA_HOST": emulator.url}
    path = str(write_config(CONFIG.format(budget="1GiB")))
    sizes = cli("--config", path, "run-pipeline", "trace", "--dry-run", "--json", env={"OLLAMA_HOST": emulator.url})
    assert sizes.exit_code == 0, sizes.stderr
    # Two of the three fit: the plan evicts, so every column of the dry run has something to show.
    predicted = sorted({row["predicted_bytes"] for row in sizes.json()["stages"]})
    tight = write_config(CONFIG.format(budget=predicted[-2] + 1024))
    return [sys.executable, "-m", "sourceprep_models", "--config", str(tight)], env


@pytest.mark.parametrize("columns", [100, 160])
def test_the_dry_run_table_keeps_every_figure_whole(setup, columns: int) -> None:  # type: ignore[no-untyped-def]
    base, env = setup
    shown = on_terminal([*base, "run-pipeline", "trace", "--dry-run"], columns, env)

    assert "…" not in shown
    header = next(line for line in shown.splitlines() if line.startswith("STAGE"))
    # One server: no ENDPOINT column (the JSON has it).
    assert header.split() == ["STAGE", "MODEL", "ACTION", "PREFETCH", "RESIDENT", "PREDICTED"]
    code = next(line for line in shown.splitlines() if line.startswith("code "))
    assert code.split()[:4] == ["code", "qwen3-coder:30b", "load,", "evict"]
    assert all(len(line) <= columns for line in shown.splitlines())
    assert "catalogue-tests" in shown and "qwen3-coder:30b" in shown


def test_a_narrow_terminal_gets_one_block_per_row(setup) -> None:  # type: ignore[no-untyped-def]
    base, env = setup
    shown = on_terminal([*base, "run-pipeline", "trace", "--dry-run"], 60, env)

    assert "…" not in shown
    assert all(len(line) <= 60 for line in shown.splitlines())
    titles = [line for line in shown.splitlines() if line.startswith("STAGE ")]
    assert titles == ["STAGE catalogue", "STAGE group", "STAGE catalogue-tests", "STAGE code", "STAGE summary"]
    assert "  MODEL      qwen3-coder:30b" in shown
    assert "  ACTION     load, evict qwen3:14b, qwen3:4b" in shown


def test_a_pipe_gets_one_line_per_row_whatever_the_width(setup) -> None:  # type: ignore[no-untyped-def]
    base, env = setup
    piped = subprocess.run(
        [*base, "run-pipeline", "trace", "--dry-run"], env={**env, "COLUMNS": "60"}, capture_output=True, text=True
    )

    lines = piped.stdout.splitlines()
    assert piped.returncode == 0, piped.stderr
    assert lines[0].split()[0] == "STAGE" and len(lines) == 6  # the header and one line per stage
    assert "…" not in piped.stdout


def test_doctor_never_loses_its_status_column(setup) -> None:  # type: ignore[no-untyped-def]
    base, env = setup
    for columns in (60, 100):
        shown = on_terminal([*base, "doctor"], columns, env)
        assert "…" not in shown
        statuses = {line.split()[0] for line in shown.splitlines() if line.split()}
        assert statuses & {"ok", "warning", "problem", "STATUS"}, shown


def test_the_flex_table_stacks_only_when_the_figures_would_not_fit() -> None:
    from rich.console import Console

    from sourceprep_models.ui.render.flex import FlexTable

    table = FlexTable(("STAGE", "SIZE", "NOTE"))
    table.add_row("a-very-long-stage-name", "123.4 MB", "a note that may wrap over several lines if it must")
    wide, narrow = Console(width=60, record=True), Console(width=40, record=True)
    wide.print(table)
    narrow.print(table)

    assert wide.export_text().splitlines()[1].startswith("a-very-long-stage-name  123.4 MB")
    stacked = [line.rstrip() for line in narrow.export_text().splitlines()]
    assert stacked[:2] == ["STAGE a-very-long-stage-name", "  SIZE  123.4 MB"]
    assert stacked[2].startswith("  NOTE  a note that may wrap")
