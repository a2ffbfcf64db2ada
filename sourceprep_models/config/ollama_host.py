"""Resolve ``OLLAMA_HOST`` exactly as Ollama's own client does (ollama.md §1)."""

from __future__ import annotations

import ipaddress

from sourceprep_models.constants import OLLAMA_DEFAULT_PORT


def ollama_base_url(value: str | None) -> str:
    """The base URL a client should connect to for an ``OLLAMA_HOST`` value (ValueError: no host in it).

    >>> ollama_base_url(None)
    'http://127.0.0.1:11434'
    >>> ollama_base_url("box")
    'http://box:11434'
    >>> ollama_base_url("http://box")
    'http://box:80'
    >>> ollama_base_url("https://box")
    'https://box:443'
    >>> ollama_base_url("ollama.com")
    'https://ollama.com:443'
    >>> ollama_base_url("0.0.0.0:9999")
    'http://127.0.0.1:9999'
    >>> ollama_base_url("'[::]:11434'")
    'http://[::1]:11434'
    >>> ollama_base_url("http://box:8080/ollama")
    'http://box:8080/ollama'
    """
    # Surrounding spaces and quotes are stripped (envconfig Var).
    text = (value or "").strip().strip("\"'").strip()
    default_port = str(OLLAMA_DEFAULT_PORT)
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
        if text == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = "80"  # an explicit scheme without a port means the scheme's port
    elif scheme == "https":
        default_port = "443"
    hostport, _, path = hostport.partition("/")

    host, port = _split_host_port(hostport)
    if host is None:
        host, port = "127.0.0.1", default_port
        bare = hostport.strip("[]")
        if _is_ip(bare):
            host = bare
        elif hostport:
            host = hostport
    if port is None or not port.isdigit() or int(port) > 65535:
        port = default_port
    host = _connectable(host)
    if ":" in host:
        if not _is_ip(host):  # only an IPv6 address may hold colons; anything else is no host at all
            raise ValueError(f"{host!r} is not a host name or an IP address")
        host = f"[{host}]"
    url = f"{scheme}://{host}:{port}"
    return f"{url}/{path}" if path else url


def _split_host_port(hostport: str) -> tuple[str | None, str | None]:
    """Go's net.SplitHostPort: succeeds only when a port separator is present."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end == -1 or not hostport[end + 1 :].startswith(":"):
            return None, None
        return hostport[1:end], hostport[end + 2 :]
    if hostport.count(":") != 1:
        return None, None
    host, _, port = hostport.partition(":")
    return host, port


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _connectable(host: str) -> str:
    """A bind-all address cannot be connected to; use loopback instead (ConnectableHost)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if _is_ip(host) and ipaddress.ip_address(host).is_unspecified:
        return "::1"
    return host
