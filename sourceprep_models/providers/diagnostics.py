"""What a provider tells ``doctor`` and ``bench`` about its kind of server, as plain records.

Doctor asks each server about itself without knowing which kind it talks to: every provider class
recognises its server from replies only that server gives (``Provider.detect``), judges whether the
server and its version can do what the config asks (``Provider.support``) and reads its own
settings (``Provider.settings_findings``). The answers are ``Finding`` records; doctor gives each
an id and puts it in its checklist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

Verdict = Literal["ok", "warning", "problem"]


@dataclass(frozen=True)
class HttpReply:
    """A server's answer to a GET: the status and the JSON body (a ``str`` when it is not JSON)."""

    status: int
    body: Any

    @property
    def json(self) -> dict[str, Any] | None:
        """The body when it is a JSON object without an error in it; a 200 alone proves nothing (§7)."""
        if 200 <= self.status < 300 and isinstance(self.body, dict) and "error" not in self.body:
            return self.body
        return None


# GET a path on the server's root.
Fetch = Callable[[str], HttpReply]


@dataclass(frozen=True)
class ServerIdentity:
    """What really answers at an endpoint's URL."""

    kind: str | None  # None: none of the known signatures
    version: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)
    evidence: str = ""


@dataclass(frozen=True)
class ServerProcess:
    """A local model-server process and its environment (None when the OS refused to show it)."""

    pid: int
    name: str
    cmdline: tuple[str, ...]
    environ: Mapping[str, str] | None
    reason: str | None = None  # why ``environ`` is None


@dataclass(frozen=True)
class Finding:
    """A provider's verdict on one aspect of its server: the summary, and the fix for anything not ok."""

    status: Verdict
    summary: str
    fix: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, summary: str, **details: Any) -> Finding:
        return cls("ok", summary, None, details)

    @classmethod
    def warning(cls, summary: str, fix: str, **details: Any) -> Finding:
        return cls("warning", summary, fix, details)

    @classmethod
    def problem(cls, summary: str, fix: str, **details: Any) -> Finding:
        return cls("problem", summary, fix, details)


@dataclass(frozen=True)
class EndpointUses:
    """What the config asks of one endpoint."""

    models: tuple[str, ...] = ()  # server names of the configured models and pipeline stages on it
    shares_pipeline: str | None = None  # a pipeline that also uses another memory-holding endpoint


@dataclass(frozen=True)
class Need:
    """How many models the config wants resident together on one endpoint, and which."""

    count: int
    models: tuple[str, ...]
    bytes: int
    reason: str


@dataclass(frozen=True)
class Reuse:
    """A model a pipeline uses again after other stages, and the longest idle gap between its uses."""

    pipeline: str
    model: str
    key: str
    gap_s: float | None  # None: the stages in between have no timings yet (the pipeline never ran)


@dataclass(frozen=True)
class SettingsQuestion:
    """What doctor knows when it asks a server about its own settings. The callables are read only by a
    server whose settings need them (reading processes and saved runs costs time)."""

    os_name: str
    gpu_count: int
    identity: ServerIdentity
    need: Need | None  # the most models the config keeps together on the endpoint (None: not planned)
    # (key, name) of the configured models that set no keep_alive of their own.
    relying: tuple[tuple[str, str], ...]
    processes: Callable[[], list[ServerProcess]]
    reuses: Callable[[], list[Reuse]]
    # A count limit the listing suggests: (models loaded, a pin that fits beside them yet is not loaded).
    limit_seen: Callable[[], tuple[int, str] | None]


def is_local(url: str) -> bool:
    """Whether the URL names this machine (a server whose processes and settings can be read here)."""
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1", "0.0.0.0", "::") or host.startswith("127.")


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)
