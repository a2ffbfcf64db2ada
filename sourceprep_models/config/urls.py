"""Endpoint URLs: the check a configured ``url`` must pass, and when two URLs reach the same server."""

from __future__ import annotations

from urllib.parse import urlsplit

# Names that all reach this machine's loopback interface from a client here (0.0.0.0 is a bind-all
# address, which a client connection turns into the local host).
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})
_SCHEME_PORTS = {"http": 80, "https": 443}
# An OpenAI-compatible API is served under /v1 of the same server; an endpoint may name either.
_API_SUFFIX = "/v1"


def http_url(value: str) -> str:
    """``value`` as an endpoint's base URL (no trailing slash); ValueError with the fix otherwise."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL; write it like http://127.0.0.1:11434")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port") from None
    return value.strip().rstrip("/")


def server_address(url: str) -> str:
    """The server an endpoint URL reaches, written so that two URLs for one server compare equal.

    Only what surely names the same server is folded together: the scheme's and the host's case,
    the loopback names, an IPv4 address written IPv6-mapped (``[::ffff:127.0.0.1]``, which the
    ``ollama`` command accepts in OLLAMA_HOST), a port the URL leaves to its scheme, a trailing slash and
    a trailing /v1. A URL without a port is where an HTTP client connects: port 80 or 443, whatever the
    server kind.

    >>> server_address("HTTP://LocalHost:11434/v1/")
    'http://loopback:11434'
    >>> server_address("http://[::1]:11434") == server_address("http://0.0.0.0:11434")
    True
    >>> server_address("http://[::ffff:10.0.0.5]:8080") == server_address("http://10.0.0.5:8080")
    True
    >>> server_address("https://api.example.com/v1")
    'https://api.example.com:443'
    >>> server_address("http://gateway/ollama")
    'http://gateway:80/ollama'
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = _unmapped((parts.hostname or "").lower())  # hostname drops the brackets of an IPv6 address
    if host in _LOOPBACK_HOSTS:
        host = "loopback"
    elif ":" in host:
        host = f"[{host}]"
    port = parts.port if parts.port is not None else _SCHEME_PORTS.get(scheme)
    path = parts.path.rstrip("/")
    if path.endswith(_API_SUFFIX):
        path = path[: -len(_API_SUFFIX)]
    return f"{scheme}://{host}:{port}{path}"


def _unmapped(host: str) -> str:
    """An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) as the IPv4 address it reaches; others unchanged."""
    if ":" not in host:
        return host
    import ipaddress

    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:
        return host
    return str(mapped) if mapped is not None else host
