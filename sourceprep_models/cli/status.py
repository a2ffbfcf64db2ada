"""`sourceprep-models status`: what is loaded where, and the machine's memory."""

from __future__ import annotations

from typing import Annotated

import typer

from sourceprep_models.cli.options import EndpointOption, JsonOption


def status(
    ctx: typer.Context,
    endpoint: EndpointOption = None,
    json_output: JsonOption = False,
    no_hardware: Annotated[bool, typer.Option("--no-hardware", help="Skip the RAM/GPU probe.")] = False,
    repair: Annotated[
        bool,
        typer.Option("--repair/--no-repair", help="First reload configured pins a server lost (status only looks)."),
    ] = False,
) -> None:
    """Show the models loaded on each endpoint (size, GPU share, context, expiry), the machine's budget, RAM/GPU.

    Example: sourceprep-models status --json > residency.json
    """
    from sourceprep_models.swap.status import status as collect
    from sourceprep_models.ui import render

    app = ctx.obj
    out = app.output
    report, fixed = collect(
        app.config, app.endpoints(endpoint), repair=repair, hardware=not no_hardware, hooks=app.hooks()
    )
    for line in render.repair_lines(fixed) + render.lost_pin_lines(report):
        out.warn(line)
    if json_output:
        out.json(report.to_dict())
    else:
        out.data(render.status_table(report))
        lines = render.host_lines(report) + render.server_lines(report) + render.hardware_lines(report.hardware)
        if lines:
            out.line()
            for line in lines:
                out.line(line)
    for ep in report.endpoints:
        if ep.error:
            out.error(ep.error)
    if report.exit_code:
        raise typer.Exit(report.exit_code)
