"""The only place that sequences I/O against servers: load, unload, wait, verify, with timings.

Commands never call a provider's ``unload`` and then ``load`` themselves; they hand the work to an
``Executor``, which times each step, waits for asynchronous unloads to finish, and checks what the
server really has afterwards instead of trusting a 200.

An executor drives one endpoint and, through ``peers``, the machine's other servers: a plan made for
the whole machine may evict a model from another server (its ``Resident.group``) to make room here,
and a pin evicted there is restored there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sourceprep_models.config.schema import LOCAL_HOST
from sourceprep_models.errors import DeadlineExceeded, ModelNotFound, ServerError, SourceprepError
from sourceprep_models.planning.load import Plan, Resident
from sourceprep_models.providers.base import LoadedModel, LoadOutcome, LoadRequest, Provider
from sourceprep_models.swap.busy import wait_until_idle
from sourceprep_models.swap.progress import Breakdown, Phases, ProgressFn, page_cache_probe
from sourceprep_models.units import format_seconds, percent

# Joins an endpoint name and a model identity into a key unique across the machine's servers.
_KEY_SEP = "\x1f"
# Waiting for a freed model: a look every FIRST_POLL_S at first, then every tenth of the time waited
# so far, up to the cap: a release is seen at most 10 % (or 5 ms) late. A llama.cpp child is gone 20
# to 70 ms after its unload (real-engine.md §5): a 0.1 s first poll cost about 90 ms per swap on the
# real router, and a poll growing by half from the start overshoots a 70 ms release by a third.
FIRST_POLL_S = 0.005
MAX_POLL_S = 0.25


def machine_key(endpoint: str, identity: str) -> str:
    """The planner's key for a model on one endpoint: the same GGUF on two servers is two residents."""
    return f"{endpoint}{_KEY_SEP}{identity}"


def local_identity(key: str) -> str:
    """The identity part of a machine key (a plain identity is returned as it is)."""
    return key.rpartition(_KEY_SEP)[2]


@dataclass(frozen=True)
class Step:
    """One timed step of a swap, as shown in the timing table."""

    step: str  # "load", "unload", "wait-for-free", "wait-for-busy", "verify"
    model: str
    endpoint: str
    wall_s: float
    server_s: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Eviction:
    model: str
    endpoint: str
    pinned: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadReport:
    model: str
    endpoint: str
    outcome: str  # "loaded", "already-loaded", "reloaded" or "always-ready" (cloud endpoints)
    steps: list[Step] = field(default_factory=list)
    resident: LoadedModel | None = None
    evicted: list[str] = field(default_factory=list)
    # Every eviction with its endpoint and whether it was a pin (victims may sit on another server).
    evictions: list[Eviction] = field(default_factory=list)
    evicted_by_server: list[str] = field(default_factory=list)
    pending_restore: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    prediction: int | None = None  # the planner's predicted size, to compare with resident.size
    read_from: str | None = None  # the weights before the swap read them: "disk", "page cache", None (unknown)
    busy_wait_s: float | None = None  # seconds waiting for a busy or loading victim (None: no such wait)
    host: str = LOCAL_HOST  # the machine the endpoint runs on (set by the operation that knows the config)

    @property
    def total_s(self) -> float:
        return sum(step.wall_s for step in self.steps)

    def breakdown(self) -> Breakdown:
        return Breakdown.of(self.steps, self.read_from, self.busy_wait_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "endpoint": self.endpoint,
            "host": self.host,
            "outcome": self.outcome,
            "total_s": round(self.total_s, 4),
            "steps": [step.to_dict() for step in self.steps],
            "resident": self.resident.to_dict() if self.resident else None,
            "evicted": self.evicted,
            "evictions": [eviction.to_dict() for eviction in self.evictions],
            "evicted_by_server": self.evicted_by_server,
            "pending_restore": self.pending_restore,
            "predicted_bytes": self.prediction,
            "predicted_size": self.prediction,  # deprecated name of predicted_bytes (docs/json.md)
            "seconds": self.breakdown().to_dict(),
            "warnings": self.warnings,
        }


