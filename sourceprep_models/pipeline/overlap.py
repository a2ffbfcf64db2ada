"""Overlapped preload: the next stage's model loads in the background while the current stage works.

The plan (``plan.preload_during``) says which loads fit beside the models resident during an earlier
stage; for those, ``Preload.start`` runs the load on a thread while that stage's work runs, and the
stage that needs the model waits only for what is left of it (``Preload.wait``).

- Its own connection: a provider instance of its own, so the stage's prompts, the main thread's reads
  and the load never share an HTTP client (httpx clients are not shared across threads here).
- The swap lock of every server on the load's host is held by the thread for the whole load, as the run
  holds it around a foreground swap (``Machine.locked``): another sourceprep-models swapping on that host
  waits for it (one on another host does not), and this run never takes the lock itself while the thread
  holds it (it waits for the thread first).
- A load is never cancelled by dropping its connection: Ollama cancels a load whose client goes away
  (ollama.md §4.2 and §5, "request canceled", ``server/sched.go``), so the thread keeps
  its connection until the server answers, and a stop unloads the model explicitly (``Preload.cancel``).
- Its progress goes to the run's listener as phase ``preload`` (``preload b on llama: started``), apart
  from the stage's own swap; a prefetch's as phase ``prefetch``, with how much of the weights is read.
- Its failure (the server refuses or crashes the load, the deadline passes, the server dies) is raised
  by ``wait`` at the stage that needed the model, where the run handles it as a failed load there.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path

from sourceprep_models.errors import ServerError, ServerUnreachable, SourceprepError
from sourceprep_models.pipeline.plan import RunPlan
from sourceprep_models.pipeline.stages import StageRun
from sourceprep_models.planning.lookahead import StagePlan
from sourceprep_models.providers.base import LoadRequest, Provider
from sourceprep_models.swap.executor import Executor, LoadReport
from sourceprep_models.swap.progress import PhaseEvent, Phases, ProgressFn, page_cache_probe
from sourceprep_models.swap.residency import Machine
from sourceprep_models.warming.prefetch import Prefetch


@dataclass
class Preload:
    """One background load: for stage ``stage``, model ``name`` on ``endpoint``."""

    stage: str
    identity: str  # the model's machine key
    name: str
    endpoint: str
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    report: LoadReport | None = None
    error: BaseException | None = None
    _thread: threading.Thread | None = None
    _provider: Provider | None = None

    @classmethod
    def start(
        cls,
        stage: str,
        identity: str,
        provider: Provider,
        request: LoadRequest,
        locked: Callable[[], AbstractContextManager[None]],
        progress: ProgressFn | None = None,
        weights: Sequence[Path] = (),
    ) -> Preload:
        """Start loading ``request`` through ``provider`` (a fresh instance: its own connection) under ``locked``."""
        preload = cls(stage, identity, request.name, provider.endpoint.name, _provider=provider)

        def load() -> None:
            try:
                with locked():
                    preload.report = Executor(provider).load(request, progress=_ahead(progress), weights=weights)
            except BaseException as exc:  # handed to the stage that needs the model
                preload.error = exc
            finally:
                preload.finished = time.monotonic()

        # A daemon: a run that stops (Ctrl-C) never waits at exit for a load it has asked the server to drop.
        preload._thread = threading.Thread(target=load, name=f"preload-{request.name}", daemon=True)
        preload._thread.start()
        return preload

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> tuple[float, float]:
        """Wait for the load to end; (seconds waited, seconds hidden behind the earlier stage's work).

        Raises the load's own error (``SourceprepError``: its message and exit code) if it failed."""
        waited_from = time.monotonic()
        if self._thread is not None:
            self._thread.join()
        self.error = self._gone() or self.error
        self.close()
        waited = time.monotonic() - waited_from
        if self.error is not None:
            if isinstance(self.error, SourceprepError):
                raise self.error
            raise SourceprepError(f"the background load of {self.name} failed: {self.error}") from self.error
        total = (self.finished or waited_from) - self.started
        return waited, max(0.0, total - waited)

    def _gone(self) -> ServerUnreachable | None:
        """The load's connection dropped (the server was killed mid-load): asked once more, a server that is
        gone says so, and the stage stops as on any unreachable server (exit 4, how to start it)."""
        if self._provider is None or self.error is None or not isinstance(self.error, ServerError):
            return None
        try:
            self._provider.list_loaded()
        except ServerUnreachable as exc:
            return exc
        except SourceprepError:
            return None
        return None

    def cancel(self, provider: Provider, timeout_s: float) -> str:
        """The run stops while the load runs: unload the model (on ``provider``, the run's own connection),
        then wait for the thread (at most ``timeout_s``). Returns the clause for the run's last message.

        Unloaded rather than left to finish: the stage that wanted the model will not run now, so the
        memory goes back to what the interrupted stage had, as the plan left it; and a load cannot be
        counted on to finish once this process exits (Ollama drops it with its client, ollama.md §4.2).
        ``--resume`` plans again from what is resident and loads it when its stage comes."""
        if not self.running:
            self.close()
            if self.error is None:
                return f"; {self.name} (loaded ahead) was left loaded"
            return ""
        # Sent at once, where a server drops a load on request (the llama.cpp router stops the child it is
        # starting); Ollama ignores an unload for a model it is still loading (its keep_alive 0 only expires a
        # runner it has, ollama.md §3.4), so it is sent again once the load has ended and the model is listed.
        with contextlib.suppress(SourceprepError):
            provider.unload(self.name)
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self.running:
            return f"; {self.name} was asked to unload but its load had not ended after {timeout_s:g}s"
        self.close()
        if self.error is None:
            try:
                provider.unload(self.name)
            except SourceprepError as exc:
                return f"; {self.name} (loaded ahead) could not be unloaded: {exc.message}"
        return f"; the background load of {self.name} was stopped (unloaded)"

    def close(self) -> None:
        if self._provider is not None and not self.running:
            self._provider.close()
            self._provider = None


def start_preload(
    machine: Machine,
    runs: Sequence[StageRun],
    during: StageRun,
    plan: RunPlan,
    locked: Callable[[str], AbstractContextManager[None]],
    progress: ProgressFn | None = None,
) -> Preload | None:
    """Start the load the plan places during stage ``during`` (it fits beside that stage's models), if any."""
    from sourceprep_models.providers import create_provider

    following = next((later for later in runs if plan.preloads.get(later.id) == during.id), None)
    # A conditional stage may not run at all: its model is not loaded ahead for nothing.
    if following is None or following.stage.when != "always":
        return None
    target = plan.targets[following.id]
    home = machine.session(target.endpoint)
    request = home.request(target.name, target.spec)
    weights = home.weight_paths(target.name) if progress is not None else []
    provider = create_provider(home.endpoint)
    host = home.host  # the locks of the host whose memory the load takes, not every host's

    def on_host() -> AbstractContextManager[None]:
        return locked(host)

    return Preload.start(following.id, plan.identities[following.id], provider, request, on_host, progress, weights)


def _ahead(progress: ProgressFn | None) -> ProgressFn | None:
    """A background load's phases, told apart from the stage's own swap: ``preload b on llama: started``."""
    if progress is None:
        return None
    shown = progress

    def told(event: PhaseEvent) -> None:
        shown(replace(event, phase="preload") if event.phase == "load" else event)

    return told


def stop_preload(machine: Machine, preload: Preload | None) -> str:
    """The run stops with a background load in flight: it is unloaded (``Preload.cancel`` says why)."""
    if preload is None:
        return ""
    session = machine.session(preload.endpoint)
    try:
        return preload.cancel(session.provider, session.endpoint.unload_timeout_s or 120.0)
    except KeyboardInterrupt:
        return f"; the background load of {preload.name} was left running: interrupted again"


@dataclass
class PrefetchHandle:
    identity: str
    prefetch: Prefetch
    _watch: threading.Thread | None = None  # tells the progress listener when the read ends

    def stop(self) -> bool:
        """Stop reading (if still at it); True when the model's weights were read in full."""
        whole = self.prefetch.finish()
        if self._watch is not None:
            self._watch.join()  # its end is told before the stage's next phase starts
        return whole

    def watch(self, progress: ProgressFn, endpoint: str) -> None:
        """Tell ``progress`` of the read as phase ``prefetch``: its start, its end, and (through the
        page-cache probe) how much of the weights is read meanwhile."""
        import time

        total, probe = page_cache_probe(self.prefetch.paths)
        phases = Phases(progress, time.monotonic)

        def watch() -> None:
            with phases.phase("prefetch", self.prefetch.model, endpoint, total_bytes=total, probe=probe):
                self.prefetch.wait()

        self._watch = threading.Thread(target=watch, name=f"prefetch-watch-{self.prefetch.model}", daemon=True)
        self._watch.start()


def start_prefetch(
    machine: Machine,
    plan: RunPlan,
    step: StagePlan | None,
    loading: str | None = None,
    progress: ProgressFn | None = None,
) -> PrefetchHandle | None:
    """Warm the weights of the next model the plan loads (on whichever server), while the stage works; not
    the one ``loading`` in the background (the load reads them itself). Where the server parks unloaded
    models in RAM (vLLM sleep level 1) there are no weight files to warm: its load is a wake."""
    if step is None or step.prefetch is None or step.prefetch == loading:
        return None
    name = plan.names.get(step.prefetch, step.prefetch)
    session = machine.session(plan.groups[step.prefetch])
    paths = session.weight_paths(name)
    if not paths or session.direct_io(name) is not None:  # the server bypasses the page cache
        return None
    handle = PrefetchHandle(step.prefetch, Prefetch.start(name, paths))
    if progress is not None:
        handle.watch(progress, session.endpoint.name)
    return handle
