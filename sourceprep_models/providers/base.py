"""The one interface every model server is driven through, and the plain records it returns.

A provider knows one server's protocol and nothing about policy: it lists, loads and unloads when
told to, translates that server's errors into ``sourceprep_models.errors`` exactly once, and never
decides to evict anything. Ordering and waiting belong to the executor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from sourceprep_models.errors import Unsupported
from sourceprep_models.units import percent, processor, until

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Endpoint
    from sourceprep_models.memory.gguf import GGUFMetadata
    from sourceprep_models.units import KeepAlive


@dataclass(frozen=True)
class Capabilities:
    """What a server can be asked to do; commands adapt instead of failing silently."""

    can_load: bool
    can_unload: bool
    can_pin: bool
    reports_memory: bool
    # "Unload" keeps the weights in host RAM so the next load is a fast wake (vLLM sleep level 1).
    parks_in_ram: bool = False
    # A load can choose the context length (Ollama num_ctx, LM Studio context_length); llama.cpp's is
    # fixed by the server's arguments, so a different --ctx there is not a reason to reload.
    sets_context: bool = True
    # Nothing is ever resident on this machine (a cloud API): loads are no-ops and no budget is used.
    always_ready: bool = False
    # One request unloads every model (llama-swap /api/models/unload), also where per-model unload is missing.
    unloads_all_at_once: bool = False
    # The server has a pin of its own that this tool sets beside the config (oMLX is_pinned).
    pins_on_server: bool = False


@dataclass(frozen=True)
class ModelInfo:
    """A model the server can serve (downloaded / configured), whether or not it is loaded."""

    name: str
    # Two names with the same identity share one loaded instance (Ollama: one GGUF blob, ollama.md §4.1).
    identity: str
    size: int | None = None
    digest: str | None = None
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    trained_context: int | None = None
    capabilities: tuple[str, ...] = ()
    remote: bool = False

    @property
    def embedding_only(self) -> bool:
        return "embedding" in self.capabilities and "completion" not in self.capabilities


# What a listed model is doing. Only "loaded" (and "fixed") models answer requests at once.
ModelState = Literal["loaded", "loading", "parked", "asleep", "fixed"]
MODEL_STATES: tuple[ModelState, ...] = ("loaded", "loading", "parked", "asleep", "fixed")


@dataclass(frozen=True)
class LoadedModel:
    """A model resident on the server now (or parked by it, see ``state``)."""

    name: str
    size: int | None = None
    size_vram: int | None = None
    context_length: int | None = None
    expires_at: datetime | None = None
    digest: str | None = None
    # loaded: ready; loading: on its way; parked: weights moved to host RAM, woken in about a
    # second (vLLM sleep level 1, servers.md §4); asleep: weights released but the process kept
    # (vLLM level 2, llama.cpp --sleep-idle-seconds); fixed: the server's only model, which it
    # cannot unload (a single-model llama-server).
    state: ModelState = "loaded"
    # The server itself promises to keep it (llama-swap persistent group, oMLX is_pinned).
    server_pinned: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "size_vram": self.size_vram,
            "vram_percent": percent(self.size_vram, self.size) if self.size and self.size_vram is not None else None,
            "processor": processor(self.size, self.size_vram),
            "context_length": self.context_length,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "until": until(self.expires_at),
            "pinned": self.pinned,
            "state": self.state,
            "digest": self.digest,
        }

    @property
    def occupies_memory(self) -> bool:
        """Whether it holds the memory a load plans with (parked weights sit in host RAM, not the budget)."""
        return self.state in ("loaded", "loading", "fixed")

    @property
    def pinned(self) -> bool:
        """Kept by the server; Ollama shows "forever" as an expiry centuries away (ollama.md §2.4, §3.3)."""
        return self.server_pinned or (self.expires_at is not None and self.expires_at.year >= 2200)


@dataclass(frozen=True)
class LoadRequest:
    name: str
    keep_alive: KeepAlive | None = None
    # Runner options the real traffic will use: a different num_ctx reloads the model (ollama.md §4.7).
    options: Mapping[str, object] = field(default_factory=dict)
    # None = ask the server whether it is an embedding model.
    embedding: bool | None = None
    deadline_s: float = 600.0


@dataclass(frozen=True)
class LoadOutcome:
    name: str
    wall_s: float
    # The server's own account of the load time, where it reports one.
    server_load_s: float | None = None


class Provider:
    """One server's protocol. Subclasses implement the six required methods; the optional ones have
    defaults that say "this server has no such thing", so the core calls them without asking which
    kind of server it talks to (what a server can do is data: ``capabilities``)."""

    kind: ClassVar[str]
    # A class attribute, or set per instance when it depends on the endpoint (vLLM: parks_in_ram
    # follows the endpoint's sleep_level).
    capabilities: Capabilities
    endpoint: Endpoint

    # -- required ---------------------------------------------------------------------------------

    def list_available(self) -> list[ModelInfo]:
        """Every model the server could load."""
        raise NotImplementedError

    def describe(self, name: str) -> ModelInfo:
        """One model, or ``ModelNotFound`` (with "did you mean") when the server does not have it."""
        raise NotImplementedError

    def list_loaded(self) -> list[LoadedModel]:
        """Models resident now."""
        raise NotImplementedError

    def load(self, request: LoadRequest) -> LoadOutcome:
        """Load and return once the server says the model is ready."""
        raise NotImplementedError

    def unload(self, name: str) -> None:
        """Ask the server to release the model; it may finish later (the executor waits)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- optional: defaults for servers without the feature ---------------------------------------

    def max_loaded(self) -> int | None:
        """The server's own cap on loaded models (llama.cpp ``--models-max``), if it has and reports one."""
        return None

    def server_facts(self) -> dict[str, Any] | None:
        """What the server says about itself, for ``status`` (None: nothing to add)."""
        return None

    def weight_paths(self, name: str) -> list[Path]:
        """The model's weight files when they are on this machine's disk (for page-cache warming)."""
        return []

    def gguf_metadata(self, name: str) -> GGUFMetadata | None:
        """The model's GGUF header, for the memory formula, when the server or the disk gives it."""
        return None

    def unload_all(self) -> None:
        """Unload everything in one request; only called when ``capabilities.unloads_all_at_once``."""
        raise Unsupported(f"{self.kind} has no single request that unloads every model")

    def set_pinned(self, name: str, pinned: bool) -> None:
        """Set the server's own pin; only called when ``capabilities.pins_on_server``."""
        raise Unsupported(f"{self.kind} keeps no pins of its own")

    def pin_advice(self, name: str) -> str:
        """Why ``pin`` cannot work here and what to do instead (when ``capabilities.can_pin`` is false)."""
        return (
            f"endpoint {self.endpoint.name!r} ({self.kind}) keeps no models resident on this machine, so there is "
            f"nothing to pin; {name} is always ready there"
        )
