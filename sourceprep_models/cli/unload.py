"""`sourceprep-models unload MODEL... | --all`: release models and wait until the server has."""

from __future__ import annotations

from typing import Annotated

import typer

from sourceprep_models.cli import complete
from sourceprep_models.cli.options import EndpointOption, JsonOption, TimeoutOption


def unload(
    ctx: typer.Context,
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Model keys from the config or server model names.", show_default=False, autocompletion=complete.models
        ),
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", "-a", help="Unload every loaded model but the pins.")] = False,
    include_pins: Annotated[bool, typer.Option("--include-pins", help="With --all: the pins too.")] = False,
    endpoint: EndpointOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Unload models and wait until the server no longer lists them; then bring back evicted pins.

    Example: sourceprep-models unload --all   (the pins stay; --include-pins takes them too)
    """
    from sourceprep_models.cli.options import parse_timeout
    from sourceprep_models.errors import UsageError
    from sourceprep_models.swap import operations
    from sourceprep_models.ui import render

    app = ctx.obj
    out = app.output
    if bool(models) == all_models:
        raise UsageError("name the models to unload, or pass --all (not both)")
    if include_pins and not all_models:
        raise UsageError("--include-pins goes with --all; a pin named on its own is unloaded anyway")
    deadline = parse_timeout(timeout)
    # The requested names by endpoint; --all means every endpoint (or the one named).
    work: dict[str, list[str] | None] = {}
    if all_models:
        work = {target.name: None for target in app.endpoints(endpoint)}
    for model in models or []:
        spec, target = app.resolve_model(model, endpoint)
        work.setdefault(target.name, [])
        work[target.name].append(spec.name if spec else model)  # type: ignore[union-attr]
    result = operations.unload(
        app.config, work, deadline_s=deadline, include_pins=include_pins, hooks=app.hooks(), progress=out.status
    )
    if json_output:
        out.json(result.to_dict())
    elif steps := [step for report in result.reports for step in report.steps]:
        out.data(render.steps_table(steps))
    for report in result.reports:
        for line in render.unload_summary(report):
            out.success(line)
    for name in result.restored:
        out.info(f"restored pinned {name}")
