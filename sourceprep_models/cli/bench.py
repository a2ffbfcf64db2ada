"""`sourceprep-models bench`: measure cold/warm loads and first-token latency, or the swap penalty of
two models called alternately, before and after keeping both resident."""

from __future__ import annotations

from typing import Annotated

import typer

from sourceprep_models.cli import complete
from sourceprep_models.cli.options import EndpointOption, JsonOption


def bench(
    ctx: typer.Context,
    models: Annotated[
        list[str],
        typer.Argument(help="Model keys from the config or server model names.", autocompletion=complete.models),
    ],
    alternate: Annotated[
        int | None,
        typer.Option(
            "--alternate",
            min=2,
            help="Call the two MODELS alternately this many times: as the server behaves now, then both resident.",
            show_default=False,
        ),
    ] = None,
    endpoint: EndpointOption = None,
    json_output: JsonOption = False,
) -> None:
    """Benchmark MODELS: cold load, warm load and first token; or the A/B swap penalty with --alternate.

    Example: sourceprep-models bench embed rerank --alternate 10"""
    from sourceprep_models import bench as core
    from sourceprep_models.doctor.system import PsutilProcesses
    from sourceprep_models.errors import UsageError
    from sourceprep_models.ui.render.bench import alternation_table, bench_table

    app = ctx.obj
    out = app.output
    if alternate is not None and len(models) != 2:
        raise UsageError("--alternate compares exactly two models: bench A B --alternate 10")
    resolved = [app.resolve_model(model, endpoint) for model in models]
    targets = {target.name for _, target in resolved}
    if len(targets) > 1:
        raise UsageError(f"the models are on different endpoints ({', '.join(sorted(targets))}); bench one endpoint")
    server_processes = PsutilProcesses().servers  # the running server's own settings, as doctor reads them
    names = [spec.name if spec else model for (spec, _), model in zip(resolved, models, strict=True)]
    report = core.run(
        app.config,
        resolved[0][1],
        names,
        alternate_calls=alternate,
        environ=app.environ,
        on_step=out.info,
        on_detail=out.debug,
        processes=server_processes,
    )
    if json_output:
        out.json(report.to_dict())
    elif report.alternation is not None:
        out.data(alternation_table(report.alternation))
        out.line()
        out.line(f"recommendation: {report.alternation.recommendation}")
    else:
        results = report.models or []
        out.data(bench_table(results))
        for result_row in results:
            if result_row.note:
                out.warn(f"{result_row.model}: {result_row.cache}: {result_row.note}")
