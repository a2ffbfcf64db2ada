"""How much memory a model will occupy once loaded, and how much the machine lets models use.

Prediction sources, best first:
1. ``measured`` — what the server reported after an earlier load with the same context
   (Ollama's ``/api/ps`` ``size`` is the runner's real buffers; a local llama.cpp router's child
   process's resident memory), remembered per model identity and context;
2. ``estimate`` — hardware.md's formula (weights + KV cache + compute buffer) from GGUF metadata;
3. ``file size`` — the weights file plus 10 %, when nothing better is known.

Where the server, not the request, decides how a model runs (llama.cpp: the router's ``--ctx-size``
or the model's preset), the provider describes that in a ``Runner``; its context is then the one
predicted for and the one a measurement is remembered under.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sourceprep_models.config.schema import HostSpec, MemoryPolicy
from sourceprep_models.errors import SourceprepError
from sourceprep_models.fs import write_atomic
from sourceprep_models.memory.runtime import LLAMA_SERVER, OLLAMA, Runtime

GIB = 1024**3
# Ollama's default context by total VRAM when nothing sets num_ctx (ollama.md §4.8).
_CONTEXT_TIERS = ((47 * GIB, 262144), (23 * GIB, 32768))
_DEFAULT_CONTEXT = 4096
UNLIMITED = 2**62


@dataclass(frozen=True)
class Runner:
    """How the server will run a model whatever the request says (llama-server's arguments)."""

    context: int | None  # KV cells the server gives the model; None: as if the server did not say
    kv_cache_type: str = "f16"
    num_batch: int = 512  # the physical batch (llama-server --ubatch-size)
    runtime: Runtime = LLAMA_SERVER


@dataclass(frozen=True)
class Prediction:
    bytes: int
    source: str  # "measured", "estimate" or "file size"
    num_ctx: int


@dataclass(frozen=True)
class Budget:
    bytes: int  # what models may occupy together, headroom already taken off
    total: int | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "total": self.total, "source": self.source}


def memory_budget(policy: MemoryPolicy, hardware: dict[str, Any]) -> Budget:
    """The configured budget, else the hardware probe's, minus the configured headroom."""
    if policy.budget_bytes is not None:
        total: int | None = policy.budget_bytes
        source = "memory.budget in the config"
    else:
        total = hardware.get("budget_bytes")
        source = str(hardware.get("budget_source") or "hardware probe")
    if total is None:
        # Without a number there is nothing to plan against: let everything "fit" and let the
        # server's own scheduler decide, rather than refusing every load.
        return Budget(bytes=UNLIMITED, total=None, source="unknown (" + source + "); not planning evictions")
    return Budget(bytes=max(0, total - policy.headroom_bytes), total=total, source=source)


def host_budget(host: HostSpec) -> Budget:
    """Another machine's budget: what ``[hosts.NAME]`` says (no probe reaches it), headroom taken off."""
    if host.budget_bytes is None:
        where = f"[hosts.{host.name}] has no budget" if not host.implicit else f"no [hosts] table for {host.name}"
        return Budget(bytes=UNLIMITED, total=None, source=f"unknown ({where}); not planning evictions")
    return Budget(
        bytes=max(0, host.budget_bytes - host.headroom_bytes),
        total=host.budget_bytes,
        source=f"hosts.{host.name}.budget in the config",
    )


def reported_budget(ceilings: dict[str, int | None], headroom: int) -> Budget | None:
    """A host with no configured budget, whose every server reports what its models may occupy (oMLX's
    memory ceiling; ``ceilings`` by endpoint name): the sum of those, headroom taken off. One server that
    reports nothing leaves the host unknown (None): no guessing."""
    known = [ceiling for ceiling in ceilings.values() if ceiling is not None]
    if not ceilings or len(known) != len(ceilings):
        return None
    total = sum(known)
    names = ", ".join(ceilings)
    return Budget(max(0, total - headroom), total, f"reported by {names} (the server's memory ceiling)")


def default_context(hardware: dict[str, Any], trained: int | None) -> int:
    """The context Ollama picks when a request sets none: tiered by total VRAM, capped at the trained."""
    vram = sum(gpu.get("total_bytes") or 0 for gpu in hardware.get("gpus") or [])
    context = next((ctx for floor, ctx in _CONTEXT_TIERS if vram >= floor), _DEFAULT_CONTEXT)
    return min(context, trained) if trained else context


def backend_of(hardware: dict[str, Any]) -> str:
    vendors = {gpu.get("vendor") for gpu in hardware.get("gpus") or []}
    if "apple" in vendors:
        return "metal"
    if "nvidia" in vendors:
        return "cuda"
    if "amd" in vendors:
        return "rocm"
    return "cpu"


class SizeBook:
    """Measured sizes from earlier loads, keyed by model identity and context, kept in the cache dir."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, int] | None = None

    def _load(self) -> dict[str, int]:
        if self._data is None:
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                self._data = {str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
            except (OSError, ValueError):
                self._data = {}
        return self._data

    def get(self, identity: str, num_ctx: int) -> int | None:
        return self._load().get(f"{identity}@{num_ctx}")

    def put(self, identity: str, num_ctx: int, size: int) -> None:
        data = self._load()
        key = f"{identity}@{num_ctx}"
        if data.get(key) == size:
            return
        data[key] = size
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True))
        except (OSError, SourceprepError):
            pass  # a cache that cannot be written only costs accuracy later


def default_size_book() -> SizeBook:
    from sourceprep_models.paths import size_book_file

    return SizeBook(size_book_file())


def predict(
    identity: str,
    file_size: int | None,
    trained_context: int | None,
    num_ctx: int | None,
    hardware: dict[str, Any],
    book: SizeBook,
    metadata: Callable[[], Any] | None = None,
    runner: Runner | None = None,
) -> Prediction:
    """The predicted resident size for a model loaded with ``num_ctx`` (None = the server default).

    A ``runner`` with a context overrides ``num_ctx``: that server gives every load its own."""
    served = runner.context if runner is not None else None
    context = served or num_ctx or default_context(hardware, trained_context)
    if trained_context:
        context = min(context, trained_context)  # the server caps it the same way (ollama.md §4.7)
    measured = book.get(identity, context)
    if measured is not None:
        return Prediction(measured, "measured", context)
    meta = None
    if metadata is not None:
        try:
            meta = metadata()
        except Exception:  # metadata is an optimisation: any failure falls back to the file size
            meta = None
    if meta is not None:
        from sourceprep_models.memory.formula import estimate

        try:
            result = estimate(
                meta,
                num_ctx=context,
                backend=backend_of(hardware),
                kv_cache_type=runner.kv_cache_type if runner else "f16",
                num_batch=runner.num_batch if runner else 512,
                runtime=runner.runtime if runner else OLLAMA,
            )
        except ValueError:  # metadata without usable tensor sizes: fall through to the file size
            pass
        else:
            return Prediction(result.total_bytes, "estimate", context)
    return Prediction(int((file_size or 0) * 1.1), "file size", context)
