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
    """Load MODEL (evicting what must leave first, on any server of this machine) and wait until it is ready."""
    from sourceprep_models.cli.options import parse_keep_alive, parse_timeout
    from sourceprep_models.errors import DoesNotFit
    from sourceprep_models.swap import operations
    from sourceprep_models.swap.operations import LoadOrder, LoadPreview
    from sourceprep_models.ui import render

    app = ctx.obj
    out = app.output
    alive = parse_keep_alive(keep_alive)
    spec, target = app.resolve_model(model, endpoint)
    if spec is not None and spec.always_available and alive is not None and not alive.forever:
        out.warn(f"{model} is marked always_available in the config, so it stays loaded forever")
    order = LoadOrder(model, spec, target, alive, context_length, parse_timeout(timeout))
    outcome = operations.load(
        app.config, order, dry_run=dry_run, warm=warm, single_model=single_model, hooks=app.hooks()
    )
    if outcome is None:  # dry run on a cloud endpoint, already said
        return
    if isinstance(outcome, LoadPreview):
        out.json(outcome.to_dict()) if json_output else out.data(render.plan_table(outcome))
        if outcome.refused is not None:
            raise DoesNotFit(outcome.refused.reason)
        return
    for warning in outcome.warnings:
        out.warn(warning)
    out.json(outcome.to_dict()) if json_output else out.data(render.steps_table(outcome.steps))
    out.success(render.load_summary(outcome))
