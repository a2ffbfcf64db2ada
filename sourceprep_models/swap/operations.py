"""What the commands that change residency do, one function each: load (or preview a load), unload,
pin, unpin and repair pins. Each takes the locks it needs (every server of the machine, in one order),
asks the planner, hands the plan to the executor and returns a record for ``ui/`` to show.

A load on one server may evict from another: the plan covers the whole machine (``residency``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sourceprep_models.config.schema import LOCAL_HOST, Config, Endpoint, ModelSpec
from sourceprep_models.constants import DEFAULT_UNLOAD_TIMEOUT_S
from sourceprep_models.errors import DoesNotFit, SourceprepError
from sourceprep_models.memory.sizing import Budget, Prediction
from sourceprep_models.planning.load import Plan, Refusal, Resident
from sourceprep_models.providers.base import LoadedModel, LoadRequest
from sourceprep_models.swap.busy import spare_the_busy
from sourceprep_models.swap.executor import LoadReport, UnloadReport
from sourceprep_models.swap.hooks import Hooks as Hooks  # re-exported, as before it had its own module
from sourceprep_models.swap.pins import Repair, repair_pins
from sourceprep_models.swap.residency import Machine, Session
from sourceprep_models.swap.residency import open_machine as open_machine  # re-exported, as above
from sourceprep_models.units import KeepAlive

# What an unpinned model gets when its config names no keep_alive: Ollama's own default (ollama.md §4.10).
UNPINNED_KEEP_ALIVE = KeepAlive(300.0)
# How long status/unload wait for another process's swap before giving up on repairing pins.
REPAIR_LOCK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LoadOrder:
    """A load as the user asked for it."""

    name: str
    spec: ModelSpec | None
    endpoint: Endpoint
    keep_alive: KeepAlive | None = None
    context_length: int | None = None
    deadline_s: float | None = None
    # Several endpoints may serve it (a model's ``endpoints``, no --endpoint): placed when the load runs.
    choices: tuple[str, ...] = ()


@dataclass
class LoadPreview:
    """A dry run: the plan for the whole machine, what it predicts, and what is loaded where now."""

    plan: Plan | Refusal
    prediction: Prediction
    budget: Budget
    loaded: list[tuple[str, LoadedModel]]  # (endpoint, model) on every server of the machine
    endpoint: str
    always_ready: bool = False
    host: str = LOCAL_HOST  # the machine whose budget the plan is made against

    @property
    def refused(self) -> Refusal | None:
        return self.plan if isinstance(self.plan, Refusal) else None

    def to_dict(self) -> dict[str, Any]:
        data = self.plan.to_dict()
        evicted = [] if isinstance(self.plan, Refusal) else list(self.plan.evict)
        data.update(
            endpoint=self.endpoint,
            host=self.host,
            evictions=[{"model": v.name, "endpoint": v.group or self.endpoint, "pinned": v.pinned} for v in evicted],
            prediction_source=self.prediction.source,
            context_length=self.prediction.num_ctx,
            budget=self.budget.to_dict(),
            loaded=[model.name for _, model in self.loaded],
            loaded_on=[{"model": model.name, "endpoint": where, "size": model.size} for where, model in self.loaded],
        )
        # The names every --json document uses (docs/json.md); `evict`, `predicted_size` and the `budget`
        # object stay for older scripts, deprecated.
        data.update(
            evicted=[victim.name for victim in evicted],
            predicted_bytes=data.get("predicted_size"),
            budget_bytes=self.budget.bytes,
            budget_source=self.budget.source,
        )
        return data


def load(
    config: Config,
    orders: Sequence[LoadOrder],
    *,
    dry_run: bool = False,
    warm: bool = True,
    single_model: bool = False,
    hooks: Hooks | None = None,
) -> list[LoadReport | LoadPreview | None]:
    """Plan and (unless ``dry_run``) make every model of ``orders`` resident, one result each (None: a dry
    run on a cloud endpoint). Several models are planned together first: if one cannot fit beside the
    ones before it, nothing is touched."""
    with open_machine(config, hooks=hooks, single_model=single_model) as machine:
        return _load(machine, orders, dry_run=dry_run, warm=warm, hooks=hooks)


def _load(
    machine: Machine,
    orders: Sequence[LoadOrder],
    *,
    dry_run: bool = False,
    warm: bool = True,
    hooks: Hooks | None = None,
) -> list[LoadReport | LoadPreview | None]:
    hooks = hooks or Hooks()
    results: list[LoadReport | LoadPreview | None] = []
    local: list[tuple[int, Session, LoadRequest]] = []
    for order in orders:
        session = machine.session(_placed(machine, order, hooks))
        request = session.request(
            order.name,
            order.spec,
            keep_alive=order.keep_alive,
            context_length=order.context_length,
            deadline_s=order.deadline_s,
        )
        results.append(None)
        if session.provider.capabilities.always_ready:
            session.provider.describe(request.name)  # an unknown model is still exit 3
            if dry_run:
                hooks.info(f"{session.endpoint.name} is always ready: nothing to plan for {request.name}")
            else:
                results[-1] = LoadReport(model=request.name, endpoint=session.endpoint.name, outcome="always-ready")
            continue
        local.append((len(results) - 1, session, request))
    if not local:
        return results
    hosts = {session.host for _, session, _ in local}  # only these hosts' memory changes: only their locks
    with machine.locked(max(request.deadline_s for _, _, request in local), hooks.waiting, hosts):
        repaired = None if dry_run else repair_all(machine, only=machine.endpoints_on(hosts))
        previews = _plan_together(machine, local)
        refused = next((preview.refused for preview in previews.values() if preview.refused is not None), None)
        if refused is not None and not dry_run:
            raise DoesNotFit(refused.reason + " (nothing was unloaded)")
        if dry_run:
            for index, preview in previews.items():
                results[index] = preview
            return results
        for index, report in _load_per_host(machine, local, warm=warm, hooks=hooks):
            if repaired is not None and index == local[0][0]:
                report.steps[:0] = repaired.steps
                report.warnings.extend(_repair_warnings(repaired))
            results[index] = report
    return results


def _load_per_host(
    machine: Machine, local: list[tuple[int, Session, LoadRequest]], *, warm: bool, hooks: Hooks
) -> list[tuple[int, LoadReport]]:
    """The loads in order on each host, the hosts at the same time (``placement.per_host``)."""
    from sourceprep_models.swap.placement import per_host

    def one_host(items: list[tuple[int, Session, LoadRequest]]) -> list[tuple[int, LoadReport]]:
        done = []
        protected: frozenset[str] = frozenset()
        for index, session, request in items:
            report, key = _load_one(machine, session, request, protected, warm=warm, hooks=hooks)
            protected |= {key}
            done.append((index, report))
        return done

    return per_host(local, lambda item: item[1].host, one_host)


def _placed(machine: Machine, order: LoadOrder, hooks: Hooks) -> Endpoint:
    """The endpoint the order goes to: its own, or where placement puts a model several may serve."""
    if len(order.choices) < 2 or order.spec is None:
        return order.endpoint
    from sourceprep_models.swap.placement import place

    placement = place(machine, order.spec)
    hooks.info(f"{order.name}: placed on {placement.endpoint.name} ({placement.reason})")
    return placement.endpoint


def _plan_together(machine: Machine, local: list[tuple[int, Session, LoadRequest]]) -> dict[int, LoadPreview]:
    """Each load's plan on the machine as the loads before it will have left it (earlier ones protected);
    the first that cannot fit refuses them all before anything is touched."""
    previews: dict[int, LoadPreview] = {}
    world: list[Resident] | None = None
    protected: frozenset[str] = frozenset()
    for index, session, request in local:
        loaded = session.loaded()
        demand, _, wanted = machine.demand(session, request)
        current = world if world is not None else machine.world(session, loaded, wanted)
        plan, prediction, budget = machine.plan(session, request, loaded, protect=protected, residents=current)
        previews[index] = LoadPreview(
            plan,
            prediction,
            budget,
            _loaded_everywhere(machine, session, loaded),
            session.endpoint.name,
            host=session.host,
        )
        if isinstance(plan, Refusal):
            if len(local) > 1:
                others = ", ".join(other.name for _, _, other in local if other is not request)
                plan = dataclasses.replace(plan, reason=f"{plan.reason} (planned together with {others})")
                previews[index] = dataclasses.replace(previews[index], plan=plan)
            return previews
        leaving = {victim.key for victim in plan.evict}
        world = [resident for resident in current if resident.key not in leaving and resident.key != demand.key]
        world.append(Resident(demand.key, demand.name, demand.size, True, demand.options_key, group=demand.group))
        protected |= {demand.key}
    return previews


def _load_one(
    machine: Machine,
    session: Session,
    request: LoadRequest,
    protected: frozenset[str],
    *,
    warm: bool,
    hooks: Hooks,
) -> tuple[LoadReport, str]:
    """One load, its models loaded earlier by this command ``protected``: plan, say what leaves, execute."""
    loaded = session.loaded()
    plan, prediction, budget = session.plan(request, loaded, protect=protected)
    if isinstance(plan, Refusal):
        raise DoesNotFit(plan.reason + " (nothing was unloaded)")
    # A busy victim is swapped for idle ones where the load still fits (swap/busy.py); not in single-model
    # mode, where every other model must go, so the busy one is waited for.
    if plan.evict and not (machine.single_model or machine.config.memory.single_model):
        providers = {other.endpoint.name: other.provider for other in machine.memory_sessions(session.host)}

        def replan(busy: frozenset[str]) -> Plan | Refusal:
            return session.plan(request, loaded, protect=protected | busy)[0]

        plan = spare_the_busy(plan, providers, session.endpoint.name, replan, hooks.info)
    for victim in plan.evict:
        if victim.group and victim.group != session.endpoint.name:
            hooks.info(
                f"evicting {victim.name} from {victim.group} to fit {request.name} on {session.endpoint.name} "
                f"(one budget for this machine's servers: {_human(budget.bytes)})"
            )
    paths = session.weight_paths(request.name) if warm or hooks.progress else []
    report = machine.executor(session).load(
        request,
        plan,
        warm=_warmer(paths, session.direct_io(request.name) if paths else None) if warm else None,
        restore=machine.restore_requests(),
        unload_timeout_s=session.endpoint.unload_timeout_s or DEFAULT_UNLOAD_TIMEOUT_S,
        progress=hooks.progress,
        weights=paths,
    )
    if report.resident is not None:
        measured = report.resident.size
        if measured and not session.provider.capabilities.reports_memory:
            # Measured from outside (a llama-server child's RSS right after its load), the figure misses the
            # compute buffer the first batch touches: keep the larger of it and the estimate.
            measured = max(measured, prediction.bytes)
        session.remember(session.identity(request.name), prediction.num_ctx, measured)
    for name in report.pending_restore:
        report.warnings.append(
            f"pinned {name} was evicted to make room for {request.name}; it is reloaded when "
            f"{request.name} is unloaded (`sourceprep-models unload {request.name}`)"
        )
    report.prediction = prediction.bytes
    report.host = session.host
    return report, plan.incoming.key


@dataclass
class UnloadResult:
    reports: list[UnloadReport] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    still_pinned: list[str] = field(default_factory=list)  # unloaded, but the config pins them
    kept_pins: list[tuple[str, str]] = field(default_factory=list)  # (endpoint, model) `--all` left loaded

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoints": [report.to_dict() for report in self.reports],
            "restored_pins": self.restored,
            "kept_pins": [{"model": model, "endpoint": endpoint} for endpoint, model in self.kept_pins],
        }


def unload(
    config: Config,
    work: Mapping[str, list[str] | None],
    *,
    deadline_s: float | None = None,
    include_pins: bool = False,
    hooks: Hooks | None = None,
    progress: Callable[[str], contextlib.AbstractContextManager[Any]] | None = None,
) -> UnloadResult:
    """Unload the named models per endpoint (None: everything there but its pins, unless ``include_pins``),
    then bring back evicted pins."""
    hooks = hooks or Hooks()
    with open_machine(config, hooks=hooks) as machine:
        return _unload(machine, work, deadline_s, include_pins, hooks, progress)


def _unload(
    machine: Machine,
    work: Mapping[str, list[str] | None],
    deadline_s: float | None,
    include_pins: bool,
    hooks: Hooks,
    progress: Callable[[str], contextlib.AbstractContextManager[Any]] | None,
) -> UnloadResult:
    result = UnloadResult()
    sessions = [machine.session(endpoint) for endpoint in work]
    timeout_s = deadline_s or max(s.endpoint.unload_timeout_s or DEFAULT_UNLOAD_TIMEOUT_S for s in sessions)
    hosts = {session.host for session in sessions}
    with machine.locked(timeout_s, hooks.waiting, hosts):
        for session in sessions:
            names = work[session.endpoint.name]
            if names is None and not include_pins:
                names, kept = _all_but_pins(session)
                result.kept_pins += [(session.endpoint.name, name) for name in kept]
            # The configured pins this unload takes out (named, or all of them with --include-pins).
            leaving = {session.identity(model.name) for model in session.loaded()} if names is None else set()
            leaving |= {session.identity(name) for name in names or []}
            result.still_pinned += [s.name for s in session.pinned_specs() if session.identity(s.name) in leaving]
            label = "everything" if names is None else ", ".join(names)
            spinner = progress(f"unloading {label} on {session.endpoint.name}…") if progress else None
            with spinner or contextlib.nullcontext():
                endpoint_timeout = deadline_s or session.endpoint.unload_timeout_s or DEFAULT_UNLOAD_TIMEOUT_S
                report = machine.executor(session).unload(names, timeout_s=endpoint_timeout)
            result.reports.append(report)
        if any(names is not None for names in work.values()):
            # Pins evicted earlier for heavy work come back now that memory is free, on every server.
            skip = {
                (session.endpoint.name, session.identity(name))
                for session in sessions
                for name in work[session.endpoint.name] or []
            }
            repaired = repair_all(machine, skip, only=machine.endpoints_on(hosts))
            result.reports[-1].steps.extend(repaired.steps)
            result.restored = repaired.repaired
    for name in result.still_pinned:
        hooks.warn(
            f"{name} is pinned in the config; the next load or `sourceprep-models pin --repair` brings it back "
            f"(unpin with `sourceprep-models pin --remove {name}`)"
        )
    for endpoint, name in result.kept_pins:
        hooks.info(f"kept pinned {name} on {endpoint} (unload it by name, or --all --include-pins)")
    return result


def _all_but_pins(session: Session) -> tuple[list[str] | None, list[str]]:
    """What `unload --all` unloads on one server, and the pins it keeps (the config's and the server's own).

    None when nothing is pinned there, so that a server with a one-request "unload everything" uses it."""
    pins = session.pinned_identities()
    loaded = session.loaded()
    kept = [model.name for model in loaded if model.pinned or session.identity(model.name) in pins]
    if not kept:
        return None, []
    return [model.name for model in loaded if model.name not in kept], kept


def repair(machine: Machine, endpoints: list[str] | None = None, *, hooks: Hooks | None = None) -> Repair:
    """Reload pins the servers lost (a restart, another client's keep_alive), where they fit; a server
    that fails is skipped (``status --repair``: its table row reports the problem)."""
    hooks = hooks or Hooks()
    if not any(spec.always_available for spec in machine.config.models.values()):
        return Repair()
    try:
        with machine.locked(REPAIR_LOCK_TIMEOUT_S, hooks.waiting, machine.hosts_of(endpoints)):
            return repair_all(machine, only=endpoints)
    except SourceprepError:
        return Repair()  # the status table reports each endpoint's own problem


@dataclass
class PinRepair:
    """`pin --repair`: what came back, what does not fit beside what is loaded, what the server lacks."""

    repair: Repair

    def to_dict(self) -> dict[str, Any]:
        return {
            "repaired": [{"model": name, "endpoint": self.repair.where.get(name)} for name in self.repair.repaired],
            "waiting": [{"model": name, "endpoint": self.repair.where.get(name)} for name in self.repair.waiting],
            "absent": [{"model": name, "endpoint": self.repair.where.get(name)} for name in self.repair.absent],
            "steps": [step.to_dict() for step in self.repair.steps],
        }


def repair_lost_pins(config: Config, endpoints: list[str] | None, *, hooks: Hooks | None = None) -> PinRepair:
    """Put back every pin a server lost, where it fits beside what is loaded (nothing is evicted for it);
    a server that cannot be asked fails the command."""
    hooks = hooks or Hooks()
    with (
        open_machine(config, hooks=hooks) as machine,
        machine.locked(REPAIR_LOCK_TIMEOUT_S, hooks.waiting, machine.hosts_of(endpoints)),
    ):
        return PinRepair(repair_all(machine, only=endpoints, strict=True))


@dataclass
class PinResult:
    model: str
    endpoint: str
    pinned: bool
    config: str
    report: LoadReport | None = None

    def to_dict(self) -> dict[str, Any]:
        extra = {"pinned": self.pinned, "config": self.config}
        if self.report is None:
            return {"model": self.model, "endpoint": self.endpoint, **extra}
        return {**self.report.to_dict(), **extra}


def set_pin(
    config: Config,
    order: LoadOrder,
    *,
    pinned: bool,
    config_edit: Callable[[], Config],
    config_path: str,
    hooks: Hooks | None = None,
) -> PinResult:
    """Pin: record ``order`` as always available (``config_edit`` writes the config and returns it
    re-read), load it and keep it forever, refused before anything is written when it can never fit.
    Unpin: the config first, then the model's keep-alive back to an ordinary one, under the locks."""
    with open_machine(config, hooks=hooks) as machine:
        change = _pin if pinned else _unpin
        return change(machine, order, config_edit, config_path, hooks)


def _pin(
    machine: Machine, order: LoadOrder, config_edit: Callable[[], Config], config_path: str, hooks: Hooks | None
) -> PinResult:
    from sourceprep_models.errors import Unsupported

    session = machine.session(order.endpoint)
    name = order.spec.name if order.spec else order.name
    session.provider.describe(name)  # unknown model → exit 3 before the config is touched
    if not session.provider.capabilities.can_pin:
        raise Unsupported(f"{session.provider.pin_advice(name)} (the config is unchanged)")
    trial = session.request(name, order.spec, context_length=order.context_length, deadline_s=order.deadline_s)
    with machine.locked(trial.deadline_s, (hooks or Hooks()).waiting, [session.host]):
        plan, _, _ = session.plan(trial, session.loaded())
    if isinstance(plan, Refusal):
        raise DoesNotFit(plan.reason + " (not pinned; the config is unchanged)")
    if session.provider.capabilities.pins_on_server:
        session.provider.set_pinned(name, True)  # first: if the server refuses (no admin access), the config stays
    machine.reconfigure(config_edit())
    spec = machine.config.models.get(order.spec.key if order.spec else order.name)
    pinned = dataclasses.replace(order, name=name, spec=spec, keep_alive=None)
    (report,) = _load(machine, [pinned], hooks=hooks)
    assert isinstance(report, LoadReport)
    return PinResult(name, order.endpoint.name, True, config_path, report)


def _unpin(
    machine: Machine, order: LoadOrder, config_edit: Callable[[], Config], config_path: str, hooks: Hooks | None
) -> PinResult:
    session = machine.session(order.endpoint)
    name = order.spec.name if order.spec else order.name
    session.provider.describe(name)
    machine.reconfigure(config_edit())
    key = order.spec.key if order.spec else order.name
    request = session.request(name, machine.config.models.get(key))
    if request.keep_alive is None:
        request = dataclasses.replace(request, keep_alive=UNPINNED_KEEP_ALIVE)
    with machine.locked(request.deadline_s, (hooks or Hooks()).waiting, [session.host]):
        # A finite keep_alive replaces the server's "forever" (ollama.md §3.2); no reload happens.
        if session.identity(name) in {session.identity(m.name) for m in session.loaded()}:
            machine.executor(session).restore([request], detail="keep-alive reset")
        if session.provider.capabilities.pins_on_server:
            session.provider.set_pinned(name, False)
    return PinResult(name, order.endpoint.name, False, config_path)


# -- helpers -----------------------------------------------------------------------------------------


def repair_all(
    machine: Machine,
    skip: set[tuple[str, str]] | None = None,
    only: list[str] | None = None,
    *,
    strict: bool = False,
) -> Repair:
    """Repair lost pins on every memory server of the machine (the caller holds the locks)."""
    total = Repair()
    for session in machine.memory_sessions():
        if only is not None and session.endpoint.name not in only:
            continue
        if not session.pinned_specs():
            continue
        local_skip = {identity for endpoint, identity in skip or set() if endpoint == session.endpoint.name}
        try:
            part = repair_pins(session, machine.executor(session), skip=local_skip)
        except SourceprepError as exc:
            if strict:
                raise
            machine.note_unreachable(session.endpoint.name, exc.message)
            continue
        total.steps += part.steps
        total.repaired += part.repaired
        total.waiting += part.waiting
        total.absent += part.absent
        total.where.update(part.where)
    return total


def _repair_warnings(repaired: Repair) -> list[str]:
    return [
        f"pinned {name} is not loaded and does not fit beside what is; it comes back when memory frees"
        for name in repaired.waiting
    ] + [
        f"pinned {name} is not on {repaired.where.get(name, 'its endpoint')}; pull it there or unpin it"
        for name in repaired.absent
    ]


def _loaded_everywhere(
    machine: Machine, here: Session, loaded_here: list[LoadedModel]
) -> list[tuple[str, LoadedModel]]:
    rows: list[tuple[str, LoadedModel]] = []
    for session in machine.memory_sessions(here.host):  # other hosts' memory is not this load's business
        if session.endpoint.name == here.endpoint.name:
            rows += [(session.endpoint.name, model) for model in loaded_here]
        else:
            try:
                rows += [(session.endpoint.name, model) for model in session.loaded()]
            except SourceprepError:
                continue
    return rows


def _warmer(paths: list[Any], direct_io: str | None) -> Callable[[], tuple[float, str] | None] | None:
    """A callable for the executor: pre-read the weights when they are on this machine's disk, unless the
    server reads them with direct I/O (then the step only says why it was skipped)."""
    if not paths:
        return None
    from sourceprep_models.warming.prefetch import skip_direct_io, warm_paths

    if direct_io is not None:
        return lambda: skip_direct_io(direct_io)
    return lambda: warm_paths(paths)


def _human(size: int) -> str:
    from sourceprep_models.units import human_bytes

    return human_bytes(size)