@dataclass
class PutBack:
    """Pins reloaded after a failed or interrupted swap (each confirmed listed), and those that were not."""

    restored: list[str] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)  # pin -> why it is not back

    def summary(self) -> str:
        """The clause appended to the failure's message."""
        text = f"; restored pinned {', '.join(self.restored) or 'nothing'}"
        for name, why in self.lost.items():
            text += f"; could not restore pinned {name} ({why})"
        return text


@dataclass
class UnloadReport:
    endpoint: str
    unloaded: list[str] = field(default_factory=list)
    not_loaded: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "unloaded": self.unloaded,
            "not_loaded": self.not_loaded,
            "total_s": round(sum(step.wall_s for step in self.steps), 4),
            "steps": [step.to_dict() for step in self.steps],
        }


class Executor:
    def __init__(
        self,
        provider: Provider,
        *,
        peers: Mapping[str, Provider] | None = None,
        on_step: Callable[[Step], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
        poll_interval_s: float = FIRST_POLL_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self.endpoint = provider.endpoint.name
        self._providers = {**(peers or {}), self.endpoint: provider}
        self._on_step = on_step
        self._on_notice = on_notice or (lambda _: None)
        self._poll = poll_interval_s
        self._clock = clock
        self._sleep = sleep
        # (endpoint, listed name) -> identity, for one command: a name's identity does not change while
        # it runs, and asking again costs a request per loaded model at every look (llama.cpp's describe
        # reads the whole listing).
        self._identities: dict[tuple[str, str], str] = {}

    # -- load (a swap: warm, evict, wait, load, verify) -----------------------------------------

    def load(
        self,
        request: LoadRequest,
        plan: Plan | None = None,
        *,
        warm: Callable[[], tuple[float, str] | None] | None = None,
        restore: Mapping[tuple[str, str], LoadRequest] | None = None,
        unload_timeout_s: float = 120.0,
        progress: ProgressFn | None = None,
        weights: Sequence[Path] = (),
    ) -> LoadReport:
        """Make ``request.name`` resident, evicting what ``plan`` says first (on whichever server).

        ``warm`` pre-reads the weights into the page cache and returns (seconds, detail); ``restore``
        maps (endpoint, name) of each pin the plan may evict to the request that brings it back: if
        anything fails after the evictions (or the user presses Ctrl-C), those pins are reloaded at once.
        ``progress`` hears each phase start and end; ``weights`` (the files the server reads, where
        they are on this disk) tell where the read comes from and how far a silent server's load is.
        """
        phases = Phases(progress, self._clock)
        target = self.provider.describe(request.name)  # unknown model → ModelNotFound before anything else
        before = self._resident_by_identity()
        previous = before.get(target.identity)
        wanted_ctx = _int_option(request.options.get("num_ctx"))
        sets_context = self.provider.capabilities.sets_context
        if previous is None:
            outcome = "loaded"
        elif sets_context and wanted_ctx is not None and previous.context_length not in (None, wanted_ctx):
            # A changed num_ctx makes the server reload the runner (ollama.md §4.7).
            outcome = "reloaded"
        elif self.provider.predicts_reload(request, previous):
            outcome = "reloaded"  # another runner option differs (the provider knows its server's rules)
        else:
            outcome = "already-loaded"
        report = LoadReport(model=request.name, endpoint=self.endpoint, outcome=outcome)
        if plan is not None:
            report.warnings.extend(plan.warnings)
        if weights and outcome != "already-loaded":
            from sourceprep_models.warming.prefetch import cache_state

            report.read_from = {"warm": "page cache", "cold": "disk"}.get(cache_state(list(weights)) or "")

        if warm is not None and outcome != "already-loaded":
            with phases.phase("warm", request.name, self.endpoint):
                warmed = warm()
            if warmed is not None:
                self._record(report.steps, Step("warm", request.name, self.endpoint, warmed[0], detail=warmed[1]))

        victims = [
            victim
            for victim in (plan.evict if plan else ())
            if not (self._endpoint_of(victim) == self.endpoint and local_identity(victim.key) == target.identity)
        ]
        evicted_pins: list[tuple[str, str]] = []
        unloads_sent: set[tuple[str, str]] = set()
        try:
            if victims:
                # Never cut off a victim's load or running request: wait for it first (swap/busy.py).
                asked = [(self._providers.get(self._endpoint_of(v)), v.name) for v in victims]
                waited = wait_until_idle(
                    [(provider, name) for provider, name in asked if provider is not None],
                    deadline_s=request.deadline_s,
                    clock=self._clock,
                    sleep=self._sleep,
                    notify=self._on_notice,
                )
                if waited is not None:
                    step = Step(
                        "wait-for-busy",
                        ", ".join(waited.models),
                        self.endpoint,
                        waited.seconds,
                        detail="waited for busy",
                    )
                    self._record(report.steps, step)
                    report.busy_wait_s = waited.seconds
                evicted_pins = [(self._endpoint_of(victim), victim.name) for victim in victims if victim.pinned]
                self._evict(victims, before, report, unload_timeout_s, unloads_sent, phases)
            # Sent even when already loaded: it refreshes the keep-alive (and re-asserts a pin, §3.2).
            total, probe = page_cache_probe(weights) if progress is not None else (None, None)
            with phases.phase("load", request.name, self.endpoint, total_bytes=total, probe=probe) as told:
                result = self.provider.load(dataclasses.replace(request, on_progress=told))
            self._record(
                report.steps,
                Step("load", request.name, self.endpoint, result.wall_s, result.server_load_s, outcome),
            )
            # Inside the try: a model the server does not list after its load is a failed swap too.
            ours = {local_identity(v.key) for v in victims if self._endpoint_of(v) == self.endpoint}
            with phases.phase("verify", request.name, self.endpoint):
                self._verify(request, target.identity, before, report, wanted_ctx, ours)
        except BaseException as exc:
            if evicted_pins and restore:
                wanted = [(where, restore[where, name]) for where, name in evicted_pins if (where, name) in restore]
                back = self.put_back(wanted, sent=unloads_sent, timeout_s=unload_timeout_s)
                if isinstance(exc, SourceprepError):
                    exc.message += back.summary()
                    exc.args = (exc.message,)
            raise
        report.pending_restore = [name for where, name in evicted_pins if restore and (where, name) in restore]
        return report

    def restore(self, requests: Sequence[LoadRequest], detail: str = "pin reloaded") -> list[Step]:
        """Bring back pins: evicted for heavy work that is now done, or lost by the server.

        Each is confirmed by listing it afterwards (once more after a reload, as an Ollama preload
        right after an unload can end unloaded: ollama.md Corrections §4.6); ``ServerError`` if not."""
        steps: list[Step] = []
        for request in requests:
            result = self._load_confirmed(self.provider, request)
            self._record(
                steps, Step("restore", request.name, self.endpoint, result.wall_s, result.server_load_s, detail)
            )
        return steps

    def put_back(
        self, requests: Sequence[tuple[str, LoadRequest]], *, sent: set[tuple[str, str]] | None, timeout_s: float
    ) -> PutBack:
        """Reload evicted pins after a failed or interrupted swap, each on its own server, and confirm
        each is listed. ``sent``: the (endpoint, name) whose unload was requested (None: all of them).

        A pin whose unload is still pending is waited for first (up to ``timeout_s``): a load sent to
        a runner that is on its way out is answered by it, and the model leaves anyway (ollama.md
        Corrections §4.6). Never raises: a second Ctrl-C stops the waiting, and what did not come
        back is named in the result."""
        back = PutBack()
        for endpoint, request in requests:
            label = request.name if endpoint == self.endpoint else f"{request.name} on {endpoint}"
            provider = self._providers.get(endpoint)
            try:
                if provider is None:
                    raise ServerError(f"{endpoint} is not driven by this command")
                identity = provider.describe(request.name).identity
                if sent is None or (endpoint, request.name) in sent:
                    with contextlib.suppress(DeadlineExceeded):  # still there: the load below re-asserts it
                        self._wait_until_gone({identity}, {identity: request.name}, timeout_s, provider)
                self._load_confirmed(provider, request, identity)
                back.restored.append(label)
            except SourceprepError as exc:
                back.lost[label] = exc.message
            except KeyboardInterrupt:
                back.lost[label] = "interrupted again before it was reloaded"
        return back

    def _load_confirmed(self, provider: Provider, request: LoadRequest, identity: str | None = None) -> LoadOutcome:
        identity = identity or provider.describe(request.name).identity
        result = provider.load(request)
        if identity not in self._resident_by_identity(provider):
            result = provider.load(request)  # once more (ollama.md Corrections §4.6)
            if identity not in self._resident_by_identity(provider):
                raise ServerError(
                    f"{provider.endpoint.name} answered that {request.name} loaded, but does not list it as loaded"
                )
        return result

    def _endpoint_of(self, victim: Resident) -> str:
        return victim.group or self.endpoint

    def _evict(
        self,
        victims: Sequence[Resident],
        before: Mapping[str, LoadedModel],
        report: LoadReport,
        timeout_s: float,
        sent: set[tuple[str, str]],
        phases: Phases,
    ) -> None:
        by_endpoint: dict[str, list[Resident]] = {}
        for victim in victims:
            by_endpoint.setdefault(self._endpoint_of(victim), []).append(victim)
        gone_before: dict[str, set[str]] = {}
        for endpoint, group in by_endpoint.items():
            provider = self._providers.get(endpoint)
            if provider is None:
                raise ServerError(f"the plan evicts from {endpoint}, which this command does not drive")
            listed = before if endpoint == self.endpoint else self._resident_by_identity(provider)
            gone_before[endpoint] = {local_identity(v.key) for v in group if local_identity(v.key) in listed}
            for victim in group:
                started = self._clock()
                sent.add((endpoint, victim.name))  # before the request: an interrupt may land during it
                with phases.phase("unload", victim.name, endpoint):
                    provider.unload(victim.name)
                detail = "evict" if endpoint == self.endpoint else f"evict for {report.model} on {self.endpoint}"
                self._record(
                    report.steps, Step("unload", victim.name, endpoint, self._clock() - started, detail=detail)
                )
        for endpoint, group in by_endpoint.items():
            started = self._clock()
            names = {local_identity(victim.key): victim.name for victim in group}
            with phases.phase("release", ", ".join(names.values()), endpoint):
                self._wait_until_gone(gone_before[endpoint], names, timeout_s, self._providers[endpoint])
            self._record(
                report.steps,
                Step("wait-for-free", ", ".join(names.values()), endpoint, self._clock() - started, detail="gone"),
            )
        report.evicted = [victim.name for victim in victims]
        report.evictions = [Eviction(victim.name, self._endpoint_of(victim), victim.pinned) for victim in victims]

    def _verify(
        self,
        request: LoadRequest,
        identity: str,
        before: Mapping[str, LoadedModel],
        report: LoadReport,
        wanted_ctx: int | None,
        evicted_here: set[str],
    ) -> None:
        started = self._clock()
        after = self._resident_by_identity()
        resident = after.get(identity)
        self._record(
            report.steps, Step("verify", request.name, self.endpoint, self._clock() - started, detail="listed")
        )
        if resident is None:
            raise ServerError(
                f"{self.endpoint} answered that {request.name} loaded, but does not list it as loaded; "
                "another client may have unloaded it at once (keep_alive 0?)"
            )
        report.resident = resident
        # By identity: the plan may name a model "big" that the server lists as "big:latest" (one model).
        report.evicted_by_server = sorted(
            model.name for key, model in before.items() if key not in after and key not in evicted_here
        )
        if resident.size and resident.size_vram is not None and 0 < resident.size_vram < resident.size:
            report.warnings.append(
                f"{request.name} is only {percent(resident.size_vram, resident.size)}% on the GPU; the rest "
                "runs on the CPU, which is much slower; free memory or use a smaller context"
            )
        if wanted_ctx is not None and resident.context_length is not None and resident.context_length < wanted_ctx:
            why = (
                "the model's trained maximum caps it"
                if self.provider.capabilities.sets_context
                else "this server fixes the context when it starts the model: raise it in the server's own settings, "
                "e.g. llama-server's --ctx-size or the model's preset"
            )
            report.warnings.append(
                f"{request.name} runs with a {resident.context_length}-token context, less than the "
                f"{wanted_ctx} asked for ({why})"
            )
        if report.evicted_by_server:
            report.warnings.append(
                f"the server evicted {', '.join(report.evicted_by_server)} to make room for {request.name}"
            )

    # -- unload --------------------------------------------------------------------------------

    def unload(self, names: Iterable[str] | None, *, timeout_s: float) -> UnloadReport:
        """Unload the named models (None = everything loaded) and wait until the server lists none."""
        report = UnloadReport(endpoint=self.endpoint)
        resident = self._resident_by_identity()
        targets: dict[str, str] = {}  # identity -> the name we asked for
        if names is None:
            targets = {identity: model.name for identity, model in resident.items()}
        else:
            for name in names:
                identity = self.provider.describe(name).identity  # unknown → ModelNotFound (exit 3)
                if identity in resident:
                    targets.setdefault(identity, name)
                else:
                    report.not_loaded.append(name)
        if not targets:
            return report

        started = self._clock()
        if names is None and self.provider.capabilities.unloads_all_at_once:
            # One request where the server has one (llama-swap), also on builds without per-model unload.
            self.provider.unload_all()
        else:
            for name in targets.values():
                self.provider.unload(name)
        self._record(
            report.steps,
            Step("unload", ", ".join(targets.values()), self.endpoint, self._clock() - started, detail="requested"),
        )
        # The server answers at once and releases the model later (ollama.md §4.6).
        started = self._clock()
        self._wait_until_gone(set(targets), targets, timeout_s)
        self._record(
            report.steps,
            Step("wait-for-free", ", ".join(targets.values()), self.endpoint, self._clock() - started, detail="gone"),
        )
        report.unloaded = list(targets.values())
        return report

    def _wait_until_gone(
        self, identities: set[str], names: dict[str, str], timeout_s: float, provider: Provider | None = None
    ) -> None:
        provider = provider or self.provider
        started = self._clock()
        deadline = started + timeout_s
        interval = self._poll
        while True:
            still = identities & set(self._resident_by_identity(provider))
            if not still:
                return
            if self._clock() >= deadline:
                waiting = ", ".join(sorted(names[identity] for identity in still))
                raise DeadlineExceeded(
                    f"{waiting} still loaded on {provider.endpoint.name} after {format_seconds(timeout_s)}; "
                    "a busy model "
                    "unloads only when its running requests finish; wait and check `sourceprep-models status`, "
                    "or raise --timeout"
                )
            self._sleep(interval)
            interval = min(max(self._poll, (self._clock() - started) / 10), MAX_POLL_S)

    # -- helpers -------------------------------------------------------------------------------

    def _resident_by_identity(self, provider: Provider | None = None) -> dict[str, LoadedModel]:
        provider = provider or self.provider
        resident: dict[str, LoadedModel] = {}
        for model in provider.list_loaded():
            if not model.occupies_memory:  # parked/asleep counts as unloaded (vLLM sleep, servers.md §4)
                continue
            key = (provider.endpoint.name, model.name)
            if key not in self._identities:
                try:
                    self._identities[key] = provider.describe(model.name).identity
                except ModelNotFound:  # deleted while loaded: it can only be matched by name
                    self._identities[key] = f"name:{model.name}"
            resident[self._identities[key]] = model
        return resident

    def _record(self, steps: list[Step], step: Step) -> None:
        steps.append(step)
        if self._on_step is not None:
            self._on_step(step)


def _int_option(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
