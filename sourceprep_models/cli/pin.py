"""`sourceprep-models pin MODEL`: keep a model always available (recorded in the config)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sourceprep_models.cli import complete
from sourceprep_models.cli.options import EndpointOption, JsonOption, TimeoutOption

if TYPE_CHECKING:
    from sourceprep_models.cli.context import AppContext
    from sourceprep_models.config.schema import Config


def pin(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Argument(
            help="A model key from the config, or the server's model name.",
            show_default=False,
            autocompletion=complete.models,
        ),
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", "-r", help="Unpin: let it expire like any other model.")] = False,
    repair: Annotated[
        bool, typer.Option("--repair", help="Put back every pin a server lost (status only looks).")
    ] = False,
    context_length: Annotated[
        int | None, typer.Option("--ctx", min=256, help="Context length to keep it loaded with.", show_default=False)
    ] = None,
    endpoint: EndpointOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Pin MODEL: record it as always available, load it, keep it loaded. Without MODEL: list pins.

    Example: sourceprep-models pin qwen3:4b   (undo: pin --remove qwen3:4b; put lost pins back: pin --repair)
    """
    from sourceprep_models.cli.options import parse_timeout
    from sourceprep_models.config.edit import edit_config, set_pin
    from sourceprep_models.errors import UsageError
    from sourceprep_models.swap import operations
    from sourceprep_models.ui import render

    app = ctx.obj
    out = app.output
    if repair:
        _repair(app, model, remove, endpoint, json_output)
        return
    if model is None:
        if remove:
            raise UsageError("name the model to unpin: pin --remove MODEL")
        pins = [spec for spec in app.config.models.values() if spec.always_available]
        if json_output:
            out.json({"pins": [{"key": s.key, "name": s.name, "endpoint": s.endpoint} for s in pins]})
        for spec in [] if json_output else pins:
            out.line(f"{spec.key}\t{spec.name}\t{spec.endpoint}")
        return

    spec, target = app.resolve_model(model, endpoint)
    key, name, path = spec.key if spec else model, spec.name if spec else model, app.editable_config_path()
    endpoint_key = None if spec is not None or target.name == app.config.default_endpoint else target.name

    def edit(text: str) -> str:
        return set_pin(text, key, name, endpoint_key, pinned=not remove)

    def write() -> Config:
        edit_config(path, edit, app.environ, kinds=app.endpoint_kinds)
        config: Config = app.reload_config()
        return config

    order = operations.LoadOrder(model, spec, target, None, context_length, parse_timeout(timeout))
    result = operations.set_pin(
        app.config, order, pinned=not remove, config_edit=write, config_path=str(path), hooks=app.hooks()
    )
    for warning in result.report.warnings if result.report else []:
        out.warn(warning)
    if json_output:
        out.json(result.to_dict())
    elif result.report is not None:
        out.data(render.steps_table(result.report.steps))
    if remove:
        out.success(f"unpinned {name} on {target.name} (config: {path})")
    else:
        out.success(f"pinned {name} on {target.name}: loaded and kept forever (config: {path})")


def _repair(app: AppContext, model: str | None, remove: bool, endpoint: str | None, json_output: bool) -> None:
    from sourceprep_models.errors import DoesNotFit, ModelNotFound, UsageError
    from sourceprep_models.swap import operations
    from sourceprep_models.ui import render

    if model is not None or remove:
        raise UsageError("pin --repair puts back every lost pin: leave out MODEL and --remove")
    targets = [app.endpoint(endpoint).name] if endpoint else None
    fixed = operations.repair_lost_pins(app.config, targets, hooks=app.hooks()).repair
    if json_output:
        app.output.json(operations.PinRepair(fixed).to_dict())
    elif fixed.steps:
        app.output.data(render.steps_table(fixed.steps))
    for name in fixed.repaired:
        app.output.success(f"put back pinned {name} on {fixed.where.get(name)}")
    if not (fixed.repaired or fixed.absent or fixed.waiting):
        app.output.info("every pin is loaded: nothing to put back")
    if fixed.absent:
        raise ModelNotFound(f"pinned {', '.join(fixed.absent)} is not on its server; pull it there or unpin it")
    if fixed.waiting:
        raise DoesNotFit(
            f"pinned {', '.join(fixed.waiting)} does not fit beside what is loaded; unload something first"
        )
