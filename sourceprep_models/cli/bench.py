"""`sourceprep-models bench`: measure cold/warm loads and first-token latency, or the swap penalty of
two models called alternately, before and after keeping both resident."""

from __future__ import annotations

from typing import Annotated

import typer

from sourceprep_models.cli.options import EndpointOption, JsonOption


def bench(
    ctx: typer.Context,
    models: Annotated[list[str], typer.Argument(help="Model keys from the config or server model names.")],
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
    """Benchmark MODELS: cold load, warm load and first token; or the A/B swap penalty with --alternate."""
    from sourceprep_models import bench as core
    from sourceprep_models.errors import UsageError
    from sourceprep_models.swap.pins import repair_pins
    from sourceprep_models.ui import render

    app = ctx.obj
    out = app.output
    if alternate is not None and len(models) != 2:
        raise UsageError("--alternate compares exactly two models: bench A B --alternate 10")
    resolved = [app.resolve_model(model, endpoint) for model in models]
    targets = {target.name for _, target in resolved}
    if len(targets) > 1:
        raise UsageError(f"the models are on different endpoints ({', '.join(sorted(targets))}); bench one endpoint")
    names = [spec.name if spec else model for (spec, _), model in zip(resolved, models, strict=True)]
    target = resolved[0][1]
    from sourceprep_models.swap.operations import open_machine

    with open_machine(app.config, hooks=app.hooks()) as machine:
        session = machine.session(target)
        if session.provider.capabilities.always_ready:
            raise UsageError(f"endpoint {target.name!r} is a cloud API: nothing is loaded there to benchmark")
        for name in names:
            session.provider.describe(name)  # unknown → exit 3 before anything is unloaded
        executor = machine.executor(session)
        with machine.locked(600.0, app.hooks().waiting):
            try:
                if alternate is None:
                    results = core.bench_models(session, executor, names, environ=app.environ, on_step=out.info)
                    document: dict[str, object] = {"endpoint": target.name, "models": [r.to_dict() for r in results]}
                else:
                    result = core.alternate(
                        session, executor, names[0], names[1], alternate, environ=app.environ, on_step=out.info
                    )
                    document = {"endpoint": target.name, "alternation": result.to_dict()}
            finally:
                repair_pins(session, executor)  # pins the benchmark moved out come back
    if json_output:
        out.json(document)
    elif alternate is None:
        out.data(render.bench_table(results))
        for result_row in results:
            if result_row.note:
                out.warn(f"{result_row.model}: warm-cache only: {result_row.note}")
    else:
        out.data(render.alternation_table(result))
        out.line()
        out.line(f"recommendation: {result.recommendation}")
