"""The entry point: a Ctrl-C that lands while the CLI is still being imported ends with exit 130 and
one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys

# Makes importing the CLI raise KeyboardInterrupt, as a Ctrl-C during start-up would, then runs the entry point.
INTERRUPT_DURING_IMPORT = """
import builtins, sys
real_import = builtins.__import__
def interrupting(name, *args, **kwargs):
    if name == "sourceprep_models.cli.app":
        raise KeyboardInterrupt
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupting
from sourceprep_models.__main__ import run
sys.argv = ["sourceprep-models", "status"]
run()
"""


def test_ctrl_c_during_start_up_exits_130_without_a_traceback() -> None:
    done = subprocess.run([sys.executable, "-c", INTERRUPT_DURING_IMPORT], capture_output=True, text=True, timeout=60)

    assert done.returncode == 130
    assert done.stderr == "interrupted\n"


def test_the_installed_command_and_python_m_are_one_entry_point() -> None:
    command = subprocess.run([sys.executable, "-m", "sourceprep_models", "--version"], capture_output=True, text=True)

    assert (command.returncode, command.stdout.split()[0]) == (0, "sourceprep-models")
