"""The machines the config's servers run on: each host's budget and where it came from.

A server on another machine is planned against that machine's budget, never this one's RAM; a host
whose budget nobody wrote is planned without evictions (its servers decide), which doctor flags with
the lines that fix it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sourceprep_models.config.schema import LOCAL_HOST
from sourceprep_models.doctor.records import Check, ok, warning
from sourceprep_models.memory.sizing import host_budget, reported_budget
from sourceprep_models.units import human_bytes

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Config, Endpoint
    from sourceprep_models.doctor.system import DoctorSystem
    from sourceprep_models.memory.sizing import Budget


def remote_budgets(config: Config, endpoints: list[Endpoint], system: DoctorSystem) -> dict[str, Budget]:
    """The budget of each other machine among ``endpoints`` whose servers hold models (not cloud APIs): its
    ``[hosts]`` table's, else what all its servers report (as ``status`` plans with it, swap/residency.py)."""
    hosts = {endpoint.host for endpoint in _remote_model_servers(endpoints)}
    budgets = {}
    for host in (name for name in config.hosts if name in hosts):  # config order
        spec = config.hosts[host]
        budget = host_budget(spec)
        if budget.total is None:
            there = [e for e in _remote_model_servers(config.endpoints.values()) if e.host == host]
            ceilings = {endpoint.name: _ceiling(endpoint, system) for endpoint in there}
            budget = reported_budget(ceilings, spec.headroom_bytes) or budget
        budgets[host] = budget
    return budgets


def check_hosts(config: Config, endpoints: list[Endpoint], budgets: dict[str, Budget]) -> list[Check]:
    """One line per other machine among ``endpoints`` whose servers hold models, with its budget."""
    checks = []
    servers_here = _remote_model_servers(endpoints)
    for host, budget in budgets.items():
        spec = config.hosts[host]
        names = [endpoint.name for endpoint in servers_here if endpoint.host == host]
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


def _ceiling(endpoint: Endpoint, system: DoctorSystem) -> int | None:
    """The memory ceiling the endpoint's server reports, asked as a look; None when it reports none or does
    not answer (its own check names why)."""
    from sourceprep_models.errors import SourceprepError
    from sourceprep_models.providers._http import looking

    try:
        with looking(endpoint.status_timeout_s):
            return system.provider(endpoint).memory_ceiling()
    except SourceprepError:
        return None


def _remote_model_servers(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """The endpoints on other machines that hold models, in the order given."""
    return [endpoint for endpoint in endpoints if endpoint.host != LOCAL_HOST and _holds_models(endpoint)]


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
