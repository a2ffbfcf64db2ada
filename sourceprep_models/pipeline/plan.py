"""Plan a whole run before it starts: every stage's model on every server of this machine, planned
together against the machine's one budget by the pure lookahead planner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sourceprep_models.config.schema import Config
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

# The one host a config describes today: this machine (several machines per config come later).
LOCAL_HOST = "local"


@dataclass
class RunPlan:
    """The whole run's plan: per stage run, its target and (for endpoints that hold models) its step.

    Keys are machine keys (endpoint + identity): the same weights on two servers are two models."""

    runs: list[StageRun]
    targets: dict[str, Target]
    identities: dict[str, str]  # stage id -> machine key of its model
    steps: dict[str, StagePlan | None]  # None: an always-ready endpoint (cloud), nothing to plan
    plans: dict[str, PipelinePlan]  # per host (this machine: "local")
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
                    "action": step.action if step else "ready",
                    "evict": [self.label(key, here) for key in step.evict] if step else [],
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
            "budgets": {name: plan.budget for name, plan in self.plans.items()},
        }


def plan_run(
    config: Config,
    runs: Sequence[StageRun],
    machine: Machine,
    *,
    strategy: str = "lookahead",
    missing_pins_resident: bool = True,
) -> RunPlan:
    """Plan every stage run on this machine as one; raises ``ModelNotFound`` / ``DoesNotFit`` naming the stage.

    Single-model mode (``--single-model`` or ``memory.single_model``) keeps one non-pinned model on the
    machine: before every stage every other non-pinned model leaves, which is the unload-all strategy."""
    if machine.single_model or config.memory.single_model:
        strategy = UNLOAD_ALL
    targets = {run.id: resolve_target(config, run.stage.model) for run in runs}
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
    if planned:
        used = {targets[run.id].endpoint.name for run in planned}
        models, resident = _machine_state(machine, used, names, sizes, groups, missing_pins_resident)
        for run in planned:
            key = keys[run.id]
            if key not in models:
                models[key] = PipelineModel(
                    key=key,
                    name=names[key],
                    size=sizes[key],
                    keep_alive_s=_keep_alive(targets[run.id]),
                    group=groups[key],
                )
        caps = machine.caps()
        result = plan_pipeline(
            [(run.id, keys[run.id]) for run in planned],
            models,
            resident,
            machine.budget().bytes,
            strategy=strategy,
            allow_evict_pinned=config.memory.allow_evict_pinned,
            max_models=caps or None,
        )
        if isinstance(result, PipelineRefusal):
            endpoint = targets[result.stage].endpoint.name if result.stage in targets else "this machine"
            raise DoesNotFit(f"stage {result.stage!r} on {endpoint}: {result.reason}")
        plans[LOCAL_HOST] = result
        for run, step in zip(planned, result.stages, strict=True):
            steps[run.id] = step
        during = preload_during(result.stages, sizes, groups, result.budget, dict(result.caps), result.max_models)
        preloads = {run.id: planned[early].id for run, early in zip(planned, during, strict=True) if early is not None}
        return RunPlan(list(runs), targets, keys, steps, plans, names, sizes, groups, preloads)
    return RunPlan(list(runs), targets, keys, steps, plans, names, sizes, groups)


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
    used: set[str],
    names: dict[str, str],
    sizes: dict[str, int],
    groups: dict[str, str],
    missing_pins_resident: bool,
) -> tuple[dict[str, PipelineModel], list[str]]:
    """The models resident on the machine's servers now (plus configured pins a run would repair first)."""
    models: dict[str, PipelineModel] = {}
    resident: list[str] = []
    for session in machine.memory_sessions():
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
