"""Plan a whole run before it starts: every stage's model on every server, planned by the pure lookahead
planner once per host (machine), each against that host's one budget. A stage's swap only ever
touches its own host; stages on another host are no reason to evict anything here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sourceprep_models.config.schema import LOCAL_HOST, Config
from sourceprep_models.errors import DoesNotFit, ModelNotFound
from sourceprep_models.pipeline.stages import StageRun, Target, resolve_target
from sourceprep_models.planning.lookahead import (
    UNLOAD_ALL,
    PipelineModel,
    PipelinePlan,
    PipelineRefusal,
    StagePlan,
    plan_pipeline,
)
from sourceprep_models.swap.executor import local_identity
from sourceprep_models.swap.residency import Machine


@dataclass
class RunPlan:
    """The whole run's plan: per stage run, its target and (for endpoints that hold models) its step.

    Keys are machine keys (endpoint + identity): the same weights on two servers are two models."""

    runs: list[StageRun]
    targets: dict[str, Target]
    identities: dict[str, str]  # stage id -> machine key of its model
    steps: dict[str, StagePlan | None]  # None: an always-ready endpoint (cloud), nothing to plan
    plans: dict[str, PipelinePlan]  # per host ("local": this machine)
    names: dict[str, str] = field(default_factory=dict)  # key -> server name (for evictions)
    sizes: dict[str, int] = field(default_factory=dict)  # key -> predicted bytes
    groups: dict[str, str] = field(default_factory=dict)  # key -> endpoint name
    # stage id -> the stage id during whose work its load runs in the background (see ``preload_during``)
    preloads: dict[str, str] = field(default_factory=dict)

    @property
    def strategy(self) -> str | None:
        """The strategy the plan followed (single-model mode plays unload-all), None with nothing to plan."""
        return next((plan.strategy for plan in self.plans.values()), None)

    @property
    def loads(self) -> int:
        return sum(plan.loads for plan in self.plans.values())

    @property
    def bytes_loaded(self) -> int:
        return sum(plan.bytes_loaded for plan in self.plans.values())

    def budget_of(self, host: str) -> int:
        """The budget the plan of ``host`` was made against."""
        return self.plans[host].budget

    def host_of(self, run_id: str) -> str:
        return self.targets[run_id].endpoint.host

    def label(self, key: str, endpoint: str) -> str:
        """A model's name for messages; named with its server when it sits on another one than ``endpoint``."""
        name = self.names.get(key, local_identity(key))
        group = self.groups.get(key)
        return name if group in (None, endpoint) else f"{name}@{group}"

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for run in self.runs:
            target = self.targets[run.id]
            step = self.steps.get(run.id)
            here = target.endpoint.name
            rows.append(
                {
                    "stage": run.id,
                    "model": target.name,
                    "endpoint": here,
                    "host": target.endpoint.host,
                    "action": step.action if step else "ready",
                    "evicted": [self.label(key, here) for key in step.evict] if step else [],
                    "evict": [self.label(key, here) for key in step.evict] if step else [],  # deprecated: evicted
                    "restore_after": [self.label(key, here) for key in step.restore_after] if step else [],
                    "prefetch": self.label(step.prefetch, here) if step and step.prefetch else None,
                    "resident": [self.label(key, here) for key in step.resident_after] if step else [],
                    "predicted_bytes": step.bytes_resident if step else 0,
                    "preload_during": self.preloads.get(run.id),
                }
            )
        return {
            "stages": rows,
            "loads": self.loads,
            "bytes_loaded": self.bytes_loaded,
            "hosts": [{"name": name, "budget_bytes": plan.budget} for name, plan in self.plans.items()],
            "budgets": {name: plan.budget for name, plan in self.plans.items()},  # deprecated: hosts (docs/json.md)
        }


