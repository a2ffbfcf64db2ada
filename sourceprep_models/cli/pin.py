"""`sourceprep-models pin MODEL`: keep a model always available (recorded in the config)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from sourceprep_models.cli.options import EndpointOption, JsonOption, TimeoutOption
from sourceprep_models.units import KeepAlive

# What an unpinned model gets when its config names no keep_alive: Ollama's own default (ollama.md §4.10).
UNPINNED_KEEP_ALIVE = KeepAlive(300.0)


def pin(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Argument(help="A model key from the config, or the server's model name.", show_default=False)
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", "-r", help="Unpin: let it expire like any other model.")] = False,
    context_length: Annotated[
        int | None, typer.Option("--ctx", min=256, help="Context length to keep it loaded with.", show_default=False)
    ] = None,
    endpoint: EndpointOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Pin MODEL: record it as always available, load it, keep it loaded. Without MODEL: list pins."""
    from sourceprep_models.cli.swap import make_executor, open_session, parse_timeout_option, run_load
    from sourceprep_models.config.edit import edit_config, set_pin
    from sourceprep_models.errors import UsageError
    from sourceprep_models.planning.load import Refusal
    from sourceprep_models.ui import render

    app = ctx.obj
    out = app.output
    if model is None:
        if remove:
            raise UsageError("name the model to unpin: pin --remove MODEL")
        pins = [spec for spec in app.config.models.values() if spec.always_available]
        if json_output:
            out.json({"pins": [{"key": s.key, "name": s.name, "endpoint": s.endpoint} for s in pins]})
        else:
            for spec in pins:
                out.line(f"{spec.key}\t{spec.name}\t{spec.endpoint}")
        return

    spec, target = app.resolve_model(model, endpoint)
    key = spec.key if spec else model
    name = spec.name if spec else model
    path = app.editable_config_path()
    with open_session(app, target) as session:
        session.provider.describe(name)  # unknown model → exit 3 before the config is touched
        if not session.provider.capabilities.can_pin:
            from sourceprep_models.errors import Unsupported

            raise Unsupported(f"{session.provider.pin_advice(name)} (the config is unchanged)")
        # Servers with a pin of their own (oMLX is_pinned) get it set too, so their eviction respects it.
        server_pin = session.provider.set_pinned if session.provider.capabilities.pins_on_server else None
        if remove:
            edit_config(
                path, lambda text: set_pin(text, key, name, None, pinned=False), app.environ, kinds=app.endpoint_kinds
            )
            session.config = app.reload_config()
            new_spec = session.config.models.get(key)
            # A finite keep_alive replaces the server's "forever" (ollama.md §3.2); no reload happens.
            request = session.request(name, new_spec)
            if request.keep_alive is None:
                request = dataclasses.replace(request, keep_alive=UNPINNED_KEEP_ALIVE)
            loaded = {session.identity(m.name) for m in session.loaded()}
            if session.identity(name) in loaded:
                make_executor(app, session).restore([request], detail="keep-alive reset")
            if server_pin is not None:
                server_pin(name, False)
            if json_output:
                out.json({"model": name, "endpoint": target.name, "pinned": False, "config": str(path)})
            out.success(f"unpinned {name} on {target.name} (config: {path})")
            return

        # Plan before writing anything: a pin that can never fit is refused with the config untouched.
        trial = session.request(name, spec, context_length=context_length, deadline_s=parse_timeout_option(timeout))
        plan, _, _ = session.plan(trial, session.loaded())
        if isinstance(plan, Refusal):
            from sourceprep_models.errors import DoesNotFit

            raise DoesNotFit(plan.reason + " (not pinned; the config is unchanged)")
        if server_pin is not None:
            server_pin(name, True)  # first: if the server refuses (no admin access), the config stays unchanged
        endpoint_key = None if spec is not None or target.name == app.config.default_endpoint else target.name
        edit_config(
            path,
            lambda text: set_pin(text, key, name, endpoint_key, pinned=True),
            app.environ,
            kinds=app.endpoint_kinds,
        )
        session.config = app.reload_config()
        request = session.request(
            name, session.config.models.get(key), context_length=context_length, deadline_s=trial.deadline_s
        )
        report = run_load(app, session, request, dry_run=False, warm=True)
    assert report is not None
    for warning in report.warnings:
        out.warn(warning)
    if json_output:
        out.json({**report.to_dict(), "pinned": True, "config": str(path)})
    else:
        out.data(render.steps_table(report.steps))
    out.success(f"pinned {name} on {target.name}: loaded and kept forever (config: {path})")
