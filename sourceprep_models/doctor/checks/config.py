"""Where the config is, whether it is valid, and where each endpoint came from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sourceprep_models.doctor.records import Check, ok, problem, warning

if TYPE_CHECKING:
    from sourceprep_models.config.locate import ConfigLocation
    from sourceprep_models.config.schema import Config, Endpoint


def check_config_found(location: ConfigLocation, exists: bool) -> Check:
    if location.path is None:
        return ok(
            "config.found",
            "no config file: built-in defaults (one Ollama endpoint at $OLLAMA_HOST or 127.0.0.1:11434)",
            layer=location.layer,
            path=None,
        )
    if not exists:
        return problem(
            "config.found",
            f"{location.path} (named by {location.layer}) does not exist",
            f"create it (see models.example.toml) or point {location.layer} at the right file",
            layer=location.layer,
            path=str(location.path),
        )
    return ok("config.found", f"{location.path} (from {location.layer})", layer=location.layer, path=str(location.path))


def check_config_valid(config: Config | None, error: str | None) -> Check:
    if config is None:
        message = error or "the config could not be read"
        reason, sep, fix = message.rpartition("; ")
        return problem("config.valid", reason if sep else message, fix if sep else "fix the config file", error=error)
    return ok(
        "config.valid",
        f"valid: {_count(len(config.endpoints), 'endpoint')}, {_count(len(config.models), 'model')}, "
        f"{_count(len(config.pipelines), 'pipeline')}",
        endpoints=list(config.endpoints),
        models=list(config.models),
        pipelines=list(config.pipelines),
    )


def check_endpoint_source(endpoint: Endpoint, config: Config, environ: Mapping[str, str]) -> Check:
    """Which precedence layer supplied the endpoint, and whether the server's own command-line client
    (Ollama: ``ollama`` reads OLLAMA_HOST) is sent to another server than the config."""
    from sourceprep_models.config.urls import server_address
    from sourceprep_models.providers import server_facts

    check_id = f"config.endpoint.{endpoint.name}"
    where = {
        "config": f"from {config.path}" if config.path else "from the config",
        "OLLAMA_HOST": "from $OLLAMA_HOST (no endpoints in the config)",
        "default": "built-in default ($OLLAMA_HOST is not set)",
    }.get(endpoint.source, endpoint.source)
    summary = f"{endpoint.kind} at {endpoint.url}, {where}"
    server = server_facts(endpoint.kind)
    variable = server.client_host_variable
    host = environ.get(variable) if variable else None
    if variable and endpoint.source == "config" and host:
        try:
            cli_url = server.client_url(host)
        except ValueError as exc:
            return warning(
                check_id,
                f"{summary}, but ${variable}={host!r} names no server ({exc}): the `{server.client_command}` "
                "command cannot use it",
                f"set {variable} to host:port, e.g. 127.0.0.1:11434, or unset it",
                source=endpoint.source,
                url=endpoint.url,
            )
        if server_address(cli_url) != server_address(endpoint.url):
            return warning(
                check_id,
                f"{summary}, but ${variable} sends the `{server.client_command}` command to {cli_url}: the two talk "
                "to different servers",
                f'make them agree: set url = "{cli_url}" under [endpoints.{endpoint.name}], or change {variable}',
                source=endpoint.source,
                url=endpoint.url,
                **{variable.lower(): cli_url},
            )
    return ok(check_id, summary, source=endpoint.source, url=endpoint.url, kind=endpoint.kind)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
