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
# The reaper re-evaluates at least this often: Condition.wait() rejects a timeout above
# threading.TIMEOUT_MAX (about 9.22e9 s), and a keep_alive may legitimately be that long.
REAPER_MAX_WAIT_S = 3600.0
EXPIRY_RETRY_S = 0.01  # sched.go processCompleted: an expiry of a busy runner is re-sent every 10 ms
EXPIRY_HELD_POLL_S = 0.02  # how soon the reaper notices Faults.hold_expiries turned off
DEFAULT_BATCH = 512  # api/types.go DefaultOptions: NumBatch 512 (what an automatic request compares with)
FIT_FRACTION = 0.8  # ollama.md §4.4: fits iff prediction <= 80 % of available VRAM
AUTO_MAX_LOADED = 3  # ollama.md §4.3 step 3 / §4.10: 3 x GPUs, minimum 3
GO_MAX_DURATION = timedelta(microseconds=(2**63 - 1) // 1000)  # ollama.md §3.3: "forever" ~ year 2318
# ollama.md §4.8: architectures that always run with a single parallel slot.
SINGLE_SLOT_ARCHS = frozenset({
    "mllama", "qwen3vl", "qwen3vlmoe", "qwen35", "qwen35moe", "qwen3next", "lfm2", "lfm2moe",
    "nemotron_h", "nemotron_h_moe", "nemotron_h_omni",
})  # fmt: skip
LAST_LOG_LINE = "llama_model_load: loading model tensors, this can take a while... (mmap = true)"
OOM_LOG_LINE = (
    "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 1024.00 MiB on device 0: cudaMalloc failed: out of memory"
)
RUNTIME_OOM_ERROR = "an error was encountered while running the model: CUDA error: out of memory"
# llm/status.go errorPrefixes and outOfMemorySubstrings (matched case-insensitively).
STATUS_ERROR_PREFIXES = (
    "mlx:", "MLX:", "panic:", "fatal error:", "error:", "Error:", "CUDA error", "ROCm error", "cudaMalloc failed",
    '"ERR"', "error loading model", "GGML_ASSERT", "Deepseek2 does not support K-shift",
    "signal arrived during cgo execution", "llama_init_from_model:",
)  # fmt: skip
OUT_OF_MEMORY_NEEDLES = (
    "out of memory", "out of device memory", "cudaMalloc failed", "hipMalloc failed", "failed to allocate",
    "allocation failed", "not enough memory", "insufficient memory", "vk_error_out_of_device_memory",
    "erroroutofmemory",
)  # fmt: skip

# Ollama's api.Options fields by type (ollama.md §4.7: a wrong type is a 500).
_INT_OPTIONS = frozenset({
    "num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch", "num_gpu",
    "main_gpu", "num_thread", "draft_num_predict",
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


def is_out_of_memory(message: str) -> bool:
    """llm/status.go IsOutOfMemoryMessage: any needle, case-insensitively, anywhere in the text."""
    lowered = message.lower()
    return any(needle.lower() in lowered for needle in OUT_OF_MEMORY_NEEDLES)


def captured_errors(log: str) -> str:
    """llm/status.go StatusWriter: the runner's error lines as Ollama keeps them. A line with an
    error prefix is kept from the earliest prefix on, else an out-of-memory line whole; kept
    lines are joined with newlines (AppendError)."""
    kept: list[str] = []
    for raw in log.split("\n"):
        line = raw.rstrip(" \t\r")
        if not line:
            continue
        starts = [(line.find(p), p) for p in STATUS_ERROR_PREFIXES if p in line]
        if starts:
            kept.append(line[min(starts)[0] :].rstrip(" \t\r"))
        elif is_out_of_memory(line):
            kept.append(line)
    return "\n".join(kept)


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
    # llama-server reports out of memory while starting (ollama.md §4.9): every load attempt.
    oom_on_load: set[str] = field(default_factory=set)
    # Out of memory only when the attempt's context is above the value: an automatic context
    # lowered by the retry (sched.go reduceAutoNumCtxForLoadOOM) then loads.
    oom_above_ctx: dict[str, int] = field(default_factory=dict)
    die_on_load: set[str] = field(default_factory=set)
    # The runner process dies while loading after printing this text on stderr: the load fails
    # with "llama-server process has terminated: exit status 1: <its error lines>" (llm/status.go
    # keeps the lines); an out-of-memory needle in them makes it an out of memory (retried).
    crash_log: dict[str, str] = field(default_factory=dict)
    # Queued expiries wait while this is on (Ollama's processCompleted busy elsewhere, e.g. with
    # another runner's VRAM settle): requests meanwhile attach to the expiring runner. Turning it
    # off lets the scheduler act on them within EXPIRY_HELD_POLL_S.
    hold_expiries: bool = False
    error_mid_stream: bool = False
    # The runner runs out of memory while generating: the request fails, and every loaded runner
    # is expired (sched.go expireRunnersForRuntimeOOM).
    runtime_oom: bool = False
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
    # How long an expiry waits before the scheduler acts on it. In Ollama that is the moment
    # processCompleted reads it from expiredCh: at once when idle, later when it is busy with
    # another runner (closing it, waiting up to 5 s for its VRAM). A request in between is
    # served by the expiring runner (sched.go; ollama.md Corrections §4.6).
    expiry_delay_s: float = 0.0

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
    num_gpu: int  # any negative value = automatic (sched.go needsReload)
    main_gpu: int | None  # None = unset: a pointer in api.Runner, so unset and 0 differ
    use_mmap: bool | None  # None = automatic
    num_thread: int
    shift: bool
    parallel: int
    draft_num_predict: int = 0  # routes.go modelOptions: 0 unless set (the model has no draft)
    use_mmap_auto: bool = False  # the scheduler chose use_mmap (sched.go applyLlamaServerMmapDefaults)

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_ctx": self.num_ctx,
            "num_batch": self.num_batch,
            "num_gpu": self.num_gpu,
            "main_gpu": self.main_gpu,
            "use_mmap": self.use_mmap,
            "num_thread": self.num_thread,
            "draft_num_predict": self.draft_num_predict,
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
    stopping: bool = False  # expired: unloads once idle (or its process is exiting)


@dataclass(eq=False)
class Runner:
    model: StoredModel  # the model that loaded it: /api/ps shows its name (ollama.md §4.1)
    opts: RunnerOptions
    size: int
    size_vram: int
    keep_alive: float  # seconds; inf = forever; <= 0 = expire when idle
    # None until its first request ends: /api/ps then shows now + keep_alive, computed at each
    # call (sched.go loadedModels, expiresAt.IsZero()).
    expires_at: datetime | None
    active: int = 0
    deadline: float | None = None  # monotonic time the idle timer fires; None = not running
    expiring: bool = False  # an expiry is queued: unloads once idle, still serves requests
    expire_due: float = 0.0  # monotonic time the scheduler acts on that expiry
    closing: bool = False  # the process is exiting (sched.go processCompleted holds loadedMu)
    remove_at: float = 0.0
    crashed: bool = False  # the process died: its next health ping fails (needsReload)

    @property
    def stopping(self) -> bool:
        return self.expiring or self.closing

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
            expires_at=self.expires_at or expiry_after(self.keep_alive),
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
    oom_retried: bool = False  # sched.go LlmRequest.oomRetryAttempted: one retry in total


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


def victim_order(runner: Runner) -> tuple[int, str]:
    """sched.go ByDurationAndName: the duration as uint64 (so an overflowed negative one sorts
    after forever), then the blob path."""
    ns = 2**63 - 1 if math.isinf(runner.keep_alive) else round(runner.keep_alive * 1e9)
    return ns % 2**64, str(runner.blob_path)


def batch_surcharge(batch: int) -> int:
    """sched.go generationBatchSurcharge: 768 MiB for 1024, 2 GiB for 2048 (and above)."""
    return 2048 * MIB if batch >= 2048 else 768 * MIB if batch >= 1024 else 0


def batch_fits(batch: int, predicted: int, available: int) -> bool:
    """sched.go generationBatchFits (with generationBatchHasHeadroom)."""
    if predicted == 0 or available == 0:
        return True
    threshold = available * 80 // 100
    if predicted > threshold:
        return False
    if batch >= 2048 and predicted > available * 60 // 100:
        return False
    if 1024 <= batch < 2048 and predicted > available * 75 // 100:
        return False
    return batch_surcharge(batch) <= threshold - predicted


def automatic_batch(context: int, predicted: int, available: int) -> int:
    """sched.go automaticGenerationBatch (flash attention on): by context, stepped down to fit."""
    batch = 2048 if context > 32768 else 1024 if context > 4096 else DEFAULT_BATCH
    while batch > DEFAULT_BATCH and not batch_fits(batch, predicted, available):
        batch = 1024 if batch > 1024 else DEFAULT_BATCH
    return batch


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
        self._loaded: dict[Path, Runner] = {}  # insertion order = load order
        self._queue: deque[_Pending] = deque()
        self._loading: _Pending | None = None
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._ps_calls = 0
        self.load_count = LoadCounts(store)
        self.aborted_loads = 0
        # Every start of a llama-server: (model, num_ctx, models loaded at that moment).
        self.load_attempts: list[tuple[str, int, tuple[str, ...]]] = []
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
        """Every runner in the set, a closing one included (for tests), latest expiry first."""
        with self._cond:
            runners = [r.view() for r in self._loaded.values()]
        # ollama.md §2.4: latest expiry first, at one-second granularity.
        return sorted(runners, key=lambda v: -math.floor(v.expires_at.timestamp()))

    def ps_views(self) -> list[RunnerView]:
        """What /api/ps answers (routes.go PsHandler, sched.go loadedModels).

        While a runner's process exits, processCompleted holds loadedMu, so ps waits; the runner
        is gone from the set by the time it answers. Ties within one second: PsHandler's sort is
        stable, but its input comes from iterating a Go map, whose order is random; the emulator
        alternates load order and its reverse between calls, so a client that relies on that
        order fails every other call instead of by chance."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or not any(r.closing for r in self._loaded.values()))
            runners = [r.view() for r in self._loaded.values() if not r.closing]
            self._ps_calls += 1
            if self._ps_calls % 2 == 0:
                runners.reverse()
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
        embedding_only = "embedding" in spec.capabilities and "completion" not in spec.capabilities
        # ollama.md §2.7/§4.8: embedding models and some architectures get one slot.
        parallel = 1 if embedding_only or spec.family in SINGLE_SLOT_ARCHS else max(1, self.config.num_parallel)
        # An automatic batch is chosen at load (automatic_batch); until then, by context alone.
        auto_batch = automatic_batch(ctx * parallel, 0, 0)
        return RunnerOptions(
            num_ctx=ctx,
            ctx_explicit=ctx_explicit,
            num_batch=opts.get("num_batch", auto_batch),
            batch_explicit="num_batch" in opts,
            num_gpu=opts.get("num_gpu", -1),
            main_gpu=opts.get("main_gpu"),
            use_mmap=opts.get("use_mmap"),
            num_thread=opts.get("num_thread", 0),
            shift=True if shift is None else shift,
            parallel=parallel,
            draft_num_predict=opts.get("draft_num_predict", 0),
        )

    @staticmethod
    def needs_reload(runner: Runner, new: RunnerOptions) -> bool:
        """sched.go needsReload (ollama.md §4.7): a differing runner option means unload and load again."""
        if runner.crashed:
            return True  # the health ping fails
        old = runner.opts
        # Automatic contexts on both sides are not compared; explicit vs omitted is (#18129).
        if (old.ctx_explicit or new.ctx_explicit) and old.num_ctx != new.num_ctx:
            return True
        # Automatic batches on both sides are not compared; otherwise an automatic request
        # carries DefaultOptions' 512 and the runner the batch it was loaded with.
        new_batch = new.num_batch if new.batch_explicit else DEFAULT_BATCH
        if (old.batch_explicit or new.batch_explicit) and old.num_batch != new_batch:
            return True
        # A use_mmap the scheduler chose (CPU-only: false) stands in for an omitted one.
        new_mmap = old.use_mmap if old.use_mmap_auto and new.use_mmap is None else new.use_mmap
        if new_mmap != old.use_mmap:
            return True
        if new.num_gpu >= 0 and new.num_gpu != old.num_gpu:  # any negative num_gpu: not compared
            return True
        return (old.main_gpu, old.num_thread, old.draft_num_predict, old.shift) != (
            new.main_gpu,
            new.num_thread,
            new.draft_num_predict,
            new.shift,
        )

    @staticmethod
    def _file_size(model: StoredModel) -> int:
        try:
            return model.blob_path.stat().st_size
        except FileNotFoundError:
            return 0  # the load itself reports the missing blob (ollama.md §4.9)

    def _predicted(self, model: StoredModel, opts: RunnerOptions) -> int:
        # ollama.md §4.4 / sched.go load (llm.PredictServerVRAM): file size + KV for num_ctx x parallel.
        return self._file_size(model) + kv_cache_bytes(model, opts.num_ctx * opts.parallel)

    def _partial_offload(self, model: StoredModel, opts: RunnerOptions) -> bool:
        # sched.go explicitPartialGPUOffload; num_gpu 0 (CPU only) skips the fit check as well.
        return 0 <= opts.num_gpu < model.spec.block_count + 1

    def _vram_used(self) -> int:
        return sum(r.size_vram for r in self._loaded.values())

    def _uses_gpu(self, opts: RunnerOptions) -> bool:
        return self.config.gpu_vram_mib is not None and opts.num_gpu != 0

    def _launch_options(self, pending: _Pending) -> RunnerOptions:
        """sched.go load: the automatic batch for the memory available now, and use_mmap false
        on CPU-only loads (applyLlamaServerMmapDefaults, reason "cpu")."""
        opts = pending.opts
        if not opts.batch_explicit and self._completion(pending.model):
            available = max(self.config.vram_bytes - self._vram_used(), 0) if self._uses_gpu(opts) else 0
            batch = automatic_batch(opts.num_ctx * opts.parallel, self._predicted(pending.model, opts), available)
            opts = replace(opts, num_batch=batch)
        if opts.use_mmap is None and not self._uses_gpu(opts):
            opts = replace(opts, use_mmap=False, use_mmap_auto=True)
        return opts

    @staticmethod
    def _completion(model: StoredModel) -> bool:
        return "completion" in model.spec.capabilities

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
            # sched.go getRunner takes loadedMu, which processCompleted holds while a process exits.
            self._cond.wait_for(lambda: self._stopping or not any(r.closing for r in self._loaded.values()))
            if self._stopping:
                raise SchedulerError(500, "server shutting down")
            runner = self._loaded.get(model.blob_path)
            # ollama.md §4.2: loaded and no reload needed -> attach at once, bypassing the queue;
            # an expiring runner too (sched.go: it is still in the loaded set): it serves the
            # request and unloads afterwards, whatever keep_alive the request carried.
            if runner is not None and not self.needs_reload(runner, opts):
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
        # ollama.md §4.6: so a positive value cancels a pending unload of a busy runner (but
        # not a queued expiry: that one unloads once idle whatever the value).
        if keep_alive is not None:
            runner.keep_alive = keep_alive
        runner.deadline = None  # ollama.md §3.3: timer stopped while requests run
        self._cond.notify_all()
        return Lease(runner)

    def hold(self, model: StoredModel, keep_alive: float | None) -> Lease:
        with self._cond:
            runner = self._loaded.get(model.blob_path)
            if runner is None or runner.closing:
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
            if runner.keep_alive <= 0:
                # sched.go processCompleted: a duration <= 0 (0, a pending unload, or an
                # overflowed number) expires on going idle; expires_at is left as it was.
                self._send_expiry(runner)
            else:
                # ollama.md §3.3: sliding timer, expires_at = end of last request + keep_alive.
                runner.expires_at = expiry_after(runner.keep_alive)
                runner.deadline = None if math.isinf(runner.keep_alive) else time.monotonic() + runner.keep_alive
        self._cond.notify_all()

    def unload(self, model: StoredModel) -> None:
        """ollama.md §2.5 step 5 / sched.go expireRunner: expire the runner; never waits."""
        with self._cond:
            runner = self._loaded.get(model.blob_path)
            # ollama.md §4.6: a model still loading is not in the loaded set -> no-op.
            if runner is None or runner.closing:
                return
            runner.expires_at = local_now()  # ollama.md §3.3: "Stopping..." until removed
            self._expire(runner)

    def crash(self, model: StoredModel) -> None:
        """The runner's process dies: it stays listed, and its next health ping fails."""
        with self._cond:
            runner = self._loaded.get(model.blob_path)
            if runner is None:
                raise LookupError(f"{model.short} is not loaded")
            runner.crashed = True

    def expire_all_for_runtime_oom(self) -> None:
        """sched.go expireRunnersForRuntimeOOM: every loaded runner expires when idle."""
        with self._cond:
            for runner in list(self._loaded.values()):
                if not runner.closing:
                    self._expire(runner)

    def _expire(self, runner: Runner) -> None:
        # sched.go: stop the timer, duration 0; idle -> send the expiry now, busy -> when idle.
        runner.keep_alive = 0.0
        runner.deadline = None
        if runner.active == 0:
            self._send_expiry(runner)
        self._cond.notify_all()

    def _send_expiry(self, runner: Runner) -> None:
        # sched.go expiredCh: processCompleted acts on it after expiry_delay_s; until then the
        # runner stays in the set and a request may still attach to it.
        runner.deadline = None
        if runner.expiring or runner.closing:
            return  # a duplicate expired event is ignored
        runner.expiring = True
        runner.expire_due = time.monotonic() + self.config.expiry_delay_s
        if self.config.expiry_delay_s <= 0 and not self._faults().hold_expiries:
            self._process_expiry(runner, runner.expire_due)
        self._cond.notify_all()

    def _process_expiry(self, runner: Runner, now: float) -> None:
        if runner.active:
            runner.expire_due = now + EXPIRY_RETRY_S  # busy: re-sent every 10 ms until idle
            return
        # ollama.md §4.6: close the process; it leaves the set once it has exited.
        runner.closing = True
        runner.remove_at = now + self.config.unload_delay_s
        self._cond.notify_all()

    # -- timers ---------------------------------------------------------------------------------
    def _reaper(self) -> None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                wake = now + REAPER_MAX_WAIT_S
                for runner in list(self._loaded.values()):
                    if runner.closing:
                        if now >= runner.remove_at:
                            del self._loaded[runner.blob_path]
                            self._cond.notify_all()
                            continue
                        due = runner.remove_at
                    elif runner.expiring:
                        if self._faults().hold_expiries:
                            due = now + EXPIRY_HELD_POLL_S
                        elif now >= runner.expire_due:
                            self._process_expiry(runner, now)
                            due = runner.remove_at if runner.closing else runner.expire_due
                        else:
                            due = runner.expire_due
                    elif runner.active == 0 and runner.deadline is not None:
                        if now >= runner.deadline:  # ollama.md §3.3: idle timer fired
                            self._send_expiry(runner)
                            due = now
                        else:
                            due = runner.deadline
                    else:
                        continue
                    wake = min(wake, due)
                self._cond.wait(max(wake - now, 0.001))

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
        # ollama.md §4.5 / sched.go findRunnerToUnload: duration ascending (forever last), ties by
        # blob path; first idle one, else the first (and wait for its requests). No recency.
        candidates = sorted((r for r in self._loaded.values() if not r.stopping), key=victim_order)
        return next((r for r in candidates if r.active == 0), candidates[0])

    def _serve(self, pending: _Pending) -> Lease:
        """sched.go processPending for one request."""
        model = pending.model
        while True:
            if self._stopping:
                raise _Stopped
            runner = self._loaded.get(model.blob_path)
            # ollama.md §4.3 step 1: reuse a loaded runner that needs no reload (an expiring one too).
            if runner is not None and not runner.closing and not self.needs_reload(runner, pending.opts):
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
            opts = self._launch_options(pending)
            # ollama.md §4.3 steps 4-6: nothing loaded -> no fit check; CPU-only or an explicit
            # partial offload -> count limit only; otherwise the 80 % fit rule (§4.4), with the
            # batch surcharge of a completion model (sched.go load, generationBatchSurcharge).
            if live and self._uses_gpu(opts) and not self._partial_offload(model, opts):
                available = self.config.vram_bytes - self._vram_used()
                surcharge = batch_surcharge(opts.num_batch) if self._completion(model) else 0
                if self._predicted(model, opts) + surcharge > FIT_FRACTION * available:
                    if pending.oom_retried:
                        self._evict_all()  # sched.go processPending: the retry evicts every other runner
                    else:
                        self._evict_one()
                    continue
            lease = self._load(pending, opts)
            if lease is not None:
                return lease
            # sched.go processPending: a load that asks for its one out-of-memory retry; with other
            # runners loaded, all of them go first (evictAllAndWait), then the same loop retries.
            self._evict_all()

    def _evict_one(self) -> None:
        victim = self._pick_victim()
        self._expire(victim)
        self._wait_gone(victim)

    def _evict_all(self) -> None:
        """sched.go evictAllAndWait: expire every loaded runner and wait for all of them to go."""
        victims = [r for r in self._loaded.values() if not r.closing]
        for runner in victims:
            self._expire(runner)
        self._wait(lambda: all(self._loaded.get(r.blob_path) is not r for r in victims))

    def _load(self, pending: _Pending, opts: RunnerOptions) -> Lease | None:
        """sched.go load: start llama-server; None = retry once after an out-of-memory."""
        others = tuple(sorted(r.model.short for r in self._loaded.values()))
        self.load_attempts.append((pending.model.short, opts.num_ctx, others))
        self._loading = pending
        outcome: SchedulerError | _Stopped | None = None
        self._cond.release()  # the weights are read without holding the lock
        try:
            self._load_io(pending, opts)
        except (SchedulerError, _Stopped) as exc:
            outcome = exc
        finally:
            self._cond.acquire()
            self._loading = None
        if outcome is None:
            return self._install(pending, opts)
        if isinstance(outcome, SchedulerError) and outcome.status == 499:
            self.aborted_loads += 1
        if isinstance(outcome, _Stopped) or pending.oom_retried or not is_out_of_memory(outcome.message):
            raise outcome
        # sched.go load / reduceAutoNumCtxForLoadOOM: ONE retry in total. An automatic context is
        # lowered (to 32768, else 4096) for it; with other runners loaded, all of them are evicted
        # before it (both together when both apply); an explicit context alone loaded: no retry.
        lower = 32768 if opts.num_ctx > 32768 else 4096 if opts.num_ctx > 4096 else None
        if not opts.ctx_explicit and lower is not None:
            pending.oom_retried = True
            pending.opts = replace(pending.opts, num_ctx=lower)  # the batch follows in _launch_options
            return None
        if others:
            pending.oom_retried = True
            return None
        raise outcome

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

    def _load_io(self, pending: _Pending, opts: RunnerOptions) -> None:
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

        def hit(keys: Any) -> str | None:
            return next((k for k in keys if normalize(k) in names), None)

        if hit(faults.die_on_load):
            raise SchedulerError(500, "llama-server process has terminated: exit status 1")
        crashed = hit(faults.crash_log)
        if crashed is not None:
            # llm/llama_server.go WaitUntilRunning: the process exited; its kept error lines follow.
            kept = captured_errors(faults.crash_log[crashed])
            raise SchedulerError(
                500, "llama-server process has terminated: exit status 1" + (f": {kept}" if kept else "")
            )
        above = hit(faults.oom_above_ctx)
        if hit(faults.oom_on_load) or (above is not None and opts.num_ctx > faults.oom_above_ctx[above]):
            # llm/llama_server.go WaitUntilRunning: status error with an out-of-memory line.
            raise SchedulerError(
                500, f"llama-server reported out-of-memory during startup: {captured_errors(OOM_LOG_LINE)}"
            )

    def _install(self, pending: _Pending, opts: RunnerOptions) -> Lease:
        model = pending.model
        size = self._file_size(model) + kv_cache_bytes(model, opts.num_ctx * opts.parallel)
        free = max(self.config.vram_bytes - self._vram_used(), 0)
        if not self._uses_gpu(opts):
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
            expires_at=None,  # sched.go: set when the first request ends; ps computes it until then
        )
        # ollama.md §2.4: a runner joins the loaded set only once it is ready.
        self._loaded[model.blob_path] = runner
        self.load_count[model.owner] = dict.get(self.load_count, model.owner, 0) + 1
        return self._attach(runner, None)
