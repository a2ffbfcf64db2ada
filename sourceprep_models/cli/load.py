"""`sourceprep-models load MODEL`: plan what must leave, then swap it in and wait until it is ready."""

from __future__ import annotations

from typing import Annotated

import typer

from sourceprep_models.cli.options import EndpointOption, JsonOption, SingleModelOption, TimeoutOption, WarmOption


def load(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="A model key from the config, or the server's model name.")],
    keep_alive: Annotated[
        str | None,
        typer.Option("--keep-alive", "-k", help="Keep it this long after use: 30m, 2h, forever.", show_default=False),
    ] = None,
    context_length: Annotated[
        int | None,
        typer.Option("--ctx", min=256, help="Context length to load it with (tokens).", show_default=False),
    ] = None,
    endpoint: EndpointOption = None,
    timeout: TimeoutOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan only; exit 6 if it cannot fit.")] = False,
    single_model: SingleModelOption = False,
    warm: WarmOption = True,
    json_output: JsonOption = False,
) -> None:
    """Load MODEL (evicting what must leave first) and wait until it is ready."""
    from sourceprep_models.cli.swap import open_session, parse_keep_alive_option, parse_timeout_option, run_load
    from sourceprep_models.ui import render

    app = ctx.obj
    alive = parse_keep_alive_option(keep_alive)
    spec, target = app.resolve_model(model, endpoint)
    if spec is not None and spec.always_available and alive is not None and not alive.forever:
        app.output.warn(f"{model} is marked always_available in the config, so it stays loaded forever")
    with open_session(app, target, single_model=single_model) as session:
        request = session.request(
            model,
            spec,
            keep_alive=alive,
            context_length=context_length,
            deadline_s=parse_timeout_option(timeout),
        )
        outcome = run_load(app, session, request, dry_run=dry_run, warm=warm, json_output=json_output)
    if outcome is None:  # dry run, already rendered
        return
    out = app.output
    for warning in outcome.warnings:
        out.warn(warning)
    if json_output:
        out.json(outcome.to_dict())
    else:
        out.data(render.steps_table(outcome.steps))
    out.success(render.load_summary(outcome))
