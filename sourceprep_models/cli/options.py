"""Option declarations shared by several commands, so their names and help never drift."""

from __future__ import annotations

from typing import Annotated

import typer

from sourceprep_models.constants import ENV_TIMEOUT

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
