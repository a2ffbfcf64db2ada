"""Help a user can find: `-h` as well as `--help`, and an example in every command's help."""

from __future__ import annotations

import pytest

from tests.conftest import CliFn

COMMANDS = ["status", "load", "unload", "pin", "run-pipeline", "doctor", "bench", "wait"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_short_help_with_an_example(cli: CliFn, command: str) -> None:
    result = cli(command, "-h")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"Usage: sourceprep-models {command} ")
    assert "Example: sourceprep-models " in result.stdout


def test_the_root_takes_h_too(cli: CliFn) -> None:
    result = cli("-h")

    assert result.exit_code == 0
    assert all(command in result.stdout for command in COMMANDS)
