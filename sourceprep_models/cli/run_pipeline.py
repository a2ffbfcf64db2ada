"""`sourceprep-models run-pipeline NAME`: run a configured pipeline with every swap planned ahead."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sourceprep_models.cli.complete import PipelineArgument, StrategyOption
from sourceprep_models.cli.options import JsonOption, SingleModelOption, WarmOption
from sourceprep_models.cli.run_options import OverlapOption, PrefetchOption

if TYPE_CHECKING:
    from sourceprep_models.cli.context import AppContext
    from sourceprep_models.pipeline.report import RunReport


def run_pipeline(
    ctx: typer.Context,
    name: PipelineArgument,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan only; exit 6 naming the first stage that cannot fit.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the last run from its first unfinished stage.")
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Also write the run's report (JSON) to this file.", show_default=False),
    ] = None,
    outputs: Annotated[
        Path | None,
        typer.Option(
            "--outputs", help="Where prompt outputs go (JSONL; default: the run's state directory).", show_default=False
        ),
    ] = None,
    prefetch: PrefetchOption = True,
    overlap: OverlapOption = True,
    warm: WarmOption = True,
    strategy: StrategyOption = "lookahead",
    single_model: SingleModelOption = False,
    json_output: JsonOption = False,
) -> None:
    """Run pipeline NAME: plan every swap in advance, prefetch, time every stage, resume safely.

    Example: sourceprep-models run-pipeline trace --dry-run"""
    import os

    from sourceprep_models.pipeline.plan import RunPlan
    from sourceprep_models.pipeline.report import RunStopped
    from sourceprep_models.pipeline.run import RunContext, execute
    from sourceprep_models.ui import render
    from sourceprep_models.ui.progress import progress
    from sourceprep_models.units import format_seconds, human_bytes

    app: AppContext = ctx.obj
    out = app.output
    try:
        with progress(out) as shown:  # closed before the table or the error: stdout and stderr stay whole
            context = RunContext(
                reload_config=app.reload_config,
                environ=app.environ,
                info=out.info,
                warn=out.warn,
                prefetch=prefetch,
                warm=warm,
                overlap=overlap,
                progress=shown,
                workdir=os.getcwd(),
            )
            result = execute(
                context,
                app.config,
                name,
                dry_run=dry_run,
                resume=resume,
                outputs=outputs,
                report=report,
                strategy=strategy,
                single_model=single_model,
            )
    except RunStopped as stopped:
        _show(app, stopped.report, json_output, report)
        raise
    if isinstance(result, RunPlan):
        if json_output:
            out.json(result.to_dict())
        else:
            out.data(render.run_plan_table(result))
            out.info(f"{result.loads} loads, {human_bytes(result.bytes_loaded)} loaded ({result.strategy or strategy})")
        return
    _show(app, result, json_output, report)
    out.success(
        f"{name}: {len(result.stages)} stages in {format_seconds(result.total_s)}; swapping cost "
        f"{format_seconds(result.swap_penalty_s)} ({result.loads} loads)"
    )


def _show(app: AppContext, result: RunReport, json_output: bool, report: Path | None) -> None:
    import json

    from sourceprep_models.fs import write_atomic
    from sourceprep_models.ui import render
    from sourceprep_models.ui.output import json_document

    for warning in result.warnings:
        app.output.warn(warning)
    document = result.to_dict()
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(report, json.dumps(json_document(document), indent=2) + "\n")  # as --json writes it
    if json_output:
        app.output.json(document)
    else:
        app.output.data(render.run_table(result))
