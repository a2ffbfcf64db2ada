"""The machine's view across all of its model servers: what holds memory, which models are pinned,
and the one budget they share.

Memory belongs to the machine, not to a server: LM Studio and Ollama on one Mac draw on one unified
memory that neither sees whole, and so do Ollama and a llama.cpp router on one NVIDIA card. So every
plan is made by a ``Machine`` over every endpoint of the config that keeps models resident (cloud
endpoints, ``capabilities.always_ready``, hold nothing and use no budget), and a victim may sit on
another server than the model coming in.

A ``Session`` is one endpoint's part of that view: names, identities, requests, predictions and pins
on that server. Both only read; the planner decides and the executor acts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sourceprep_models.config.schema import LOCAL_HOST, Config, Endpoint, ModelSpec
from sourceprep_models.constants import DEFAULT_LOAD_TIMEOUT_S
from sourceprep_models.errors import ModelNotFound, SourceprepError
from sourceprep_models.memory.sizing import (
    Budget,
    Prediction,
    SizeBook,
    host_budget,
    memory_budget,
    predict,
    reported_budget,
)
from sourceprep_models.providers.base import LoadedModel, LoadRequest, Provider
from sourceprep_models.swap.hooks import Hooks
from sourceprep_models.units import KeepAlive, human_bytes

# The planner and the executor are imported inside the methods that plan or act: `status` opens a
# machine and only looks, and starts measurably faster without them (benchmarks/startup.py).
if TYPE_CHECKING:
    from sourceprep_models.planning.load import Demand, Plan, Refusal, Resident
    from sourceprep_models.swap.executor import Executor, Step
    from sourceprep_models.swap.locks import LockWait

FOREVER = KeepAlive(None)


@dataclass
class Session:
    """One endpoint of the machine: its provider, its names and identities, its configured pins."""

    config: Config
    endpoint: Endpoint
    provider: Provider
    machine: Machine
    _identities: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        """The machine this server runs on: its memory is what a load here competes for."""
        return self.endpoint.host

    @property
    def hardware(self) -> dict[str, Any]:
        return self.machine.hardware_of(self.host)

    @property
    def book(self) -> SizeBook:
        return self.machine.book

    @property
    def single_model(self) -> bool:
        return self.machine.single_model

    # -- what is where ---------------------------------------------------------------------------

    def identity(self, name: str) -> str:
        if name not in self._identities:
            try:
                self._identities[name] = self.provider.describe(name).identity
            except ModelNotFound:
                self._identities[name] = f"name:{name}"
        return self._identities[name]

    def key(self, name: str) -> str:
        """The model's key in machine-wide plans: its identity on this endpoint."""
        from sourceprep_models.swap.executor import machine_key

        return machine_key(self.endpoint.name, self.identity(name))

    def loaded(self) -> list[LoadedModel]:
        """What holds memory now; parked or sleeping models do not (they are woken by a load)."""
        return [model for model in self.provider.list_loaded() if model.occupies_memory]

    def pinned_specs(self) -> list[ModelSpec]:
        return [
            spec
            for spec in self.config.models.values()
            if spec.always_available and spec.endpoint == self.endpoint.name
        ]

    def pinned_identities(self) -> set[str]:
        return {self.identity(spec.name) for spec in self.pinned_specs()}

    def residents(self, loaded: list[LoadedModel], wanted_ctx: int | None = None) -> list[Resident]:
        """This endpoint's loaded models as the planner sees them (keys unique across the machine)."""
        from sourceprep_models.planning.load import Resident
        from sourceprep_models.swap.executor import machine_key

        pins = self.pinned_identities()
        residents = []
        for model in loaded:
            identity = self.identity(model.name)
            options = f"ctx={model.context_length}" if wanted_ctx is not None else ""
            residents.append(
                Resident(
                    machine_key(self.endpoint.name, identity),
                    model.name,
                    model.size or 0,
                    identity in pins,
                    options,
                    group=self.endpoint.name,
                )
            )
        return residents

    # -- requests, predictions, plans ------------------------------------------------------------

    def request(
        self,
        name: str,
        spec: ModelSpec | None,
        *,
        keep_alive: KeepAlive | None = None,
        context_length: int | None = None,
        deadline_s: float | None = None,
    ) -> LoadRequest:
        """The exact request the real traffic will match: the spec's options, a pin re-asserted."""
        alive = keep_alive if keep_alive is not None else (spec.keep_alive if spec else None)
        if spec is not None and spec.always_available:
            alive = FOREVER  # a finite keep_alive from any request would drop the pin (ollama.md §3.2)
        options = spec.runner_options() if spec else {}
        if context_length is not None:
            options["num_ctx"] = context_length
        embedding = None if spec is None or spec.kind is None else spec.kind == "embedding"
        return LoadRequest(
            name=spec.name if spec else name,
            keep_alive=alive,
            options=options,
            embedding=embedding,
            deadline_s=deadline_s or self.endpoint.load_timeout_s or DEFAULT_LOAD_TIMEOUT_S,
        )

    def budget(self) -> Budget:
        return self.machine.budget(self.host)

    def predict(self, request: LoadRequest) -> Prediction:
        info = self.provider.describe(request.name)
        ctx = request.options.get("num_ctx")
        return predict(
            info.identity,
            info.size,
            info.trained_context,
            ctx if isinstance(ctx, int) else None,
            self.hardware,
            self.book,
            lambda: self.provider.gguf_metadata(request.name),
            info.runner,
        )

    def plan(
        self, request: LoadRequest, loaded: list[LoadedModel], *, protect: frozenset[str] = frozenset()
    ) -> tuple[Plan | Refusal, Prediction, Budget]:
        """What must leave, on any server of this machine, so ``request`` fits here."""
        return self.machine.plan(self, request, loaded, protect=protect)

    def max_loaded(self) -> int | None:
        """The server's own cap on loaded models (llama.cpp --models-max), if it has and reports one."""
        return self.provider.max_loaded()

    def restore_requests(self) -> dict[str, LoadRequest]:
        """For each configured pin, by the name the server lists it under, the request that reloads it."""
        return {spec.name: self.request(spec.name, spec) for spec in self.pinned_specs()}

    def weight_paths(self, name: str) -> list[Path]:
        """The weight files to warm, when they are on this machine's disk."""
        if self.host != LOCAL_HOST:
            return []  # the paths a remote server reports are on its own disk, not this one's page cache
        try:
            return self.provider.weight_paths(name)
        except Exception:  # warming is an optimisation: any trouble finding the files just skips it
            return []

    def direct_io(self, name: str) -> str | None:
        """Why the server reads this model with direct I/O, bypassing the page cache (so warming is skipped)."""
        try:
            return self.provider.direct_io(name, self.hardware)
        except Exception:  # like weight_paths: not knowing only means the warm happens as before
            return None

    def remember(self, identity: str, num_ctx: int, size: int | None) -> None:
        if size:
            self.book.put(identity, num_ctx, size)

    # -- pins --------------------------------------------------------------------------------------

    def lost_pins(self, loaded: list[LoadedModel]) -> list[tuple[ModelSpec, str]]:
        """Configured pins the server no longer keeps: (spec, "missing" | "expiring")."""
        by_identity = {self.identity(model.name): model for model in loaded}
        lost = []
        for spec in self.pinned_specs():
            model = by_identity.get(self.identity(spec.name))
            if model is None:
                lost.append((spec, "missing"))
            elif model.expires_at is not None and not model.pinned:
                # Another client sent a finite keep_alive and replaced ours (ollama.md §3.2). Servers
                # that report no expiry at all (LM Studio) cannot lose a pin this way.
                lost.append((spec, "expiring"))
        return lost


