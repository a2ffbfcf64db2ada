"""Typed, validated configuration records. Built only by ``config.loader``; immutable afterwards."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sourceprep_models.units import KeepAlive

MODEL_KINDS = ("chat", "embedding")
# This machine: probed, and budgeted by ``[memory]``.
LOCAL_HOST = "local"
# What an endpoint's status_timeout may be: long enough for a remote API, short enough to stay a look.
STATUS_TIMEOUT_RANGE_S = (0.1, 60.0)


@dataclass(frozen=True)
class EndpointKinds:
    """The endpoint kinds the provider registry can drive, and what the config checks per kind.

    The config sits below the providers in the layers and cannot read their registry, so whoever
    loads a config hands this in: ``sourceprep_models.providers.endpoint_kinds()``.
    """

    names: tuple[str, ...]
    # The kind whose default URL follows OLLAMA_HOST as Ollama's own client reads it; a config
    # without endpoints gets one endpoint of this kind.
    ollama_host_kind: str
    # Kinds whose unload is a sleep with a level, the only ones that take ``sleep_level``.
    sleep_level_kinds: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Endpoint:
    """One model server the tool talks to."""

    name: str
    kind: str
    url: str
    api_key_env: str | None = None
    load_timeout_s: float | None = None
    unload_timeout_s: float | None = None
    # A look (`status`, `doctor`): connecting and each read give up after this, and a server that has not
    # answered by then is reported unreachable. Local servers answer these reads in milliseconds.
    status_timeout_s: float = 3.0
    # vLLM only: the sleep level an "unload" uses (servers.md §4): 1 parks the weights in host RAM
    # (fast wake), 2 discards them (frees host RAM too; wake reloads them from disk).
    sleep_level: int = 1
    # Where the URL came from, for `doctor` and error messages: "config", "OLLAMA_HOST" or "default".
    source: str = "config"
    # The machine the server runs on (``config.hosts``), and how that was decided: "config" (host =),
    # "address" (a host's address), "this machine" (loopback or an own address) or "url" (a host of its own).
    host: str = LOCAL_HOST
    host_source: str = "this machine"


@dataclass(frozen=True)
class HostSpec:
    """Another machine whose servers the config uses, and what its models may occupy together."""

    name: str
    budget_bytes: int | None = None  # None: unknown, the servers there decide (no evictions planned)
    headroom_bytes: int = 0
    address: str | None = None  # endpoints whose URL reaches this host name or IP belong to it
    implicit: bool = False  # not declared: named after an endpoint URL's host


@dataclass(frozen=True)
class ModelSpec:
    """A model the config knows: its name on the server and how it should be loaded."""

    key: str
    name: str
    endpoint: str
    keep_alive: KeepAlive | None = None
    context_length: int | None = None
    options: Mapping[str, object] = field(default_factory=dict)
    always_available: bool = False
    kind: str | None = None
    # The endpoints that may serve it, in order of preference (``endpoints = [...]``); ``endpoint`` is the
    # first. With more than one, each load places it (swap.placement): where it is resident, else where it
    # fits with the fewest bytes to load.
    endpoints: tuple[str, ...] = ()

    @property
    def candidates(self) -> tuple[str, ...]:
        return self.endpoints or (self.endpoint,)

    def runner_options(self) -> dict[str, object]:
        """The options every request for this model must carry so the server never reloads it."""
        options = dict(self.options)
        if self.context_length is not None:
            options["num_ctx"] = self.context_length
        return options


@dataclass(frozen=True)
class MemoryPolicy:
    budget_bytes: int | None = None  # None = "auto": from the hardware probe
    headroom_bytes: int = 1024**3
    single_model: bool = False
    allow_evict_pinned: bool = False


STAGE_WHEN = ("always", "previous_failed")


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline: a model and its work (prompts sent by the tool and/or a shell command)."""

    name: str
    model: str
    repeat: int = 1
    prompts: tuple[str, ...] = ()
    prompts_file: str | None = None
    command: str | None = None
    max_tokens: int = 128  # per prompt
    # "previous_failed": runs only when the stage before it failed (an agent's debug step); a stage
    # followed by one of these does not stop the run when it fails.
    when: str = "always"


@dataclass(frozen=True)
class StageGroup:
    """Stages repeated together: ``(embed → rerank) x 20`` is one group with ``repeat = 20``."""

    name: str
    stages: tuple[Stage, ...]
    repeat: int = 1


@dataclass(frozen=True)
class Pipeline:
    name: str
    stages: tuple[Stage | StageGroup, ...]
    description: str | None = None


@dataclass(frozen=True)
class Config:
    path: Path | None
    endpoints: Mapping[str, Endpoint]
    models: Mapping[str, ModelSpec]
    memory: MemoryPolicy = MemoryPolicy()
    pipelines: Mapping[str, Pipeline] = field(default_factory=dict)
    default_endpoint: str = "ollama"
    hosts: Mapping[str, HostSpec] = field(default_factory=dict)  # other machines; "local" is not listed

    def find_models(
        self, name: str, endpoint: str | None = None, *, folds_case: Callable[[str], bool] | None = None
    ) -> list[ModelSpec]:
        """Configured models matching a config key or a server name, optionally on one endpoint.

        ``folds_case(kind)`` says whether that kind of server matches model names regardless of
        case (Ollama does); there, a name that matches nothing exactly matches a case variant."""
        candidates = [spec for spec in self.models.values() if endpoint is None or endpoint in spec.candidates]
        found = [spec for spec in candidates if name in (spec.key, spec.name)]
        if not found and folds_case is not None:
            wanted = name.casefold()
            found = [
                spec
                for spec in candidates
                if spec.name.casefold() == wanted
                and spec.endpoint in self.endpoints
                and folds_case(self.endpoints[spec.endpoint].kind)
            ]
        # A key match is exact intent; prefer it over a server-name match.
        keyed = [spec for spec in found if spec.key == name]
        return keyed or found
