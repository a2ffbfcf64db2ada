"""Gather what every endpoint has loaded, plus the hardware view, into one plain report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sourceprep_models.config.schema import LOCAL_HOST, Config, Endpoint
from sourceprep_models.errors import ExitCode, SourceprepError
from sourceprep_models.memory.sizing import Budget
from sourceprep_models.providers.base import LoadedModel
from sourceprep_models.swap.residency import Machine, Session
from sourceprep_models.units import format_seconds

if TYPE_CHECKING:
    from sourceprep_models.swap.hooks import Hooks
    from sourceprep_models.swap.pins import Repair


# Endpoints asked at once by `status`; more than this wait for a free worker.
_MAX_PARALLEL = 16


@dataclass
class EndpointStatus:
    name: str
    kind: str
    url: str
    models: list[LoadedModel] = field(default_factory=list)
    error: str | None = None
    exit_code: int = ExitCode.OK
    # What the server says about itself, where it has more to say than its models (llama.cpp role and
    # --models-max); None for servers that do not.
    server: dict[str, Any] | None = None
    pins: set[str] = field(default_factory=set)  # configured always_available models on this endpoint
    always_ready: bool = False  # a cloud endpoint: nothing it serves uses this machine's memory
    # Configured pins the server does not keep: (name, "missing" | "expiring"); `status` only reports them.
    lost_pins: list[tuple[str, str]] = field(default_factory=list)
    host: str = LOCAL_HOST  # the machine the server runs on

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "kind": self.kind,
            "url": self.url,
            "ok": self.error is None,
            "error": self.error,
            "server": self.server,
            "models": [{**model.to_dict(), "always_available": model.name in self.pins} for model in self.models],
            "lost_pins": [{"model": name, "reason": reason} for name, reason in self.lost_pins],
        }


@dataclass(frozen=True)
class HostStatus:
    """One machine's memory: the budget its servers share, what their models use, what is left."""

    name: str
    budget: Budget
    used_bytes: int
    endpoints: tuple[str, ...]

    @property
    def free_bytes(self) -> int | None:
        return None if self.budget.total is None else max(0, self.budget.bytes - self.used_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "budget_bytes": self.budget.bytes if self.budget.total is not None else None,
            "budget_source": self.budget.source,
            "used_bytes": self.used_bytes,
            "free_bytes": self.free_bytes,
            "endpoints": list(self.endpoints),
        }


