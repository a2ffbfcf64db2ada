"""The command as installed: entry points, help, version, completions, start-up cost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sourceprep_models import __version__
from tests.conftest import CliFn

REPO = Path(__file__).resolve().parent.parent
COMMAND = shutil.which("sourceprep-models", path=str(Path(sys.executable).parent)) or "sourceprep-models"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, env=full_env, timeout=60, check=False)


def test_console_script_and_module_entry_point_agree() -> None:
    script = run(COMMAND, "--version")
    module = run(sys.executable, "-m", "sourceprep_models", "--version")
    assert script.returncode == module.returncode == 0
    assert script.stdout == module.stdout == f"sourceprep-models {__version__}\n"


def test_help_lists_the_commands_and_exit_codes(cli: CliFn) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("status", "load", "unload"):
        assert command in result.stdout
    assert "3 model not found" in result.stdout and "4 server unreachable" in result.stdout


def test_unknown_option_is_usage_exit_2(cli: CliFn) -> None:
    result = cli("status", "--bogus")
    assert result.exit_code == 2
    assert "No such option" in result.stderr


def test_help_does_not_import_network_or_table_code() -> None:
    code = (
        "import sys\n"
        "from sourceprep_models.cli.app import app\n"
        "heavy = [m for m in ('httpx', 'rich.table', 'tomlkit', 'psutil') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_match_the_app(shell: str) -> None:
    result = run(COMMAND, env={"_SOURCEPREP_MODELS_COMPLETE": f"source_{shell}"})
    assert result.returncode == 0
    committed = (REPO / "completions" / f"sourceprep-models.{shell}").read_text()
    assert result.stdout == committed, "completions drifted: run scripts/gen-completions"


def test_bash_completion_completes_commands() -> None:
    result = run(
        COMMAND,
        env={"_SOURCEPREP_MODELS_COMPLETE": "complete_bash", "COMP_WORDS": "sourceprep-models unl", "COMP_CWORD": "1"},
    )
    assert result.returncode == 0
    assert result.stdout.split() == ["unload"]
