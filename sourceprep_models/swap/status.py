"""Gather what every endpoint has loaded, plus the hardware view, into one plain report."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.errors import ExitCode, SourceprepError
from sourceprep_models.providers.base import LoadedModel, Provider


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

    def to_dict(self) -> dict[str, Any]:

        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "ok": self.error is None,
            "error": self.error,
            "server": self.server,
            "models": [{**model.to_dict(), "always_available": model.name in self.pins} for model in self.models],
        }


@dataclass
class StatusReport:
    endpoints: list[EndpointStatus]
    hardware: dict[str, Any]

    @property
    def exit_code(self) -> int:
        """0 when every endpoint answered; otherwise the first failing endpoint's code."""
        return next((ep.exit_code for ep in self.endpoints if ep.exit_code), ExitCode.OK)

    def to_dict(self) -> dict[str, Any]:
        return {"endpoints": [ep.to_dict() for ep in self.endpoints], "hardware": self.hardware}


def collect_status(
    endpoints: Iterable[Endpoint],
    make_provider: Callable[[Endpoint], Provider],
    hardware: dict[str, Any],
    pins: Mapping[str, set[str]] | None = None,
) -> StatusReport:
    """Ask each endpoint for its loaded models; one failing endpoint never hides the others.

    ``pins`` maps an endpoint name to the server names of the models the config keeps always
    available there, so that servers without pins of their own still show them as pinned."""
    statuses = []
    for endpoint in endpoints:
        status = EndpointStatus(
            name=endpoint.name, kind=endpoint.kind, url=endpoint.url, pins=(pins or {}).get(endpoint.name, set())
        )
        try:
            provider = make_provider(endpoint)
            try:
                status.models = provider.list_loaded()
                status.server = provider.server_facts()
            finally:
                provider.close()
        except SourceprepError as exc:
            status.error = exc.message
            status.exit_code = exc.exit_code
        statuses.append(status)
    return StatusReport(endpoints=statuses, hardware=hardware)
