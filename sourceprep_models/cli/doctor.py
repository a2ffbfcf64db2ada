"""`sourceprep-models doctor`: a checklist of what makes models swap or crawl, each problem with its fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from sourceprep_models.cli.options import EndpointOption, JsonOption

if TYPE_CHECKING:
    from sourceprep_models.cli.context import AppContext
    from sourceprep_models.doctor.system import LocalSystem


def doctor(ctx: typer.Context, endpoint: EndpointOption = None, json_output: JsonOption = False) -> None:
    """Check config, hardware, servers, models and server settings; exit 1 when any check is a problem.

    Example: sourceprep-models doctor --json"""
    from sourceprep_models.doctor.run import diagnose
    from sourceprep_models.ui.render.doctor import doctor_table

    app: AppContext = ctx.obj
    out = app.output
    report = diagnose(
        app.config_path,
        app.environ,
        lambda: app.config,
        make_system(app),
        only_endpoint=endpoint,
        endpoint_named=app.endpoint,
    )
    if json_output:
        out.json(report.to_dict())
    else:
        out.data(doctor_table(report))
    out.info(report.summary_line())
    if report.exit_code:
        out.failure(report.summary_line())
        raise typer.Exit(report.exit_code)


def make_system(app: AppContext) -> LocalSystem:
    """The real machine (tests replace this to feed recorded probe outputs and process tables)."""
    from sourceprep_models.doctor.system import LocalSystem

    return LocalSystem(app.environ)