class Machine:
    """Every endpoint of the config that keeps models in memory, grouped by the host (machine) each runs
    on: one budget per host, shared by that host's servers. ``local`` is this machine, probed; another
    host's budget is its ``[hosts.NAME]`` table (unknown when it has none: its servers decide).

    A plan for a load looks only at the host the load runs on: a load there never evicts elsewhere."""

    def __init__(
        self,
        config: Config,
        make_provider: Callable[[Endpoint], Provider],
        hardware: dict[str, Any],
        book: SizeBook,
        *,
        single_model: bool = False,
        on_step: Callable[[Step], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.hardware = hardware
        self.book = book
        self.single_model = single_model
        self._make_provider = make_provider
        self._on_step = on_step
        self._on_notice = on_notice
        self._sessions: dict[str, Session] = {}
        # Endpoints that did not answer while the machine was being looked at: their models are not counted.
        self.unreachable: dict[str, str] = {}
        self._reported: dict[str, Budget | None] = {}  # host -> the budget its servers report, asked once

    def session(self, endpoint: Endpoint | str) -> Session:
        name = endpoint if isinstance(endpoint, str) else endpoint.name
        if name not in self._sessions:
            self._sessions[name] = Session(
                self.config, self.config.endpoints[name], self._make_provider(self.config.endpoints[name]), self
            )
        session = self._sessions[name]
        session.config = self.config
        return session

    def reconfigure(self, config: Config) -> None:
        """A re-read config (pipelines re-read it between stages): sessions keep their providers."""
        self.config = config
        for name in [name for name in self._sessions if name not in config.endpoints]:
            self._sessions.pop(name).provider.close()

    def memory_sessions(self, host: str | None = None) -> list[Session]:
        """The endpoints whose models occupy memory (not cloud endpoints), in config order; ``host``: on that
        host only."""
        return [
            session
            for session in (self.session(name) for name in self.config.endpoints)
            if not session.provider.capabilities.always_ready and host in (None, session.host)
        ]

    def hosts(self) -> list[str]:
        """The hosts whose servers hold models, this machine first, then in config order."""
        found = {session.host: None for session in self.memory_sessions()}
        return sorted(found, key=lambda host: host != LOCAL_HOST)

    def hardware_of(self, host: str) -> dict[str, Any]:
        """What the probe found, for this machine; nothing is known of another one's hardware."""
        return self.hardware if host == LOCAL_HOST else {}

    def budget(self, host: str = LOCAL_HOST) -> Budget:
        spec = self.config.hosts.get(host)
        if host == LOCAL_HOST or spec is None:
            return memory_budget(self.config.memory, self.hardware)
        budget = host_budget(spec)
        if budget.total is None:
            budget = self._reported_budget(host, spec.headroom_bytes) or budget
        return budget

    def _reported_budget(self, host: str, headroom: int) -> Budget | None:
        """A host with no configured budget, whose every server reports what its models may occupy (oMLX's
        memory ceiling): the sum of those. One server that reports nothing leaves the host unknown: no
        guessing."""
        if host not in self._reported:
            ceilings = {
                session.endpoint.name: self._answer(session, session.provider.memory_ceiling, None)
                for session in self.memory_sessions(host)
            }
            self._reported[host] = reported_budget(ceilings, headroom)
        return self._reported[host]

    def caps(self, host: str | None = None) -> dict[str, int]:
        """Each server's own cap on loaded models, by endpoint (llama.cpp --models-max)."""
        caps = {}
        for session in self.memory_sessions(host):
            cap = self._answer(session, session.max_loaded, None)
            if cap is not None:
                caps[session.endpoint.name] = cap
        return caps

    def loaded_on(self, session: Session, *, required: bool = True) -> list[LoadedModel]:
        """What ``session``'s server holds; a server that is not ``required`` and is down counts as empty."""
        return session.loaded() if required else self._answer(session, session.loaded, [])

    def residents(self, *, besides: str | None = None, host: str | None = None) -> list[Resident]:
        """Everything holding memory (``besides``: except that endpoint's models; ``host``: on that host)."""
        residents: list[Resident] = []
        for session in self.memory_sessions(host):
            if session.endpoint.name != besides:
                residents += session.residents(self._answer(session, session.loaded, []))
        return residents

    def plan(
        self,
        here: Session,
        request: LoadRequest,
        loaded_here: list[LoadedModel],
        *,
        protect: frozenset[str] = frozenset(),
        residents: list[Resident] | None = None,
    ) -> tuple[Plan | Refusal, Prediction, Budget]:
        """What must leave, on any server of the machine, so ``request`` fits on ``here``.

        ``protect``: keys that must stay (models loaded earlier by the same command); ``residents``: the
        machine as it will be (a plan for several loads simulates the earlier ones), instead of as it is."""
        from sourceprep_models.planning.load import Policy, Refusal, plan_load

        demand, prediction, wanted = self.demand(here, request)
        world = residents if residents is not None else self.world(here, loaded_here, wanted)
        world = [replace(resident, pinned=True) if resident.key in protect else resident for resident in world]
        budget = self.budget(here.host)
        policy = Policy(
            budget=budget.bytes,
            single_model=self.single_model or self.config.memory.single_model,
            allow_evict_pinned=self.config.memory.allow_evict_pinned,
            max_models=self.caps(here.host),
        )
        plan = plan_load(world, demand, policy)
        held = [resident for resident in world if resident.key in protect]
        evicts_held = not isinstance(plan, Refusal) and any(victim.key in protect for victim in plan.evict)
        blocked_by_held = isinstance(plan, Refusal) and any(pin.key in protect for pin in plan.blocking_pins)
        if held and (evicts_held or blocked_by_held):
            # Never evict what this command just loaded; say so in the command's own words, not as a pin.
            names = ", ".join(resident.name for resident in held)
            plan = Refusal(
                demand,
                budget.bytes,
                f"{demand.name} does not fit beside {names}, loaded by the same command (the budget is "
                f"{human_bytes(budget.bytes)}); load fewer models at once, or raise memory.budget",
            )
        return plan, prediction, budget

    def demand(self, here: Session, request: LoadRequest) -> tuple[Demand, Prediction, int | None]:
        """``request`` as the planner sees it, its predicted size, and the context it must run with."""
        from sourceprep_models.planning.load import Demand
        from sourceprep_models.swap.executor import machine_key

        prediction = here.predict(request)
        wanted_ctx = request.options.get("num_ctx")
        # Where the server fixes the context (llama.cpp), a different --ctx cannot force a reload.
        sets_context = here.provider.capabilities.sets_context
        wanted = wanted_ctx if isinstance(wanted_ctx, int) and sets_context else None
        identity = here.identity(request.name)
        demand = Demand(
            key=machine_key(here.endpoint.name, identity),
            name=request.name,
            size=prediction.bytes,
            pinned=identity in here.pinned_identities(),
            options_key=f"ctx={wanted}" if wanted is not None else "",
            group=here.endpoint.name,
        )
        return demand, prediction, wanted

    def world(self, here: Session, loaded_here: list[LoadedModel], wanted: int | None = None) -> list[Resident]:
        """Everything holding memory on ``here``'s host now, ``here``'s models with the context a load wants."""
        return self.residents(besides=here.endpoint.name, host=here.host) + here.residents(loaded_here, wanted)

    def restore_requests(self) -> dict[tuple[str, str], LoadRequest]:
        """Every configured pin on the machine, by (endpoint, server name), with the request that reloads it."""
        return {
            (session.endpoint.name, name): request
            for session in self.memory_sessions()
            for name, request in session.restore_requests().items()
        }

    def executor(self, here: Session) -> Executor:
        """An executor for ``here`` that can also evict from, and restore pins on, its host's other servers."""
        from sourceprep_models.swap.executor import Executor

        peers = {session.endpoint.name: session.provider for session in self.memory_sessions(here.host)}
        return Executor(here.provider, peers=peers, on_step=self._on_step, on_notice=self._on_notice)

    @contextlib.contextmanager
    def locked(
        self, timeout_s: float, on_wait: LockWait | None = None, hosts: Iterable[str] | None = None
    ) -> Iterator[None]:
        """The swap lock of every memory endpoint on ``hosts`` (None: on every host), always in one order, so
        two processes never deadlock. A swap changes one host's memory only (``plan``, ``executor``): its
        host's servers serialise, another host's swap goes on at the same time."""
        from sourceprep_models.swap.locks import endpoints_lock

        wanted = None if hosts is None else set(hosts)
        endpoints = [s.endpoint for s in self.memory_sessions() if wanted is None or s.host in wanted]
        with endpoints_lock(endpoints, timeout_s=timeout_s, on_wait=on_wait):
            yield

    def endpoints_on(self, hosts: Iterable[str]) -> list[str]:
        """The memory endpoints on ``hosts``: a swap there holds their locks, so only they may be repaired."""
        wanted = set(hosts)
        return [session.endpoint.name for session in self.memory_sessions() if session.host in wanted]

    def hosts_of(self, endpoints: Iterable[str] | None) -> set[str] | None:
        """The hosts of ``endpoints`` (None: every host), whose locks a change to those servers takes."""
        return None if endpoints is None else {self.session(name).host for name in endpoints}

    def note_unreachable(self, endpoint: str, message: str) -> None:
        self.unreachable.setdefault(endpoint, message)

    def _answer(self, session: Session, ask: Callable[[], Any], fallback: Any) -> Any:
        """Ask another server about itself; one that is down counts as holding nothing (and is noted)."""
        try:
            return ask()
        except SourceprepError as exc:
            self.note_unreachable(session.endpoint.name, exc.message)
            return fallback

    def close(self) -> None:
        for session in self._sessions.values():
            session.provider.close()
        self._sessions.clear()


def session_for(
    config: Config, provider: Provider, hardware: dict[str, Any], book: SizeBook, *, single_model: bool = False
) -> Session:
    """A session on ``provider``'s endpoint inside a machine view whose other servers open on demand."""
    from sourceprep_models.providers import create_provider

    def make(endpoint: Endpoint) -> Provider:
        return provider if endpoint.name == provider.endpoint.name else create_provider(endpoint)

    return Machine(config, make, hardware, book, single_model=single_model).session(provider.endpoint.name)


@contextlib.contextmanager
def open_machine(
    config: Config,
    *,
    hooks: Hooks | None = None,
    single_model: bool = False,
    make_provider: Callable[[Endpoint], Provider] | None = None,
    hardware: dict[str, Any] | None = None,
) -> Iterator[Machine]:
    """This machine's servers as one view, closed afterwards."""
    from sourceprep_models.hardware import probe
    from sourceprep_models.memory.sizing import default_size_book
    from sourceprep_models.providers import create_provider

    hooks = hooks or Hooks()
    debug = hooks.debug
    machine = Machine(
        config,
        make_provider or create_provider,
        probe().to_dict() if hardware is None else hardware,
        default_size_book(),
        single_model=single_model,
        on_step=lambda step: debug(f"{step.step} {step.model}: {step.wall_s:.3f}s"),
        on_notice=hooks.info,
    )
    try:
        yield machine
    finally:
        machine.close()
