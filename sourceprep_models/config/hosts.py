"""Hosts: the machines a config's servers run on, each with its own memory budget.

Memory belongs to a machine, so every plan is made per host. ``local`` is this machine: probed, and
budgeted by ``[memory]``. Another machine is declared with ``[hosts.NAME]`` (no probe reaches it) and
its endpoints name it with ``host = "NAME"``; an endpoint that names no host belongs to the host whose
``address`` its URL reaches, to ``local`` when the URL reaches this machine (loopback, this machine's
name or one of its own addresses), and otherwise to a host of its own named after the URL's host,
whose budget is unknown (the servers there decide; nothing is planned against this machine's RAM).
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from sourceprep_models.config.keylines import KeyPath
from sourceprep_models.config.schema import LOCAL_HOST, Endpoint, HostSpec
from sourceprep_models.errors import ConfigError
from sourceprep_models.units import parse_size

T = TypeVar("T")


class Validator(Protocol):
    """What this module needs of ``config.validate.Validator`` (which calls it, so it cannot import it)."""

    def fail(self, keypath: KeyPath, problem: str) -> ConfigError: ...
    def table(self, value: object, keypath: KeyPath) -> dict[str, Any]: ...
    def known_keys(self, table: Mapping[str, object], allowed: Iterable[str], keypath: KeyPath) -> None: ...
    def string(self, value: object, keypath: KeyPath, *, nonempty: bool = True) -> str: ...
    def parsed(self, value: object, keypath: KeyPath, parse: Callable[[Any], T]) -> T: ...


_HOST_KEYS = ("budget", "headroom", "address")
# A client connecting to these reaches this machine (0.0.0.0 and :: are bind-all addresses, which a
# client connection turns into the local host).
_LOOPBACK = frozenset({"localhost", "localhost.localdomain", "::", "0.0.0.0", "::1"})


def parse_hosts(validator: Validator, raw: object) -> dict[str, HostSpec]:
    """``[hosts.NAME]`` tables; ``local`` is reserved (its budget is ``[memory]``)."""
    section = validator.table(raw, ("hosts",))
    hosts: dict[str, HostSpec] = {}
    addresses: dict[str, str] = {}
    for name, value in section.items():
        keypath: KeyPath = ("hosts", name)
        table = validator.table(value, keypath)
        if name == LOCAL_HOST:
            raise validator.fail(
                keypath, "is this machine, budgeted by [memory]; set memory.budget and memory.headroom there"
            )
        validator.known_keys(table, _HOST_KEYS, keypath)
        budget = None
        if "budget" in table and table["budget"] != "unknown":
            budget = validator.parsed(table["budget"], (*keypath, "budget"), _size)
            if budget == 0:
                raise validator.fail((*keypath, "budget"), 'must be larger than zero (or leave it out: "unknown")')
        headroom = 0
        if "headroom" in table:
            headroom = validator.parsed(table["headroom"], (*keypath, "headroom"), _size)
        if budget is not None and headroom >= budget:
            raise validator.fail((*keypath, "headroom"), "is as large as the whole budget; nothing would ever fit")
        address = None
        if "address" in table:
            address = _address(validator.string(table["address"], (*keypath, "address")))
            if is_this_machine(address):
                raise validator.fail(
                    (*keypath, "address"),
                    f"{address!r} is this machine (host {LOCAL_HOST!r}); remove the table and budget it with [memory]",
                )
            first = addresses.setdefault(address, name)
            if first != name:
                raise validator.fail(
                    (*keypath, "address"),
                    f"{address!r} is already the address of hosts.{first}; one machine is one host: merge the two",
                )
        hosts[name] = HostSpec(name=name, budget_bytes=budget, headroom_bytes=headroom, address=address)
    return hosts


def assign_hosts(
    validator: Validator,
    endpoints: Mapping[str, Endpoint],
    hosts: dict[str, HostSpec],
    named: Mapping[str, str],
) -> dict[str, Endpoint]:
    """Every endpoint with its host resolved; ``named``: the ``host = ...`` each endpoint wrote.

    Adds to ``hosts`` the implicit hosts (a remote URL's host, budget unknown). A declared host that
    no endpoint uses is an error: its budget would silently plan nothing."""
    by_address = {spec.address: spec.name for spec in hosts.values() if spec.address}
    resolved: dict[str, Endpoint] = {}
    used: set[str] = set()
    for name, endpoint in endpoints.items():
        if name in named:
            host = named[name]
            if host != LOCAL_HOST and host not in hosts:
                raise validator.fail(("endpoints", name, "host"), _unknown_host(host, hosts))
            source = "config"
        else:
            address = _address(urlsplit(endpoint.url).hostname or "")
            if address in by_address:
                host, source = by_address[address], "address"
            elif is_this_machine(address):
                host, source = LOCAL_HOST, "this machine"
            else:
                host, source = address, "url"
                if host not in hosts:
                    hosts[host] = HostSpec(name=host, implicit=True)
        used.add(host)
        resolved[name] = _with_host(endpoint, host, source)
    for spec in hosts.values():
        if not spec.implicit and spec.name not in used:
            raise validator.fail(
                ("hosts", spec.name),
                f'no endpoint runs on this host; add host = "{spec.name}" to its endpoints, or remove the table',
            )
    return resolved


def host_key(validator: Validator, table: dict[str, Any], keypath: KeyPath) -> str | None:
    """An endpoint's ``host = NAME``, checked as a string; resolved later by ``assign_hosts``."""
    if "host" not in table:
        return None
    return validator.string(table["host"], (*keypath, "host"))


def model_endpoints(
    validator: Validator, table: dict[str, Any], keypath: KeyPath, endpoints: Mapping[str, Endpoint]
) -> tuple[str, ...]:
    """A model's ``endpoints = [...]``: the servers that may serve it, in order of preference."""
    if "endpoints" not in table:
        return ()
    where = (*keypath, "endpoints")
    if "endpoint" in table:
        raise validator.fail(where, "give either endpoint or endpoints, not both")
    raw = table["endpoints"]
    if not isinstance(raw, list) or not raw:
        raise validator.fail(where, 'expected a non-empty array of endpoint names, e.g. ["desk-ollama", "mac"]')
    names: list[str] = []
    for index, value in enumerate(raw):
        name = validator.string(value, (*where, index))
        if name not in endpoints:
            known = ", ".join(endpoints)
            raise validator.fail((*where, index), f"no endpoint named {name!r}; known: {known}")
        if name in names:
            raise validator.fail((*where, index), f"{name!r} is listed twice; list each endpoint once")
        names.append(name)
    if len(names) > 1 and table.get("always_available") is True:
        raise validator.fail(where, "a pinned (always_available) model stays on one server; give it one endpoint")
    return tuple(names)


def is_this_machine(address: str) -> bool:
    """Whether a URL's host reaches this machine, judged without a DNS lookup (which could hang)."""
    if address in _LOOPBACK or address.startswith("127."):
        return True
    return address in _own_names()


@functools.cache
def _own_names() -> frozenset[str]:
    """This machine's host names and interface addresses (read once per process)."""
    hostname = socket.gethostname().lower()
    names = {hostname, hostname.split(".")[0]}
    try:
        import psutil

        for addresses in psutil.net_if_addrs().values():
            for address in addresses:
                if address.family in (socket.AF_INET, socket.AF_INET6):
                    names.add(address.address.split("%")[0].lower())
    except (ImportError, OSError):  # without the interface list, loopback and the host name still count
        pass
    return frozenset(names)


def _address(value: str) -> str:
    return value.strip().strip("[]").lower()


def _with_host(endpoint: Endpoint, host: str, source: str) -> Endpoint:
    from dataclasses import replace

    return replace(endpoint, host=host, host_source=source)


def _unknown_host(name: str, hosts: Mapping[str, HostSpec]) -> str:
    import difflib

    declared = [spec.name for spec in hosts.values() if not spec.implicit]
    close = difflib.get_close_matches(name, [LOCAL_HOST, *declared], n=1)
    hint = f"did you mean {close[0]!r}?" if close else f'declare it: [hosts.{name}] with budget = "24GiB"'
    return f"no host named {name!r}; {hint}"


def _size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'expected a size such as "24GiB", got {value!r}')
    return parse_size(value)
