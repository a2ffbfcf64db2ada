"""`sourceprep-models load MODEL...`: plan what must leave, then swap the models in and wait until ready."""

from __future__ import annotations

from typing import Annotated

import typer

from sourceprep_models.cli import complete
from sourceprep_models.cli.options import EndpointOption, JsonOption, SingleModelOption, TimeoutOption, WarmOption


def load(
    ctx: typer.Context,
    models: Annotated[
        list[str],
        typer.Argument(
            help="Model keys from the config or the server's model names.",
            metavar="MODEL...",
            autocompletion=complete.models,
        ),
    ],
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
    """Load MODELs (evicting what must leave first, on any server of this machine) and wait until they are ready.

    Several models are planned together: if they cannot all be resident at once, nothing is touched.
    Example: sourceprep-models load embed rerank --keep-alive 30m
    """
    import dataclasses

    from sourceprep_models.cli.options import parse_keep_alive, parse_timeout
    from sourceprep_models.errors import DoesNotFit, UsageError
    from sourceprep_models.swap import operations
    from sourceprep_models.swap.operations import LoadOrder, LoadPreview
    from sourceprep_models.ui import render
    from sourceprep_models.ui.progress import progress

    app = ctx.obj
    out = app.output
    alive = parse_keep_alive(keep_alive)
    if single_model and len(models) > 1:
        raise UsageError("--single-model keeps one model loaded; name one model")
    orders = []
    for model in models:
        spec, target = app.resolve_model(model, endpoint)
        if spec is not None and spec.always_available and alive is not None and not alive.forever:
            out.warn(f"{model} is marked always_available in the config, so it stays loaded forever")
        choices = spec.candidates if spec is not None and endpoint is None else ()
        orders.append(LoadOrder(model, spec, target, alive, context_length, parse_timeout(timeout), choices))
    with progress(out) as shown_progress:
        hooks = dataclasses.replace(app.hooks(), progress=None if dry_run else shown_progress)
        outcomes = operations.load(
            app.config, orders, dry_run=dry_run, warm=warm, single_model=single_model, hooks=hooks
        )
    shown = [outcome for outcome in outcomes if outcome is not None]  # None: a dry run on a cloud endpoint
    documents = [outcome.to_dict() for outcome in shown]
    if json_output and shown:
        out.json(documents[0] if len(models) == 1 else {"dry_run" if dry_run else "loads": documents})
    previews = [outcome for outcome in shown if isinstance(outcome, LoadPreview)]
    for preview in previews:
        if not json_output:
            out.data(render.plan_table(preview))
        if preview.refused is not None:
            raise DoesNotFit(preview.refused.reason)
    reports = [outcome for outcome in shown if not isinstance(outcome, LoadPreview)]
    for report in reports:
        for warning in report.warnings:
            out.warn(warning)
    if reports and not json_output:
        out.data(render.steps_table([step for report in reports for step in report.steps], reports))
    for report in reports:
        out.success(render.load_summary(report))
