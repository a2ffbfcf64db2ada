"""`sourceprep-models unload MODEL... | --all`: release models and wait until the server has."""

from __future__ import annotations

from typing import Annotated

import typer

from sourceprep_models.cli.options import EndpointOption, JsonOption, TimeoutOption


def unload(
    ctx: typer.Context,
    models: Annotated[
        list[str] | None, typer.Argument(help="Model keys from the config or server model names.", show_default=False)
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", "-a", help="Unload every loaded model, pins too.")] = False,
    endpoint: EndpointOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Unload models and wait until the server no longer lists them; then bring back evicted pins."""
    from sourceprep_models.cli.swap import locked, make_executor, open_session, parse_timeout_option
    from sourceprep_models.constants import DEFAULT_UNLOAD_TIMEOUT_S
    from sourceprep_models.errors import UsageError
    from sourceprep_models.swap.pins import repair_pins
    from sourceprep_models.ui import render

    app = ctx.obj
    out = app.output
    if bool(models) == all_models:
        raise UsageError("name the models to unload, or pass --all (not both)")
    deadline = parse_timeout_option(timeout)

    # Group the requested names by endpoint; --all means every endpoint (or the one named).
    work: dict[str, tuple[object, list[str] | None]] = {}
    if all_models:
        for target in app.endpoints(endpoint):
            work[target.name] = (target, None)
    else:
        for model in models or []:
            spec, target = app.resolve_model(model, endpoint)
            names = work.setdefault(target.name, (target, []))[1]
            assert names is not None
            names.append(spec.name if spec else model)

    reports, restored = [], []
    for target, names in work.values():
        with open_session(app, target) as session:  # type: ignore[arg-type]
            timeout_s = deadline or session.endpoint.unload_timeout_s or DEFAULT_UNLOAD_TIMEOUT_S
            executor = make_executor(app, session)
            label = "everything" if names is None else ", ".join(names)
            with locked(app, session, timeout_s), out.status(f"unloading {label} on {session.endpoint.name}…"):
                report = executor.unload(names, timeout_s=timeout_s)
                if names is not None:
                    # Pins evicted earlier for heavy work come back now that memory is free.
                    named = {session.identity(name) for name in names}
                    for spec in session.pinned_specs():
                        if session.identity(spec.name) in named:
                            out.warn(
                                f"{spec.name} is pinned in the config; the next load or status brings it back "
                                f"(unpin with `sourceprep-models pin --remove {spec.name}`)"
                            )
                    repair = repair_pins(session, executor, skip=named)
                    report.steps.extend(repair.steps)
                    restored.extend(repair.repaired)
            reports.append(report)

    if json_output:
        out.json({"endpoints": [report.to_dict() for report in reports], "restored_pins": restored})
    else:
        steps = [step for report in reports for step in report.steps]
        if steps:
            out.data(render.steps_table(steps))
    for report in reports:
        for line in render.unload_summary(report):
            out.success(line)
    for name in restored:
        out.info(f"restored pinned {name}")
