"""Runner scheduler of the Ollama emulator (test infrastructure, not product code).

Emulates Ollama's ``server/sched.go`` as specified in ollama.md §3-§4: runners keyed by
blob path, one loader working through a bounded queue, fit checks and eviction, sliding
keep-alive timers and asynchronous unloads. All shared state is guarded by one lock
(``Scheduler._cond``); the only waits are condition waits with timeouts that emulate
time passing (reading the blob at a given speed, a stalled load, a process exiting).
"""

from __future__ import annotations

import math
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .store import MIB, ModelStore, StoredModel, normalize

FOREVER = math.inf
READ_CHUNK = MIB
DISCONNECT_POLL_S = 0.02  # how often a waiting handler checks whether its client left
FIT_FRACTION = 0.8  # ollama.md §4.4: fits iff prediction <= 80 % of available VRAM
AUTO_MAX_LOADED = 3  # ollama.md §4.3 step 3 / §4.10: 3 x GPUs, minimum 3
GO_MAX_DURATION = timedelta(microseconds=(2**63 - 1) // 1000)  # ollama.md §3.3: "forever" ~ year 2318
# ollama.md §4.8: architectures that always run with a single parallel slot.
SINGLE_SLOT_ARCHS = frozenset({
    "mllama", "qwen3vl", "qwen3vlmoe", "qwen35", "qwen35moe", "qwen3next", "lfm2", "lfm2moe",
    "nemotron_h", "nemotron_h_moe", "nemotron_h_omni",
})  # fmt: skip
LAST_LOG_LINE = "llama_model_load: loading model tensors, this can take a while... (mmap = true)"

# Ollama's api.Options fields by type (ollama.md §4.7: a wrong type is a 500).
_INT_OPTIONS = frozenset({
    "num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch", "num_gpu",
    "main_gpu", "num_thread",
})  # fmt: skip
_FLOAT_OPTIONS = frozenset({
    "temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty", "frequency_penalty",
})  # fmt: skip
_BOOL_OPTIONS = frozenset({"use_mmap"})
_STRING_LIST_OPTIONS = frozenset({"stop"})

LOCAL_TZ = datetime.now().astimezone().tzinfo


def local_now() -> datetime:
    return datetime.now(LOCAL_TZ)


def utc_now() -> datetime:
    return datetime.now(UTC)


class SchedulerError(Exception):
    """An error the HTTP layer turns into ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def canceled_error() -> SchedulerError:
    # ollama.md §4.2/§5: logged as 499 "request canceled" (the client is gone anyway).
    return SchedulerError(499, "request canceled")


def busy_error() -> SchedulerError:
    # ollama.md §4.2/§5: exact text, two spaces before "maximum".
    return SchedulerError(503, "server busy, please try again.  maximum pending requests exceeded")


class _OutOfMemory(Exception):
    pass


class _Stopped(Exception):
    pass


@dataclass
class Faults:
    """Failure switches a test may flip at any time; everything is off by default.

    ``refuse_connections``: the emulator stops listening (and drops idle keep-alive
    connections), so a client's connect fails with ECONNREFUSED (httpx.ConnectError);
    turning it off listens again on the same port.
    """

    refuse_connections: bool = False
    error_500: str | None = None
    busy_503: int = 0
    oom_on_load: set[str] = field(default_factory=set)
    die_on_load: set[str] = field(default_factory=set)
    error_mid_stream: bool = False
    stall_load_s: float = 0
    slow_load_s: float = 0

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        hook: Callable[[bool], None] | None = self.__dict__.get("_listen_hook")
        if name == "refuse_connections" and hook is not None:
            hook(bool(value))


@dataclass(frozen=True)
class SchedulerConfig:
    gpu_vram_mib: float | None
    max_loaded_models: int
    default_keep_alive_s: float
    load_mib_per_s: float | None
    unload_delay_s: float
    max_queue: int
    context_length_env: int
    num_parallel: int
    load_timeout_s: float

    @property
    def vram_bytes(self) -> int:
        return 0 if self.gpu_vram_mib is None else int(self.gpu_vram_mib * MIB)

    @property
    def default_context(self) -> int:
        # ollama.md §4.8: VRAM tiers (>= 47 GiB -> 256k, >= 23 GiB -> 32k, else / CPU-only 4096).
        gib = self.vram_bytes / 1024**3
        return 262144 if gib >= 47 else 32768 if gib >= 23 else 4096


@dataclass(frozen=True)
class RunnerOptions:
    """The options that identify a runner (ollama.md §4.7), in effective form."""

    num_ctx: int
    ctx_explicit: bool  # from the request or OLLAMA_CONTEXT_LENGTH; False = automatic
    num_batch: int
    batch_explicit: bool
    num_gpu: int  # -1 = automatic
    main_gpu: int
    use_mmap: bool | None  # None = automatic
    num_thread: int
    shift: bool
    parallel: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_ctx": self.num_ctx,
            "num_batch": self.num_batch,
            "num_gpu": self.num_gpu,
            "main_gpu": self.main_gpu,
            "use_mmap": self.use_mmap,
            "num_thread": self.num_thread,
            "shift": self.shift,
            "num_parallel": self.parallel,
        }


@dataclass
class RunnerView:
    """A snapshot of one runner in the loaded set (what /api/ps lists)."""

    name: str
    digest: str
    blob_path: Path
    size: int
    size_vram: int
    context_length: int
    keep_alive_s: float | None  # None = forever
    expires_at: datetime
    active_requests: int
    options: dict[str, Any]
    stopping: bool = False  # expired, waiting for the emulated process exit


@dataclass(eq=False)
class Runner:
    model: StoredModel  # the model that loaded it: /api/ps shows its name (ollama.md §4.1)
    opts: RunnerOptions
    size: int
    size_vram: int
    keep_alive: float
    expires_at: datetime
    active: int = 0
    deadline: float | None = None  # monotonic time the idle timer fires; None = not running
    stopping: bool = False
    remove_at: float = 0.0

    @property
    def blob_path(self) -> Path:
        return self.model.blob_path

    def view(self) -> RunnerView:
        return RunnerView(
            name=self.model.short,
            digest=self.model.manifest_digest,
            blob_path=self.blob_path,
            size=self.size,
            size_vram=self.size_vram,
            context_length=self.opts.num_ctx,
            keep_alive_s=None if math.isinf(self.keep_alive) else self.keep_alive,
            expires_at=self.expires_at,
            active_requests=self.active,
            options=self.opts.as_dict(),
            stopping=self.stopping,
        )


@dataclass(eq=False)
class Lease:
    """One in-flight request attached to a runner; release it exactly once."""

    runner: Runner
    released: bool = False


@dataclass(eq=False)
class _Pending:
    model: StoredModel
    as_sent: str
    opts: RunnerOptions
    keep_alive: float | None
    canceled: bool = False
    done: bool = False
    lease: Lease | None = None
    error: SchedulerError | None = None


class LoadCounts(dict[str, int]):
    """Successful loads per blob, keyed by the blob owner's short name. Lookups accept any
    name of a model on that blob (aliases included, ``:latest`` implied); missing -> 0."""

    def __init__(self, store: ModelStore) -> None:
        super().__init__()
        self._store = store

    def _key(self, name: str) -> str:
        return self._store.owner_of(name) or normalize(name)

    def __missing__(self, key: str) -> int:
        resolved = self._key(key)
        return dict.get(self, resolved, 0) if resolved != key else 0

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, self._key(key))

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, self._key(key), default)


def expiry_after(seconds: float) -> datetime:
    now = local_now()
    return now + (GO_MAX_DURATION if math.isinf(seconds) else timedelta(seconds=seconds))


def parse_options(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Type-check request options like api.Options.FromMap (ollama.md §4.7)."""
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        if value is None:
            continue
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if key in _INT_OPTIONS:
            if not is_number:
                raise SchedulerError(500, f'option "{key}" must be of type integer')
            out[key] = int(value)  # Go truncates a JSON float into an int field
        elif key in _FLOAT_OPTIONS:
            if not is_number:
                raise SchedulerError(500, f'option "{key}" must be of type float32')
            out[key] = float(value)
        elif key in _BOOL_OPTIONS:
            if not isinstance(value, bool):
                raise SchedulerError(500, f'option "{key}" must be of type boolean')
            out[key] = value
        elif key in _STRING_LIST_OPTIONS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SchedulerError(500, f'option "{key}" must be of type array of strings')
            out[key] = value
        # Unknown keys are ignored (ollama.md §4.7).
    return out


def kv_cache_bytes(model: StoredModel, context: int) -> int:
    """ollama.md §4.4: 2 (K,V) x blocks x KV heads x (embedding / heads) x context x 2 bytes (f16)."""
    spec = model.spec
    head_dim = spec.embedding_length // max(spec.head_count, 1)
    return 2 * spec.block_count * spec.head_count_kv * head_dim * context * 2


def client_gone(conn: socket.socket) -> bool:
    """True when the peer closed the connection: readable, and a peek returns EOF."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class Scheduler:
    def __init__(self, store: ModelStore, config: SchedulerConfig, faults: Callable[[], Faults]) -> None:
        self._store = store
        self.config = config
        self._faults = faults
        self._cond = threading.Condition()
        self._loaded: dict[Path, Runner] = {}  # insertion order = load order (stable ps ties)
        self._queue: deque[_Pending] = deque()
        self._loading: _Pending | None = None
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.load_count = LoadCounts(store)
        self.aborted_loads = 0
        # ollama.md §4.3 step 3: 0 = automatic, 3 x GPUs with a minimum of 3.
        self.max_loaded = config.max_loaded_models or AUTO_MAX_LOADED

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._loader, "emulator-loader"), (self._reaper, "emulator-reaper")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            # ollama.md §4.6: shutdown closes all runners; held requests are simply released.
            self._loaded.clear()
            for pending in self._queue:
                pending.error, pending.done = SchedulerError(500, "server shutting down"), True
            self._queue.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    # -- views ---------------------------------------------------------------------------------
    def views(self) -> list[RunnerView]:
        with self._cond:
            runners = [r.view() for r in self._loaded.values()]
        # ollama.md §2.4: latest expiry first, at one-second granularity, stable.
        return sorted(runners, key=lambda v: -math.floor(v.expires_at.timestamp()))

    def queue_depth(self) -> int:
        with self._cond:
            return len(self._queue)

    def loading_name(self) -> str | None:
        with self._cond:
            return self._loading.model.short if self._loading else None

    # -- options --------------------------------------------------------------------------------
    def effective_options(self, model: StoredModel, raw: dict[str, Any] | None, shift: bool | None) -> RunnerOptions:
        opts = parse_options(raw)
        spec = model.spec
        trained = spec.context_length or 4096
        # ollama.md §4.8: request num_ctx, else OLLAMA_CONTEXT_LENGTH, else the VRAM tier;
        # capped at the trained context (ollama.md §4.7: capped before comparing), minimum 4.
        if "num_ctx" in opts:
            ctx, ctx_explicit = opts["num_ctx"], True
        elif self.config.context_length_env > 0:
            ctx, ctx_explicit = self.config.context_length_env, True
        else:
            ctx, ctx_explicit = self.config.default_context, False
        ctx = max(4, min(ctx, trained))
        # ollama.md §4.4: automatic num_batch is 512, 1024 above 4096 ctx, 2048 above 32768.
        auto_batch = 2048 if ctx > 32768 else 1024 if ctx > 4096 else 512
        embedding_only = "embedding" in spec.capabilities and "completion" not in spec.capabilities
        # ollama.md §2.7/§4.8: embedding models and some architectures get one slot.
        parallel = 1 if embedding_only or spec.family in SINGLE_SLOT_ARCHS else max(1, self.config.num_parallel)
        return RunnerOptions(
            num_ctx=ctx,
            ctx_explicit=ctx_explicit,
            num_batch=opts.get("num_batch", auto_batch),
            batch_explicit="num_batch" in opts,
            num_gpu=opts.get("num_gpu", -1),
            main_gpu=opts.get("main_gpu", 0),
            use_mmap=opts.get("use_mmap"),
            num_thread=opts.get("num_thread", 0),
            shift=True if shift is None else shift,
            parallel=parallel,
        )

    @staticmethod
    def needs_reload(runner: Runner, new: RunnerOptions) -> bool:
        """ollama.md §4.7: a differing runner option means unload and load again."""
        old = runner.opts
        # Automatic contexts on both sides are not compared; explicit vs omitted is (#18129).
        if (old.ctx_explicit or new.ctx_explicit) and old.num_ctx != new.num_ctx:
            return True
        if (old.batch_explicit or new.batch_explicit) and old.num_batch != new.num_batch:
            return True
        if new.num_gpu != -1 and new.num_gpu != old.num_gpu:  # num_gpu -1 is never a difference
            return True
        if (old.use_mmap is not None or new.use_mmap is not None) and old.use_mmap != new.use_mmap:
            return True
        return (old.main_gpu, old.num_thread, old.shift) != (new.main_gpu, new.num_thread, new.shift)

    @staticmethod
    def _file_size(model: StoredModel) -> int:
        try:
            return model.blob_path.stat().st_size
        except FileNotFoundError:
            return 0  # the load itself reports the missing blob (ollama.md §4.9)

    def _predicted(self, model: StoredModel, opts: RunnerOptions) -> int:
        # ollama.md §4.4: file size + KV for num_ctx x parallel. The batch surcharge is left out:
        # emulated models are MiB-sized and a fixed 768 MiB/2 GiB term would swamp them.
        return self._file_size(model) + kv_cache_bytes(model, opts.num_ctx * opts.parallel)

    def _partial_offload(self, model: StoredModel, opts: RunnerOptions) -> bool:
        return 0 <= opts.num_gpu < model.spec.block_count + 1

    def _vram_used(self) -> int:
        return sum(r.size_vram for r in self._loaded.values())

    # -- admission (request threads) ----------------------------------------------------------
    def acquire(
        self,
        model: StoredModel,
        as_sent: str,
        opts: RunnerOptions,
        keep_alive: float | None,
        conn: socket.socket | None = None,
    ) -> Lease:
        with self._cond:
            if self._stopping:
                raise SchedulerError(500, "server shutting down")
            runner = self._loaded.get(model.blob_path)
            # ollama.md §4.2: loaded and no reload needed -> attach at once, bypassing the queue.
            # A stopping runner is not reused: in Ollama it leaves the set within milliseconds
            # (§2.4), so a later request loads afresh after waiting for the exit (§4.6).
            if runner is not None and not runner.stopping and not self.needs_reload(runner, opts):
                return self._attach(runner, keep_alive)
            faults = self._faults()
            if faults.busy_503:
                if faults.busy_503 > 0:
                    faults.busy_503 -= 1
                raise busy_error()
            if len(self._queue) >= self.config.max_queue:  # ollama.md §4.2: bounded queue -> 503
                raise busy_error()
            pending = _Pending(model, as_sent, opts, keep_alive)
            self._queue.append(pending)
            self._cond.notify_all()
            while not pending.done:
                self._cond.wait(DISCONNECT_POLL_S if conn is not None else None)
                if self._stopping and not pending.done:
                    raise SchedulerError(500, "server shutting down")
                if conn is not None and not pending.canceled and not pending.done and client_gone(conn):
                    pending.canceled = True  # ollama.md §4.2: queued -> dropped; loading -> aborted
                    if pending in self._queue:
                        self._queue.remove(pending)
                        pending.error, pending.done = canceled_error(), True
                    self._cond.notify_all()
            if pending.error is not None:
                raise pending.error
            assert pending.lease is not None
            if pending.canceled:  # the runner was obtained just as the client left
                self._release_locked(pending.lease)
                raise canceled_error()
            return pending.lease

    def _attach(self, runner: Runner, keep_alive: float | None) -> Lease:
        runner.active += 1
        # ollama.md §3.2: a given keep_alive replaces the runner's; an absent one keeps it.
        # ollama.md §4.6: so a positive value cancels a pending unload of a busy runner.
        if keep_alive is not None:
            runner.keep_alive = keep_alive
        runner.deadline = None  # ollama.md §3.3: timer stopped while requests run
        self._cond.notify_all()
        return Lease(runner)

    def hold(self, model: StoredModel, keep_alive: float | None) -> Lease:
        with self._cond:
            runner = self._loaded.get(model.blob_path)
            if runner is None or runner.stopping:
                raise LookupError(f"{model.short} is not loaded")
            return self._attach(runner, keep_alive)

    def release(self, lease: Lease) -> None:
        with self._cond:
            self._release_locked(lease)

    def _release_locked(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        runner = lease.runner
        if self._loaded.get(runner.blob_path) is not runner:
            return  # stopped or already gone
        runner.active -= 1
        if runner.active == 0:
            if runner.keep_alive == 0:
                # ollama.md §3.3/§4.6: keep_alive 0 (or a pending unload) expires on going idle.
                self._begin_stopping(runner)
            else:
                # ollama.md §3.3: sliding timer, expires_at = end of last request + keep_alive.
                runner.expires_at = expiry_after(runner.keep_alive)
                runner.deadline = None if math.isinf(runner.keep_alive) else time.monotonic() + runner.keep_alive
        self._cond.notify_all()

    def unload(self, model: StoredModel) -> None:
        """ollama.md §2.5 step 5 / §4.6: expire the runner; never waits."""
        with self._cond:
            runner = self._loaded.get(model.blob_path)
            # ollama.md §4.6: a model still loading is not in the loaded set -> no-op.
            if runner is None or runner.stopping:
                return
            self._expire(runner)

    def _expire(self, runner: Runner) -> None:
        # ollama.md §4.5/§4.6: stop the timer, keep-alive 0; idle -> unload now, busy -> when idle.
        runner.keep_alive = 0.0
        runner.deadline = None
        runner.expires_at = local_now()  # ollama.md §3.3: "Stopping..." until removed
        if runner.active == 0:
            self._begin_stopping(runner)
        self._cond.notify_all()

    def _begin_stopping(self, runner: Runner) -> None:
        # ollama.md §4.6: process exit takes a while; the runner leaves the set afterwards.
        runner.stopping = True
        runner.deadline = None
        runner.expires_at = local_now()
        runner.remove_at = time.monotonic() + self.config.unload_delay_s
        self._cond.notify_all()

    # -- timers ---------------------------------------------------------------------------------
    def _reaper(self) -> None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                wake: float | None = None
                for runner in list(self._loaded.values()):
                    if runner.stopping:
                        if runner.active:
                            continue
                        if now >= runner.remove_at:
                            del self._loaded[runner.blob_path]
                            self._cond.notify_all()
                            continue
                        due = runner.remove_at
                    elif runner.active == 0 and runner.deadline is not None:
                        if now >= runner.deadline:  # ollama.md §3.3: idle timer fired
                            self._begin_stopping(runner)
                            due = runner.remove_at
                        else:
                            due = runner.deadline
                    else:
                        continue
                    wake = due if wake is None else min(wake, due)
                self._cond.wait(None if wake is None else max(wake - now, 0.001))

    # -- the loader (one thread: ollama.md §4.2 serialized loads, head-of-line) -----------------
    def _loader(self) -> None:
        with self._cond:
            while True:
                self._cond.wait_for(lambda: self._stopping or bool(self._queue))
                if self._stopping:
                    return
                pending = self._queue.popleft()
                try:
                    pending.lease = self._serve(pending)
                except SchedulerError as exc:
                    pending.error = exc
                except _Stopped:
                    pending.error = SchedulerError(500, "server shutting down")
                pending.done = True
                self._cond.notify_all()

    def _wait(self, predicate: Callable[[], bool]) -> None:
        self._cond.wait_for(lambda: self._stopping or predicate())
        if self._stopping:
            raise _Stopped

    def _wait_gone(self, runner: Runner) -> None:
        # Returns once the runner left the set, or went idle without being stopped (a request
        # replaced its keep_alive 0, ollama.md §4.6): the caller then re-runs the decision.
        self._wait(
            lambda: self._loaded.get(runner.blob_path) is not runner or (not runner.stopping and runner.active == 0)
        )

    def _pick_victim(self) -> Runner:
        # ollama.md §4.5: keep_alive ascending (forever last), ties by blob path; first idle
        # one, else the first (and wait for its requests). Recency plays no role.
        candidates = sorted(
            (r for r in self._loaded.values() if not r.stopping), key=lambda r: (r.keep_alive, str(r.blob_path))
        )
        return next((r for r in candidates if r.active == 0), candidates[0])

    def _serve(self, pending: _Pending) -> Lease:
        model, opts = pending.model, pending.opts
        while True:
            if self._stopping:
                raise _Stopped
            runner = self._loaded.get(model.blob_path)
            # ollama.md §4.3 step 1: reuse a loaded runner that needs no reload.
            if runner is not None and not runner.stopping and not self.needs_reload(runner, opts):
                if pending.canceled:
                    raise canceled_error()
                return self._attach(runner, pending.keep_alive)
            # ollama.md §4.2: a queued request whose client left is dropped; an eviction that was
            # already under way is not undone by that.
            if pending.canceled:
                raise canceled_error()
            if runner is not None:
                # ollama.md §4.3 step 1: needs a reload (§4.7) -> mark for expiry and wait.
                if not runner.stopping:
                    self._expire(runner)
                self._wait_gone(runner)
                continue
            stopping = next((r for r in self._loaded.values() if r.stopping), None)
            if stopping is not None:
                # An exiting runner still holds its memory (ollama.md §4.6): wait for it before
                # deciding, as Ollama waits for VRAM to be released before the next load.
                self._wait_gone(stopping)
                continue
            live = list(self._loaded.values())
            if len(live) >= self.max_loaded:  # ollama.md §4.3 step 2: count limit -> victim
                self._evict_one()
                continue
            gpu = self.config.gpu_vram_mib is not None
            # ollama.md §4.3 steps 4-6: nothing loaded -> no fit check; CPU-only or an explicit
            # partial offload -> count limit only; otherwise the 80 % fit rule (§4.4).
            if live and gpu and not self._partial_offload(model, opts):
                available = self.config.vram_bytes - self._vram_used()
                if self._predicted(model, opts) > FIT_FRACTION * available:
                    self._evict_one()
                    continue
            return self._load(pending)

    def _evict_one(self) -> None:
        victim = self._pick_victim()
        self._expire(victim)
        self._wait_gone(victim)

    def _load(self, pending: _Pending) -> Lease:
        opts = pending.opts
        retried_ctx = retried_evict = False
        while True:
            self._loading = pending
            outcome: Exception | None = None
            self._cond.release()  # the weights are read without holding the lock
            try:
                self._load_io(pending)
            except (_OutOfMemory, SchedulerError, _Stopped) as exc:
                outcome = exc
            finally:
                self._cond.acquire()
                self._loading = None
            if isinstance(outcome, SchedulerError) and outcome.status == 499:
                self.aborted_loads += 1
            oom = isinstance(outcome, _OutOfMemory)
            if outcome is not None and not oom:
                raise outcome
            if not oom:
                return self._install(pending, opts)
            # ollama.md §4.9: OOM with automatic num_ctx -> retry once with a smaller context.
            if not opts.ctx_explicit and opts.num_ctx > 4096 and not retried_ctx:
                retried_ctx = True
                opts = replace(opts, num_ctx=32768 if opts.num_ctx > 32768 else 4096)
                continue
            # ollama.md §4.9: OOM with other models loaded -> evict all of them, wait, retry once.
            others = [r for r in self._loaded.values() if not r.stopping]
            if others and not retried_evict:
                retried_evict = True
                for runner in others:
                    self._expire(runner)
                self._wait(lambda: not self._loaded)
                continue
            mib = self._predicted(pending.model, opts) / MIB
            raise SchedulerError(
                500,
                "llama-server reported out-of-memory during startup: ggml_backend_cuda_buffer_type_alloc_buffer: "
                f"allocating {mib:.2f} MiB on device 0: cudaMalloc failed: out of memory",
            )

    def _pause(self, pending: _Pending, seconds: float) -> None:
        """Let emulated time pass; a stop or the client leaving interrupts it (lock not held)."""
        if seconds > 0:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or pending.canceled, timeout=seconds)
        self._check(pending)

    def _check(self, pending: _Pending) -> None:
        if self._stopping:
            raise _Stopped
        if pending.canceled:  # ollama.md §4.9: the load runs under the request's context
            raise canceled_error()

    def _load_io(self, pending: _Pending) -> None:
        """The llama-server start-up: read the weights, then the start-up faults (ollama.md §4.9)."""
        model, faults = pending.model, self._faults()
        rate = self.config.load_mib_per_s
        started, done = time.monotonic(), 0
        try:
            # Really read the blob, sequentially, so the page cache matters (ollama.md §4.4 mmap).
            with model.blob_path.open("rb", buffering=0) as weights:
                while chunk := weights.read(READ_CHUNK):
                    done += len(chunk)
                    if rate:
                        self._pause(pending, started + done / (rate * MIB) - time.monotonic())
                    else:
                        self._check(pending)
        except FileNotFoundError:
            # ollama.md §4.9: manifest present but blob missing.
            raise SchedulerError(404, f'model "{pending.as_sent}" not found, try pulling it first') from None
        self._pause(pending, faults.slow_load_s)  # progressing: the stall timer keeps resetting
        if faults.stall_load_s > 0:
            timeout = self.config.load_timeout_s
            # ollama.md §4.9: load timeout is a stall timeout; <= 0 means infinite.
            if 0 < timeout <= faults.stall_load_s:
                self._pause(pending, timeout)
                raise SchedulerError(500, f"timed out waiting for llama-server to start - {LAST_LOG_LINE}")
            self._pause(pending, faults.stall_load_s)
        names = {model.short, normalize(pending.as_sent)}
        if names & {normalize(n) for n in faults.die_on_load}:
            raise SchedulerError(500, "llama-server process has terminated: exit status 1")
        if names & {normalize(n) for n in faults.oom_on_load}:
            raise _OutOfMemory

    def _install(self, pending: _Pending, opts: RunnerOptions) -> Lease:
        model = pending.model
        size = self._file_size(model) + kv_cache_bytes(model, opts.num_ctx * opts.parallel)
        free = max(self.config.vram_bytes - self._vram_used(), 0)
        if self.config.gpu_vram_mib is None or opts.num_gpu == 0:
            size_vram = 0  # ollama.md §2.4: 0 = CPU only
        elif self._partial_offload(model, opts):
            size_vram = min(size * opts.num_gpu // (model.spec.block_count + 1), free)
        else:
            # ollama.md §4.3 step 4: llama-server's fit puts what does not fit on the CPU.
            size_vram = min(size, free)
        keep_alive = self.config.default_keep_alive_s if pending.keep_alive is None else pending.keep_alive
        runner = Runner(
            model=model,
            opts=opts,
            size=size,
            size_vram=size_vram,
            keep_alive=keep_alive,  # ollama.md §3.2: fresh load -> request's value, else the default
            expires_at=expiry_after(keep_alive),  # ollama.md §3.3: before the first request ends
        )
        # ollama.md §2.4: a runner joins the loaded set only once it is ready.
        self._loaded[model.blob_path] = runner
        self.load_count[model.owner] = dict.get(self.load_count, model.owner, 0) + 1
        return self._attach(runner, None)