@dataclass
class StatusReport:
    endpoints: list[EndpointStatus]
    hardware: dict[str, Any]
    hosts: list[HostStatus] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every endpoint answered; otherwise the first failing endpoint's code.

        Another machine that does not answer (a desktop that is asleep, a laptop off the LAN) does not fail
        a look at the others: an unreachable endpoint on a host other than ``local`` counts only when no
        endpoint on another host answered (``status --endpoint`` naming it alone, or nothing else up)."""
        answered = {ep.host for ep in self.endpoints if ep.error is None}
        for ep in self.endpoints:
            if not ep.exit_code:
                continue
            away = ep.host != LOCAL_HOST and ep.exit_code == ExitCode.SERVER_UNREACHABLE
            if away and answered - {ep.host}:
                continue
            return ep.exit_code
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "hosts": [host.to_dict() for host in self.hosts],
            "endpoints": [ep.to_dict() for ep in self.endpoints],
            "hardware": self.hardware,
        }


def collect_status(machine: Machine, endpoints: Iterable[Endpoint], *, hardware: bool = True) -> StatusReport:
    """Ask every endpoint for its loaded models at the same time; one failing endpoint never hides the
    others, and a slow one costs what it costs alone, not added to the rest.

    Models the config keeps always available are marked so, for servers without pins of their own.
    The machine's line sums what its servers' models occupy against the budget the planner uses."""
    pins: dict[str, set[str]] = {}
    for spec in machine.config.models.values():
        if spec.always_available:
            pins.setdefault(spec.endpoint, set()).add(spec.name)
    statuses = [
        EndpointStatus(name=endpoint.name, kind=endpoint.kind, url=endpoint.url, pins=pins.get(endpoint.name, set()))
        for endpoint in endpoints
    ]
    # Providers are made here, in one thread; each has its own HTTP client, so each can be asked from its own thread.
    sessions = [machine.session(status.name) for status in statuses]
    if len(statuses) == 1:
        _ask(statuses[0], sessions[0])  # no thread pool to start (or import) for the common single endpoint
    elif statuses:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(statuses), _MAX_PARALLEL)) as pool:
            list(pool.map(_ask, statuses, sessions))
    return StatusReport(
        endpoints=statuses, hardware=machine.hardware if hardware else {}, hosts=_hosts(machine, statuses, sessions)
    )


def _hosts(machine: Machine, statuses: list[EndpointStatus], sessions: list[Session]) -> list[HostStatus]:
    """One line per machine: what its answering servers' models occupy against that machine's budget."""
    by_host: dict[str, list[EndpointStatus]] = {}
    for status, session in zip(statuses, sessions, strict=True):
        status.host = session.host
        if not status.always_ready:
            by_host.setdefault(session.host, [])
            if status.error is None:
                by_host[session.host].append(status)
    if not by_host:
        by_host[LOCAL_HOST] = []
    hosts = []
    for host in sorted(by_host, key=lambda name: name != LOCAL_HOST):
        holding = by_host[host]
        used = sum(model.size or 0 for status in holding for model in status.models if model.occupies_memory)
        hosts.append(HostStatus(host, machine.budget(host), used, tuple(status.name for status in holding)))
    return hosts


def _ask(status: EndpointStatus, session: Session) -> None:
    """Fill one endpoint's status from its server (run in a worker thread). A status is a look, not a
    load: each request gives up after the endpoint's ``status_timeout``, and a server that does not answer
    by then is reported unreachable, so a hung server costs that long and no more."""
    from sourceprep_models.providers._http import looking

    try:
        with looking(session.endpoint.status_timeout_s):
            _fill(status, session)
    except SourceprepError as exc:
        status.error = exc.message
        status.exit_code = exc.exit_code


def _fill(status: EndpointStatus, session: Session) -> None:
    status.models = session.provider.list_loaded()
    status.server = session.provider.server_facts()
    status.always_ready = session.provider.capabilities.always_ready
    if session.pinned_specs():
        holding = [model for model in status.models if model.occupies_memory]
        status.lost_pins = [(spec.name, why) for spec, why in session.lost_pins(holding)]


def status(
    config: Config, endpoints: list[Endpoint], *, repair: bool, hardware: bool, hooks: Hooks | None = None
) -> tuple[StatusReport, Repair]:
    """What every endpoint holds and the machine's memory; first (``repair``) put back pins servers lost."""
    # The planner and the executor are imported only for a repair: a plain look starts faster without them.
    from sourceprep_models.swap.pins import Repair
    from sourceprep_models.swap.residency import open_machine

    with open_machine(config, hooks=hooks) as machine:
        fixed = Repair()
        if repair:
            from sourceprep_models.swap.operations import repair as repair_pins

            fixed = repair_pins(machine, [endpoint.name for endpoint in endpoints], hooks=hooks)
        return collect_status(machine, endpoints, hardware=hardware), fixed


@dataclass
class WaitResult:
    """`wait`: when each endpoint first answered, seconds after the wait began."""

    answered_after_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoints": [{"name": name, "answered_after_s": round(s, 3)} for name, s in self.answered_after_s.items()]
        }


def wait_until_answering(
    config: Config,
    endpoints: list[Endpoint],
    *,
    timeout_s: float,
    hooks: Hooks | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitResult:
    """Ask every endpoint until each has answered once (a server still starting in CI), or
    ``ServerUnreachable`` (exit 4) naming those that never did and their last error."""
    from sourceprep_models.errors import ServerUnreachable
    from sourceprep_models.swap.hooks import Hooks
    from sourceprep_models.swap.residency import open_machine

    hooks = hooks or Hooks()
    result = WaitResult()
    started = clock()
    last_error: dict[str, str] = {}
    interval = 0.05
    with open_machine(config, hooks=hooks, hardware={}) as machine:
        pending = [machine.session(endpoint) for endpoint in endpoints]
        while True:
            for session in list(pending):
                try:
                    session.provider.list_loaded()
                except SourceprepError as exc:
                    last_error[session.endpoint.name] = exc.message
                    continue
                result.answered_after_s[session.endpoint.name] = clock() - started
                hooks.info(f"{session.endpoint.name} answers ({format_seconds(clock() - started)})")
                pending.remove(session)
            if not pending:
                return result
            waited = clock() - started
            if waited >= timeout_s:
                names = ", ".join(session.endpoint.name for session in pending)
                last = last_error[pending[0].endpoint.name]
                raise ServerUnreachable(
                    f"{names} did not answer within {format_seconds(timeout_s)} (last: {last}); start it, or wait "
                    "longer with --timeout"
                )
            if not result.answered_after_s and interval == 0.05:
                hooks.info(f"waiting for {', '.join(session.endpoint.name for session in pending)} to answer…")
            sleep(min(interval, max(0.0, timeout_s - waited)))
            interval = min(interval * 2, 1.0)  # a server that comes up is seen within a second
