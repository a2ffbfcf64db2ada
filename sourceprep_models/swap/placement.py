"""Placement: which of a model's endpoints (``endpoints = [...]``) serves it.

Where the model is already resident, it stays (a swap avoided is the cheapest swap). Otherwise the
endpoint where it fits without evicting anything, then with the fewest bytes to load, then the first
in the config's order. An endpoint that does not answer, or does not have the model, is passed over;
a load with ``--endpoint`` skips placement altogether."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sourceprep_models.config.schema import Config, Endpoint, ModelSpec
from sourceprep_models.errors import ModelNotFound, SourceprepError
from sourceprep_models.planning.load import Refusal
from sourceprep_models.swap.residency import Machine
from sourceprep_models.units import human_bytes

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Placement:
    endpoint: Endpoint
    reason: str  # for the message that says where the model goes and why


def place(machine: Machine, spec: ModelSpec) -> Placement:
    """The endpoint among ``spec.candidates`` that should serve ``spec`` now (see the module docstring)."""
    endpoints = [machine.config.endpoints[name] for name in spec.candidates]
    answering = []
    for endpoint in endpoints:
        session = machine.session(endpoint)
        try:
            loaded = session.loaded()
        except SourceprepError as exc:
            machine.note_unreachable(endpoint.name, exc.message)
            continue
        identity = session.identity(spec.name)
        if any(session.identity(model.name) == identity for model in loaded):
            return Placement(endpoint, f"already resident on {endpoint.name}")
        answering.append((session, loaded))
    ranked = []
    for order, (session, loaded) in enumerate(answering):
        try:
            plan, prediction, _ = session.plan(session.request(spec.name, spec), loaded)
        except ModelNotFound:
            continue  # that server does not have it
        if isinstance(plan, Refusal):
            continue
        ranked.append(((bool(plan.evict), prediction.bytes, order), session.endpoint, plan, prediction.bytes))
    if ranked:
        _, endpoint, plan, size = min(ranked, key=lambda entry: entry[0])
        room = f"evicting {len(plan.evict)}" if plan.evict else "fits without evicting"
        return Placement(endpoint, f"{room} on host {endpoint.host}, {human_bytes(size)} to load")
    # Nothing fits anywhere (or nothing answers): the first that answers, else the first listed, so the load
    # there reports why in its own words (does not fit, unreachable).
    first = answering[0][0].endpoint if answering else endpoints[0]
    return Placement(first, "no listed endpoint has room; trying the first that answers")


def locate(config: Config, name: str, endpoint: str | None) -> tuple[ModelSpec | None, Endpoint]:
    """A configured model (by key or server name) and its endpoint; an unconfigured name on the one
    endpoint that has it (the default first), or on the named/default endpoint."""
    from sourceprep_models.errors import UsageError
    from sourceprep_models.providers import server_facts

    specs = config.find_models(name, endpoint, folds_case=lambda kind: server_facts(kind).names_fold_case)
    if len({spec.endpoint for spec in specs}) > 1:
        where = ", ".join(sorted({spec.endpoint for spec in specs}))
        raise UsageError(f"{name!r} is configured on several endpoints ({where}); pick one with --endpoint")
    if specs:
        if endpoint is None and len(specs[0].candidates) > 1:
            return specs[0], _holding(config, specs[0])
        return specs[0], config.endpoints[endpoint or specs[0].endpoint]
    if endpoint is not None:
        return None, config.endpoints[endpoint]
    default = config.endpoints[config.default_endpoint]
    if len(config.endpoints) == 1:
        return None, default
    from sourceprep_models.providers import create_provider

    ordered = [default] + [ep for ep in config.endpoints.values() if ep.name != default.name]
    serving = []
    for candidate in ordered:
        provider = create_provider(candidate)
        try:
            provider.describe(name)
            serving.append(candidate)
        except SourceprepError:
            continue  # not there, or that server is down: the others may still have it
        finally:
            provider.close()
    if len(serving) > 1:
        where = ", ".join(ep.name for ep in serving)
        raise UsageError(f"{name!r} is offered by several endpoints ({where}); pick one with --endpoint")
    return None, serving[0] if serving else default


def _holding(config: Config, spec: ModelSpec) -> Endpoint:
    """The first of a placed model's endpoints that has it loaded (servers that do not answer are passed
    over), else the first listed: where `unload` and `pin` find a model that several endpoints may serve."""
    from sourceprep_models.providers import create_provider

    for name in spec.candidates:
        provider = create_provider(config.endpoints[name])
        try:
            if any(model.name == spec.name for model in provider.list_loaded()):
                return config.endpoints[name]
        except SourceprepError:
            continue
        finally:
            provider.close()
    return config.endpoints[spec.candidates[0]]


def per_host(items: Sequence[T], host_of: Callable[[T], str], run: Callable[[list[T]], list[R]]) -> list[R]:
    """``run`` once per host over that host's items (in order), the hosts at the same time: a swap on one
    machine never waits for another machine's. Every host finishes what it started (each load restores
    the pins it evicted, also when it fails, and leaving the pool waits for all, also on Ctrl-C, so a load
    is never cut off half-way) before the first failure is raised."""
    by_host: dict[str, list[T]] = {}
    for item in items:
        by_host.setdefault(host_of(item), []).append(item)
    if len(by_host) <= 1:
        return run(list(items))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(by_host), thread_name_prefix="host") as pool:
        futures = [pool.submit(run, group) for group in by_host.values()]
        errors = [future.exception() for future in futures]
    first = next((error for error in errors if error is not None), None)
    if first is not None:
        raise first
    return [result for future in futures for result in future.result()]
