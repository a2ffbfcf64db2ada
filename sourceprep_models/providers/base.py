"""The one interface every model server is driven through, and the plain records it returns.

A provider knows one server's protocol and nothing about policy: it lists, loads and unloads when
told to, translates that server's errors into ``sourceprep_models.errors`` exactly once, and never
decides to evict anything. Ordering and waiting belong to the executor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from sourceprep_models.errors import Unsupported
from sourceprep_models.units import percent, processor, until

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Endpoint
    from sourceprep_models.memory.gguf import GGUFMetadata
    from sourceprep_models.memory.sizing import Runner
    from sourceprep_models.providers.diagnostics import (
        EndpointUses,
        Fetch,
        Finding,
        ServerIdentity,
        ServerProcess,
        SettingsQuestion,
    )
    from sourceprep_models.providers.prompts import PromptProtocol
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
    # A request that names another context length reloads the model (Ollama num_ctx, ollama.md §4.7), so a
    # model loaded with a context other than the configured one is reloaded by the next configured request.
    reloads_for_context: bool = False
    # The server says whether a model is loading or serving requests (``Provider.activity``), so an
    # eviction can wait for it instead of cutting a request off (llama.cpp slots, vLLM metrics).
    reports_activity: bool = False
    # The server's own unload never interrupts a running request: it unloads when the last one ends
    # (Ollama, ollama.md §4.5-4.6). Such a server reports no busy flag, and needs none.
    unload_waits_for_requests: bool = False


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
    # How the server runs it whatever a load asks (llama.cpp: the router's context): sizes follow it.
    runner: Runner | None = None
    # The engine behind a cluster router that serves it (production-stack ``engine_id``); None: the endpoint.
    engine: str | None = None

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
    # The engine behind a cluster router that holds it (production-stack ``engine_id``); None: the endpoint.
    engine: str | None = None

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
class Activity:
    """What a model is doing, as its server reports it: an eviction waits while it is ``busy``."""

    name: str
    loading: bool = False
    # Requests in flight (running or queued on it); None: the server did not say.
    requests: int | None = None

    @property
    def busy(self) -> bool:
        return self.loading or bool(self.requests)

    @property
    def doing(self) -> str:
        """What keeps it busy, for a message ("serving a request"); empty when idle."""
        if self.loading:
            return "loading"
        if self.requests:
            return "serving a request" if self.requests == 1 else f"serving {self.requests} requests"
        return ""


@dataclass(frozen=True)
class LoadRequest:
    name: str
    keep_alive: KeepAlive | None = None
    # Runner options the real traffic will use: a different num_ctx reloads the model (ollama.md §4.7).
    options: Mapping[str, object] = field(default_factory=dict)
    # None = ask the server whether it is an embedding model.
    embedding: bool | None = None
    deadline_s: float = 600.0
    # Told (stage, fraction 0..1) while the server reports the load's progress (llama.cpp's /models/sse);
    # servers that report none never call it.
    on_progress: Callable[[str, float], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LoadOutcome:
    name: str
    wall_s: float
    # The server's own account of the load time, where it reports one.
    server_load_s: float | None = None


class Provider:
    """One server's protocol. Subclasses implement the six required methods; the optional ones have
    defaults that say "this server has no such thing", so the core calls them without asking which
    kind of server it talks to (what a server can do is data: ``capabilities``).

    The class attributes and class methods under "facts" are what is known of the kind of server
    before connecting to one (``providers.provider_class(kind)``): doctor, bench and the prompt
    client read them instead of comparing kind strings."""

    kind: ClassVar[str]

    # -- facts about this kind of server (optional, with defaults) --------------------------------

    # How messages name the server ("LM Studio"); empty: the kind.
    server_label: ClassVar[str] = ""
    # How to start the server, for a message about an endpoint where nothing answers.
    start_hint: ClassVar[str] = "start the server"
    default_port: ClassVar[int | None] = None
    # How to put a model on the server; ``{name}`` is the model.
    get_hint: ClassVar[str] = "put it on the server"
    # Detect this server before the others: it mimics another server's replies (llama-swap answers Ollama's).
    detect_first: ClassVar[bool] = False
    # The server matches model names regardless of case (Ollama: types/model/name.go), so a
    # configured model is also found under a case variant of its name.
    names_fold_case: ClassVar[bool] = False
    # A generic protocol (the OpenAI API): any server that speaks it is the right one.
    accepts_any_server: ClassVar[bool] = False
    # The endpoint's url is the API base itself (…/v1 or any other path), not the server's root.
    url_is_api_base: ClassVar[bool] = False
    # The context the server loads a model at when the load names none, when that default is small
    # (LM Studio: 4096 unless changed, servers.md §1.3).
    default_context: ClassVar[int | None] = None
    # The variable the server's own command-line client reads for its address, and that command
    # (Ollama: OLLAMA_HOST, `ollama`): a stage's command gets it, and doctor compares it with the config.
    client_host_variable: ClassVar[str | None] = None
    client_command: ClassVar[str | None] = None

    @classmethod
    def client_url(cls, value: str) -> str:
        """The URL ``client_host_variable`` = ``value`` sends the server's command-line client to."""
        return value

    @classmethod
    def api_base_url(cls, url: str) -> str:
        """The base of the server's OpenAI-compatible API (``…/v1``) for an endpoint url."""
        root = url.rstrip("/")
        return root if cls.url_is_api_base or root.endswith("/v1") else f"{root}/v1"

    @classmethod
    def detect(cls, fetch: Fetch) -> ServerIdentity | None:
        """This server's identity when its replies (GETs through ``fetch``) show it is one; None otherwise."""
        return None

    @classmethod
    def is_server_process(cls, name: str, cmdline: tuple[str, ...]) -> bool:
        """Whether a local process is the server and holds its settings (its environment is read)."""
        return False

    @classmethod
    def prompt_protocol(cls, endpoint: Endpoint, *, autoload: bool = False) -> PromptProtocol:
        """How prompts are sent to this server: the OpenAI chat/completions stream unless it has its own.

        ``autoload``: the request itself may load the model where the server would otherwise refuse."""
        from sourceprep_models.providers.prompts import ChatCompletions

        return ChatCompletions(cls.api_base_url(endpoint.url))

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

    def memory_ceiling(self) -> int | None:
        """What the server lets its models occupy together, where it reports such a total (oMLX's pool
        ceiling); None where it reports none (Ollama, LM Studio, llama.cpp, vLLM report no total)."""
        return None

    def weight_paths(self, name: str) -> list[Path]:
        """The model's weight files when they are on this machine's disk (for page-cache warming)."""
        return []

    def direct_io(self, name: str, hardware: Mapping[str, Any]) -> str | None:
        """Why the server reads ``name``'s weights with direct I/O on this machine (``hardware``: the probe's
        record), bypassing the page cache, so that warming them would be wasted; None: it reads through it."""
        return None

    def gguf_metadata(self, name: str) -> GGUFMetadata | None:
        """The model's GGUF header, for the memory formula, when the server or the disk gives it."""
        return None

    def unload_all(self) -> None:
        """Unload everything in one request; only called when ``capabilities.unloads_all_at_once``."""
        raise Unsupported(f"{self.kind} has no single request that unloads every model")

    def activity(self, name: str) -> Activity:
        """Whether the model is loading or serving requests; only called when ``capabilities.reports_activity``."""
        raise Unsupported(f"{self.kind} does not report what its models are doing")

    def set_pinned(self, name: str, pinned: bool) -> None:
        """Set the server's own pin; only called when ``capabilities.pins_on_server``."""
        raise Unsupported(f"{self.kind} keeps no pins of its own")

    def support(self, identity: ServerIdentity, uses: EndpointUses) -> Finding:
        """Whether this server (and its version) can do what the config asks of it (doctor)."""
        from sourceprep_models.providers.diagnostics import Finding

        return Finding.ok(f"{self.server_label or self.kind} can load and unload over HTTP")

    def settings_findings(self, question: SettingsQuestion) -> dict[str, Finding]:
        """The server's own settings against what the config keeps together, by setting (doctor); {}: none."""
        return {}

    def context_fix(self, wanted: int) -> str | None:
        """How to give a loaded model ``wanted`` tokens of context when a reload cannot (a server argument)."""
        return None

    def predicts_reload(self, request: LoadRequest, resident: LoadedModel) -> bool | None:
        """Whether sending ``request`` makes the server load the resident model again for options other
        than the context; None: nothing beyond the context rule (``reloads_for_context``) is known."""
        return None

    def loaded_limit_fix(self, count: int) -> str | None:
        """How to let the server keep ``count`` models loaded, where ``max_loaded`` reports its cap."""
        return None

    def loaded_limit_in_effect(self, processes: list[ServerProcess], gpu_count: int) -> tuple[int, str] | None:
        """The cap on loaded models the server runs with, read from its process (``processes``: this machine's
        server processes of this kind), and how it was read; None when it cannot be read (advice must then not
        assume a value, and never suggests one below what may be in effect)."""
        return None

    def hidden_limit_fix(self, count: int, os_name: str) -> str | None:
        """How to raise a cap on loaded models that the server keeps but does not report, for this OS."""
        return None

    def keep_loaded_hint(self, count: int) -> str | None:
        """The server settings that keep ``count`` models loaded between calls, for advice; None: pinning does."""
        return None

    def pin_advice(self, name: str) -> str:
        """Why ``pin`` cannot work here and what to do instead (when ``capabilities.can_pin`` is false)."""
        return (
            f"endpoint {self.endpoint.name!r} ({self.kind}) keeps no models resident on this machine, so there is "
            f"nothing to pin; {name} is always ready there"
        )
