"""The machines the config's servers run on: each host's budget and where it came from.

A server on another machine is planned against that machine's budget, never this one's RAM; a host
whose budget nobody wrote is planned without evictions (its servers decide), which doctor flags with
the lines that fix it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sourceprep_models.config.schema import LOCAL_HOST
from sourceprep_models.doctor.records import Check, ok, warning
from sourceprep_models.memory.sizing import host_budget
from sourceprep_models.units import human_bytes

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Config, Endpoint


def check_hosts(config: Config, endpoints: list[Endpoint]) -> list[Check]:
    """One line per other machine among ``endpoints`` whose servers hold models (not cloud APIs)."""
    by_host: dict[str, list[str]] = {}
    for endpoint in endpoints:
        if endpoint.host != LOCAL_HOST and _holds_models(endpoint):
            by_host.setdefault(endpoint.host, []).append(endpoint.name)
    checks = []
    for host, names in by_host.items():
        spec = config.hosts[host]
        budget = host_budget(spec)
        servers = ", ".join(names)
        details = {"host": host, "budget_bytes": budget.total, "source": budget.source, "endpoints": names}
        if budget.total is None:
            checks.append(
                warning(
                    f"host.{host}.budget",
                    f"host {host} ({servers}): budget unknown, so nothing is evicted there to make room (its "
                    "servers decide); this machine's RAM is never used for it",
                    f'add [hosts.{_toml_key(host)}] with budget = "24GiB" (what its models may occupy together)',
                    **details,
                )
            )
            continue
        checks.append(
            ok(
                f"host.{host}.budget",
                f"host {host} ({servers}): {human_bytes(budget.bytes)} for models ({budget.source}"
                + (f", {human_bytes(spec.headroom_bytes)} headroom" if spec.headroom_bytes else "")
                + ")",
                **details,
            )
        )
    return checks


def _holds_models(endpoint: Endpoint) -> bool:
    """A cloud API keeps nothing resident anywhere, so it has no host budget to worry about."""
    from sourceprep_models.providers import create_provider

    provider = create_provider(endpoint)
    try:
        return not provider.capabilities.always_ready
    finally:
        provider.close()


def _toml_key(name: str) -> str:
    """``name`` as a TOML table key: bare when it can be, quoted otherwise (a dotted host name)."""
    bare = name.replace("-", "").replace("_", "").isalnum() and name.isascii()
    return name if bare else f'"{name}"'