def plan_run(
    config: Config,
    runs: Sequence[StageRun],
    machine: Machine,
    *,
    strategy: str = "lookahead",
    missing_pins_resident: bool = True,
) -> RunPlan:
    """Plan every stage run, one plan per host; raises ``ModelNotFound`` / ``DoesNotFit`` naming the stage
    (and the host, when the config has more than one).

    Single-model mode (``--single-model`` or ``memory.single_model``) keeps one non-pinned model on the
    machine: before every stage every other non-pinned model leaves, which is the unload-all strategy."""
    if machine.single_model or config.memory.single_model:
        strategy = UNLOAD_ALL
    targets = _placed(machine, {run.id: resolve_target(config, run.stage.model) for run in runs})
    keys: dict[str, str] = {}
    names: dict[str, str] = {}
    sizes: dict[str, int] = {}
    groups: dict[str, str] = {}
    planned: list[StageRun] = []
    ready: set[str] = set()
    for run in runs:
        target = targets[run.id]
        session = machine.session(target.endpoint)
        try:
            session.provider.describe(target.name)
        except ModelNotFound as exc:
            raise ModelNotFound(f"stage {run.id!r}: {exc.message}") from None
        key = session.key(target.name)
        keys[run.id] = key
        names.setdefault(key, target.name)
        groups.setdefault(key, target.endpoint.name)
        if session.provider.capabilities.always_ready:
            ready.add(run.id)
            continue
        if key not in sizes:
            sizes[key] = session.predict(session.request(target.name, target.spec)).bytes
        planned.append(run)

    steps: dict[str, StagePlan | None] = dict.fromkeys(ready)
    plans: dict[str, PipelinePlan] = {}
    preloads: dict[str, str] = {}
    hosts = {targets[run.id].endpoint.host: None for run in planned}
    for host in hosts:
        on_host = [run for run in planned if targets[run.id].endpoint.host == host]
        used = {targets[run.id].endpoint.name for run in on_host}
        models, resident = _machine_state(machine, host, used, names, sizes, groups, missing_pins_resident)
        for run in on_host:
            key = keys[run.id]
            if key not in models:
                models[key] = PipelineModel(
                    key=key,
                    name=names[key],
                    size=sizes[key],
                    keep_alive_s=_keep_alive(targets[run.id]),
                    group=groups[key],
                )
        caps = machine.caps(host)
        result = plan_pipeline(
            [(run.id, keys[run.id]) for run in on_host],
            models,
            resident,
            machine.budget(host).bytes,
            strategy=strategy,
            allow_evict_pinned=config.memory.allow_evict_pinned,
            max_models=caps or None,
        )
        if isinstance(result, PipelineRefusal):
            endpoint = targets[result.stage].endpoint.name if result.stage in targets else "this machine"
            where = f" (host {host!r}, budget: {machine.budget(host).source})" if _several_hosts(machine) else ""
            raise DoesNotFit(f"stage {result.stage!r} on {endpoint}{where}: {result.reason}")
        plans[host] = result
        for run, step in zip(on_host, result.stages, strict=True):
            steps[run.id] = step
        during = preload_during(result.stages, sizes, groups, result.budget, dict(result.caps), result.max_models)
        preloads.update(_host_preloads(runs, on_host, result.stages, during))
    return RunPlan(list(runs), targets, keys, steps, plans, names, sizes, groups, _one_at_a_time(runs, preloads))


def _host_preloads(
    runs: Sequence[StageRun], on_host: list[StageRun], stages: Sequence[StagePlan], during: Sequence[int | None]
) -> dict[str, str]:
    """One host's preloads as stage ids: during an earlier stage of the same host, as ``preload_during``
    found; and a host's first load, when it evicts nothing, during the stage just before it on another
    host (nothing changes on this host meanwhile, and another machine's memory is no obstacle)."""
    found = {run.id: on_host[early].id for run, early in zip(on_host, during, strict=True) if early is not None}
    first, stage = on_host[0], stages[0]
    position = next(index for index, run in enumerate(runs) if run.id == first.id)
    if first.id not in found and position > 0 and stage.action == "load" and not stage.evict and not stage.expired:
        found[first.id] = runs[position - 1].id
    return found


def _one_at_a_time(runs: Sequence[StageRun], preloads: dict[str, str]) -> dict[str, str]:
    """At most one background load at a time across hosts: where two would overlap, the one needed first
    is kept (the other loads at its own stage, as without overlap)."""
    order = {run.id: index for index, run in enumerate(runs)}
    kept: dict[str, str] = {}
    busy_until = -1
    for target, during in sorted(preloads.items(), key=lambda item: (order[item[0]], order[item[1]])):
        if order[during] >= busy_until:
            kept[target] = during
            busy_until = order[target]
    return kept


def _placed(machine: Machine, targets: dict[str, Target]) -> dict[str, Target]:
    """Each model that several endpoints may serve, placed once for the whole run (a model used by stages
    1 and 5 stays on one server), where it is resident now, else where it fits (``swap.placement``)."""
    from sourceprep_models.swap.placement import place

    chosen: dict[str, Target] = {}
    for run_id, target in targets.items():
        spec = target.spec
        if spec is None or len(spec.candidates) < 2:
            continue
        if spec.key not in chosen:
            chosen[spec.key] = replace(target, endpoint=place(machine, spec).endpoint)
        targets[run_id] = chosen[spec.key]
    return targets


