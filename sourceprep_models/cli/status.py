"""`sourceprep-models status`: what is loaded where, and the machine's memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sourceprep_models.cli.options import EndpointOption, JsonOption

if TYPE_CHECKING:
    from sourceprep_models.cli.context import AppContext
    from sourceprep_models.config.schema import Endpoint


def status(
    ctx: typer.Context,
    endpoint: EndpointOption = None,
    json_output: JsonOption = False,
    no_hardware: Annotated[bool, typer.Option("--no-hardware", help="Skip the RAM/GPU probe.")] = False,
    repair: Annotated[
        bool, typer.Option("--repair/--no-repair", help="Reload configured pins the server has lost.")
    ] = True,
) -> None:
    """Show the models loaded on each endpoint (size, GPU share, context, expiry) and RAM/GPU."""
    from sourceprep_models.hardware import probe
    from sourceprep_models.swap.status import collect_status
    from sourceprep_models.ui import render

    app = ctx.obj
    out = app.output
    targets = app.endpoints(endpoint)
    if repair:
        _repair_pins(app, targets)
    hardware = {} if no_hardware else probe().to_dict()
    pins: dict[str, set[str]] = {}
    for spec in app.config.models.values():
        if spec.always_available:
            pins.setdefault(spec.endpoint, set()).add(spec.name)
    report = collect_status(targets, app.provider, hardware, pins)
    if json_output:
        out.json(report.to_dict())
    else:
        out.data(render.status_table(report))
        lines = render.server_lines(report) + render.hardware_lines(report.hardware)
        if lines:
            out.line()
            for line in lines:
                out.line(line)
    for ep in report.endpoints:
        if ep.error:
            out.error(ep.error)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _repair_pins(app: AppContext, targets: list[Endpoint]) -> None:
    """Pins the server lost (a restart, another client's keep_alive) are put back before reporting."""
    from sourceprep_models.cli.swap import locked, make_executor, open_session
    from sourceprep_models.errors import SourceprepError
    from sourceprep_models.swap.pins import repair_pins

    for target in targets:
        if not any(spec.always_available and spec.endpoint == target.name for spec in app.config.models.values()):
            continue
        try:
            with open_session(app, target) as session, locked(app, session, 60.0):
                repair = repair_pins(session, make_executor(app, session))
        except SourceprepError:
            continue  # the status table reports this endpoint's problem itself
        for name in repair.repaired:
            app.output.warn(f"pinned {name} was not kept by {target.name}; reloaded it")
        for name in repair.absent:
            app.output.warn(f"pinned {name} is not on {target.name}; pull it there or unpin it")
        for name in repair.waiting:
            app.output.warn(f"pinned {name} is not loaded on {target.name} and does not fit beside what is")
