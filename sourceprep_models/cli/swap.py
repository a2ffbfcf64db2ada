"""Shared by the commands that change what is loaded (`load`, `pin`, `unload`): open a session,
repair pins, plan, render a dry run, and hand the plan to the executor under the endpoint lock."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from sourceprep_models.errors import DoesNotFit, UsageError
from sourceprep_models.units import KeepAlive

if TYPE_CHECKING:
    from sourceprep_models.cli.context import AppContext
    from sourceprep_models.config.schema import Endpoint
    from sourceprep_models.providers.base import LoadRequest
    from sourceprep_models.swap.executor import Executor, LoadReport
    from sourceprep_models.swap.session import Session


def parse_keep_alive_option(value: str | None) -> KeepAlive | None:
    from sourceprep_models.units import parse_keep_alive

    if value is None:
        return None
    try:
        alive = parse_keep_alive(value)
    except ValueError as exc:
        raise UsageError(f"--keep-alive: {exc}") from None
    if alive.seconds == 0:
        raise UsageError("--keep-alive 0 would unload the model as soon as it loads; use `unload` instead")
    return alive


def parse_timeout_option(value: str | None) -> float | None:
    from sourceprep_models.units import parse_duration

    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    if seconds <= 0:
        raise UsageError("--timeout must be positive, e.g. 90s or 10m")
    return seconds


@contextlib.contextmanager
def open_session(app: AppContext, endpoint: Endpoint, *, single_model: bool = False) -> Iterator[Session]:
    from sourceprep_models.hardware import probe
    from sourceprep_models.memory.sizing import default_size_book
    from sourceprep_models.swap.session import Session

    provider = app.provider(endpoint)
    try:
        yield Session(
            config=app.config,
            endpoint=endpoint,
            provider=provider,
            hardware=probe().to_dict(),
            book=default_size_book(),
            single_model=single_model,
        )
    finally:
        provider.close()


def make_executor(app: AppContext, session: Session) -> Executor:
    from sourceprep_models.swap.executor import Executor

    out = app.output
    return Executor(session.provider, on_step=lambda step: out.debug(f"{step.step} {step.model}: {step.wall_s:.3f}s"))


@contextlib.contextmanager
def locked(app: AppContext, session: Session, timeout_s: float) -> Iterator[None]:
    from sourceprep_models.swap.locks import endpoint_lock

    def waiting() -> None:
        app.output.info(f"waiting for another sourceprep-models to finish on {session.endpoint.name}…")

    with endpoint_lock(session.endpoint.name, session.endpoint.url, timeout_s=timeout_s, on_wait=waiting):
        yield


def run_load(
    app: AppContext, session: Session, request: LoadRequest, *, dry_run: bool, warm: bool, json_output: bool = False
) -> LoadReport | None:
    """Plan and (unless ``dry_run``) execute one load; returns the report, or None after a dry run."""
    from sourceprep_models.planning.load import Refusal
    from sourceprep_models.swap.pins import repair_pins
    from sourceprep_models.ui import render

    out = app.output
    executor = make_executor(app, session)
    if session.provider.capabilities.always_ready:
        from sourceprep_models.swap.executor import LoadReport

        session.provider.describe(request.name)  # an unknown model is still exit 3
        if dry_run:
            out.info(f"{session.endpoint.name} is always ready: nothing to plan for {request.name}")
            return None
        return LoadReport(model=request.name, endpoint=session.endpoint.name, outcome="always-ready")
    with locked(app, session, request.deadline_s):
        repaired = None if dry_run else repair_pins(session, executor)
        loaded = session.loaded()
        plan, prediction, budget = session.plan(request, loaded)
        if dry_run:
            if json_output:
                out.json(render.plan_dict(plan, prediction, budget, loaded))
            else:
                out.data(render.plan_table(plan, prediction, budget, loaded))
            if isinstance(plan, Refusal):
                raise DoesNotFit(plan.reason)
            return None
        if isinstance(plan, Refusal):
            raise DoesNotFit(plan.reason + " (nothing was unloaded)")
        warmer = _warmer(app, session, request.name) if warm else None
        report = executor.load(
            request,
            plan,
            warm=warmer,
            restore=session.restore_requests(),
            unload_timeout_s=session.endpoint.unload_timeout_s or 120.0,
        )
        if repaired is not None:
            report.steps[:0] = repaired.steps
            report.warnings.extend(
                f"pinned {name} is not loaded and does not fit beside what is; it comes back when memory frees"
                for name in repaired.waiting
            )
            report.warnings.extend(
                f"pinned {name} is not on {session.endpoint.name}; pull it there or unpin it"
                for name in repaired.absent
            )
        if report.resident is not None:
            session.remember(session.identity(request.name), prediction.num_ctx, report.resident.size)
        for name in report.pending_restore:
            report.warnings.append(
                f"pinned {name} was evicted to make room for {request.name}; it is reloaded when "
                f"{request.name} is unloaded (`sourceprep-models unload {request.name}`)"
            )
        report.prediction = prediction.bytes
    return report


def _warmer(app: AppContext, session: Session, name: str) -> Callable[[], tuple[float, str] | None] | None:
    """A callable for the executor: pre-read the weights when they are on this machine's disk."""
    from sourceprep_models.warming.prefetch import warm_paths

    paths = session.weight_paths(name)
    if not paths:
        return None
    return lambda: warm_paths(paths)