def _several_hosts(machine: Machine) -> bool:
    return machine.hosts() != [LOCAL_HOST]


def preload_during(
    stages: Sequence[StagePlan],
    sizes: Mapping[str, int],
    groups: Mapping[str, str],
    budget: int,
    caps: Mapping[str, int],
    shared_cap: int | None = None,
) -> tuple[int | None, ...]:
    """For each stage, the earliest earlier stage during whose work its load can run in the background, or
    None when it loads at its own start. Pure: the plan's records in, indexes out.

    A load moves earlier only while the models resident during that earlier stage (its own model, the pins,
    every server's models: ``resident_after``) and the incoming one fit the machine's budget and every cap
    together, so nothing has to leave for it. It never moves past a stage that loads a model of its own or puts
    pins back (one background load at a time, and swaps stay in plan order), nor onto a stage that must evict
    or let pins go first: a lazy plan evicts only when room is missing, and that room is missing earlier too.

    >>> a, b, c = (StagePlan(0, "s1", "a", "load", resident_after=("a",)),
    ...     StagePlan(1, "s2", "b", "load", resident_after=("a", "b")),
    ...     StagePlan(2, "s3", "c", "load", evict=("a", "b"), resident_after=("c",)))
    >>> preload_during([a, b, c], {"a": 4, "b": 4, "c": 8}, {}, 8, {})
    (None, 0, None)
    """
    found: list[int | None] = []
    for index, stage in enumerate(stages):
        earliest: int | None = None
        if stage.action == "load" and not stage.evict and not stage.expired:
            for during in range(index - 1, -1, -1):
                before = stages[during]
                if before.restore_after or before.evict_after or stage.model in before.resident_after:
                    break
                if not _fits((*before.resident_after, stage.model), sizes, groups, budget, caps, shared_cap):
                    break
                earliest = during
                if before.action == "load":
                    break  # that stage's own load runs at its start: this one may not pass it
        found.append(earliest)
    return tuple(found)


def _fits(
    keys: Sequence[str],
    sizes: Mapping[str, int],
    groups: Mapping[str, str],
    budget: int,
    caps: Mapping[str, int],
    shared_cap: int | None,
) -> bool:
    if sum(sizes.get(key, 0) for key in keys) > budget:
        return False
    if shared_cap is not None and len(keys) > shared_cap:
        return False
    counts: dict[str, int] = {}
    for key in keys:
        counts[groups.get(key, "")] = counts.get(groups.get(key, ""), 0) + 1
    return all(counts.get(group, 0) <= cap for group, cap in caps.items())


def _machine_state(
    machine: Machine,
    host: str,
    used: set[str],
    names: dict[str, str],
    sizes: dict[str, int],
    groups: dict[str, str],
    missing_pins_resident: bool,
) -> tuple[dict[str, PipelineModel], list[str]]:
    """The models resident on ``host``'s servers now (plus configured pins a run would repair first)."""
    models: dict[str, PipelineModel] = {}
    resident: list[str] = []
    for session in machine.memory_sessions(host):
        pins = session.pinned_identities()
        here = session.endpoint.name
        for loaded in machine.loaded_on(session, required=here in used):
            key = session.key(loaded.name)
            names.setdefault(key, loaded.name)
            groups.setdefault(key, here)
            size = loaded.size or sizes.get(key) or 0
            sizes.setdefault(key, size)
            pinned = session.identity(loaded.name) in pins
            models[key] = PipelineModel(key=key, name=loaded.name, size=size, pinned=pinned, group=here)
            resident.append(key)
        if not missing_pins_resident:
            continue
        for spec in session.pinned_specs():
            key = session.key(spec.name)
            if key in models:
                continue
            try:
                size = session.predict(session.request(spec.name, spec)).bytes
            except ModelNotFound:
                continue  # status/doctor report a pin the server does not have
            names.setdefault(key, spec.name)
            groups.setdefault(key, here)
            sizes.setdefault(key, size)
            models[key] = PipelineModel(key=key, name=spec.name, size=size, pinned=True, group=here)
            resident.append(key)
    return models, resident


def _keep_alive(target: Target) -> float | None:
    alive = target.spec.keep_alive if target.spec else None
    return alive.seconds if alive is not None else None
