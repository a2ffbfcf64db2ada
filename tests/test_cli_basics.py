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


# Every command with the arguments it needs; the global options go after them.
COMMAND_LINES = [
    ("status",),
    ("load", "qwen3:4b"),
    ("unload", "qwen3:4b"),
    ("pin", "qwen3:4b"),
    ("run-pipeline", "trace"),
    ("doctor",),
    ("bench", "qwen3:4b"),
    ("wait",),
]


@pytest.mark.parametrize("command", COMMAND_LINES, ids=lambda line: line[0])
def test_global_config_option_after_the_command_is_used(cli: CliFn, tmp_path: Path, command: tuple[str, ...]) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("memory = [unclosed\n", encoding="utf-8")

    result = cli(*command, "--config", str(broken), "--no-color")

    # The file named after the command is the one read: its syntax error is reported, not "No such option".
    assert "No such option" not in result.stderr
    if command[0] == "doctor":  # doctor reports a broken config as a failed check
        assert result.exit_code == 1
        assert f"{broken}:1: invalid TOML" in result.stdout
    else:
        assert result.exit_code == 5
        assert result.stderr.startswith(f"error: {broken}:1: invalid TOML")
        assert len(result.stderr.splitlines()) == 1


def test_global_options_after_the_command_mix_with_its_own(cli: CliFn, ollama_emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.emulator import EmulatedModel

    emu = ollama_emulator(models=[EmulatedModel("qwen3:4b", file_mib=4)])
    config = tmp_path / "models.toml"
    config.write_text(f'[endpoints.box]\nkind = "ollama"\nurl = "{emu.url}"\n', encoding="utf-8")

    result = cli("load", "qwen3:4b", "-q", "--json", f"--config={config}", "-e", "box", "-vv")

    assert result.exit_code == 0, result.stderr
    assert result.json()["endpoint"] == "box"
    assert emu.loaded_names() == ["qwen3:4b"]
    # A value of the command's own option that looks like a global option stays the command's.
    usage = cli("load", "qwen3:4b", "--endpoint", "-q", f"--config={config}")
    assert usage.exit_code == 2 and "no endpoint named '-q'" in usage.stderr
