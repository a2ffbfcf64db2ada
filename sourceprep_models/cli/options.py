"""Option declarations shared by several commands, so their names and help never drift."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sourceprep_models.constants import ENV_TIMEOUT
from sourceprep_models.errors import UsageError

if TYPE_CHECKING:
    from sourceprep_models.units import KeepAlive

EndpointOption = Annotated[
    str | None,
    typer.Option("--endpoint", "-e", help="Endpoint name from the config (default: all / the default one)."),
]
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
    from sourceprep_models.units import parse_keep_alive as parse

    if value is None:
        return None
    try:
        alive = parse(value)
    except ValueError as exc:
        raise UsageError(f"--keep-alive: {exc}") from None
    if alive.seconds == 0:
        raise UsageError("--keep-alive 0 would unload the model as soon as it loads; use `unload` instead")
    return alive


def parse_timeout(value: str | None) -> float | None:
    from sourceprep_models.units import parse_duration

    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    if seconds <= 0:
        raise UsageError("--timeout must be positive, e.g. 90s or 10m")
    return seconds
