"""Option declarations shared by several commands, so their names and help never drift."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sourceprep_models.cli import complete
from sourceprep_models.constants import ENV_TIMEOUT
from sourceprep_models.errors import UsageError
from sourceprep_models.ui.output import printable

if TYPE_CHECKING:
    from sourceprep_models.units import KeepAlive

EndpointOption = complete.EndpointOption
JsonOption = Annotated[bool, typer.Option("--json", help="Write the result as JSON on stdout.")]
TimeoutOption = Annotated[
    str | None,
    typer.Option(
        "--timeout",
        envvar=ENV_TIMEOUT,
        help="Overall deadline, e.g. 90s or 10m (default: the endpoint's, else 10m for loads, 2m for unloads).",
        show_default=False,
    ),
]
SingleModelOption = Annotated[
    bool,
    typer.Option(
        "--single-model",
        envvar="SOURCEPREP_MODELS_SINGLE_MODEL",
        help="Evict every non-pinned model first (also memory.single_model in the config).",
    ),
]
WarmOption = Annotated[
    bool,
    typer.Option("--warm/--no-warm", help="Read the weights into the page cache before a cold load."),
]


def parse_keep_alive(value: str | None) -> KeepAlive | None:
    from sourceprep_models.units import DurationOutOfRange, parse_duration
    from sourceprep_models.units import parse_keep_alive as parse

    if value is None:
        return None
    try:
        alive = parse(value)
    except DurationOutOfRange as exc:
        raise UsageError(f"--keep-alive: {exc}; use --keep-alive forever to keep it loaded") from None
    except ValueError as exc:
        raise UsageError(f"--keep-alive: {exc}") from None
    if alive.seconds == 0:
        below = f" ({value} is below 1 ns, which Ollama counts as 0)" if parse_duration(value) > 0 else ""
        raise UsageError(
            f"--keep-alive 0 would unload the model as soon as it loads{below}; use `unload` instead, or give a "
            "keep-alive such as 30m"
        )
    return alive


def check_model_name(name: str) -> str:
    """A model name from the command line: never empty (every server refuses one, as a server error)."""
    if not name.strip():
        raise UsageError("the model name is empty; name a model from the config or from `sourceprep-models status`")
    return name


def parse_timeout(value: str | None) -> float | None:
    from sourceprep_models.units import parse_duration

    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    if seconds <= 0:
        raise UsageError("--timeout must be positive (at most 10 years), e.g. 90s or 10m")
    return seconds


def env_count(name: str) -> int:
    """A verbosity count from the environment: empty is 0; anything but ASCII digits is a usage error."""
    import os
    import re

    value = os.environ.get(name, "").strip()
    if not value:
        return 0
    # str.isdigit() also accepts "²" and other digits int() refuses; 3 digits is more than enough.
    if not re.fullmatch(r"[0-9]{1,3}", value):
        raise UsageError(f"{name}={quoted(value)} is not a count; set it to a whole number such as 1 or 2")
    return int(value)


def undecodable_argument(args: list[str]) -> str | None:
    """The first argument holding bytes that are not UTF-8: Python passes them as lone surrogates,
    which no server API, JSON body or URL can carry, so the command refuses them up front."""
    return next((arg for arg in args if any("\ud800" <= char <= "\udfff" for char in arg)), None)


def refuse_undecodable(argument: str | None) -> None:
    if argument is not None:
        raise UsageError(f"the argument {quoted(argument)} is not valid UTF-8 text; write it in UTF-8")


def quoted(value: str) -> str:
    """A value quoted for a message, undecodable bytes as escapes (``'a\\xff'``), cut when long."""
    text = printable(value)
    return "'" + (text if len(text) <= 60 else f"{text[:30]}…{text[-20:]}") + "'"


def usage_message(message: str, command_path: str | None) -> str:
    """Click's usage error as one line that points at the help, instead of its usage block."""
    where = f"; see `{command_path} --help`" if command_path else ""
    return printable(message.rstrip(".")) + where
