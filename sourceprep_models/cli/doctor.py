"""`sourceprep-models doctor`: a checklist of what makes models swap or crawl, each problem with its fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from sourceprep_models.cli.options import EndpointOption, JsonOption

if TYPE_CHECKING:
    from sourceprep_models.cli.context import AppContext
    from sourceprep_models.doctor.run import LocalSystem


def doctor(ctx: typer.Context, endpoint: EndpointOption = None, json_output: JsonOption = False) -> None:
    """Check config, hardware, servers, models and server settings; exit 1 when any check is a problem."""
    from sourceprep_models.doctor.run import gather_inputs, render_table, run_doctor

    app: AppContext = ctx.obj
    out = app.output
    inputs = gather_inputs(app.config_path, app.environ, lambda: app.config, endpoint)
    if endpoint is not None and inputs.config is not None:
        app.endpoint(endpoint)  # an unknown name is a usage error (exit 2), as in every command
    system = make_system(app)
    try:
        report = run_doctor(inputs, system)
    finally:
        system.close()
    if json_output:
        out.json(report.to_dict())
    else:
        out.data(render_table(report))
    out.info(report.summary_line())
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def make_system(app: AppContext) -> LocalSystem:
    """The real machine (tests replace this to feed recorded probe outputs and process tables)."""
    from sourceprep_models.doctor.run import LocalSystem

    return LocalSystem(app.environ)
