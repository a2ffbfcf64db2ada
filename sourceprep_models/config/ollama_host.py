"""Resolve ``OLLAMA_HOST`` exactly as Ollama's own client does (ollama.md §1).

Two steps, as in Ollama: ``envconfig/config.go`` ``Host()`` turns the variable into a URL and never
fails (a port it cannot read becomes the default port); the ``ollama`` command then hands that URL
to Go's ``net/http`` (``api/client.go`` ``ClientFromEnvironment``, ``Client.do``), which re-parses
it and refuses some of what ``Host()`` let through: a host with a character a URL host cannot
carry (``user@host``: "invalid URL escape"), a signed port (``host:+80``: "invalid port"), a scheme
other than http and https. Those are errors here too (``ValueError``, a bad config for the caller);
everything else resolves to the URL the ``ollama`` command connects to, with a bind-all address
replaced by loopback (``ConnectableHost``).
"""

from __future__ import annotations

import ipaddress

from sourceprep_models.constants import OLLAMA_DEFAULT_PORT

# Bytes Go's url.URL.String escapes in a host (net/url shouldEscape, encodeHost) into a %XX whose
# first hex digit is below 8, which url.Parse then refuses in a host (unescape: "invalid URL
# escape"). "%" itself escapes to "%25", the one such escape a host may hold (an IPv6 zone).
_HOST_SAFE = frozenset("!$&'()*+,;=:[]<>\"-._~%")


def ollama_host_url(value: str | None) -> str:
    """``envconfig.Host()``: the URL for an ``OLLAMA_HOST`` value, as Go's ``url.URL.String`` writes it.

    >>> ollama_host_url(None)
    'http://127.0.0.1:11434'
    >>> ollama_host_url("::ffff:0.0.0.0")
    'http://0.0.0.0:11434'
    >>> ollama_host_url("box:+80")
    'http://box:+80'
    """
    # envconfig Var strips spaces, then quotes; Host() strips spaces once more.
    text = (value or "").strip().strip("\"'").strip()
    default_port = str(OLLAMA_DEFAULT_PORT)
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
        if text == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":  # compared as written: "HTTP://box" keeps port 11434
        default_port = "80"
    elif scheme == "https":
        default_port = "443"
    hostport, _, path = hostport.partition("/")

    host, port = _split_host_port(hostport)
    if host is None or port is None:
        host, port = "127.0.0.1", default_port
        ip = _parse_ip(hostport.strip("[]"))
        if ip is not None:
            host = ip  # net.ParseIP(...).String(): canonical, an IPv4-mapped address as IPv4
        elif hostport:
            host = hostport
    if not _go_parse_port_ok(port):
        port = default_port  # slog.Warn("invalid port, using default")
    url = f"{scheme}://{_join_host_port(host, port)}"
    return f"{url}/{path}" if path else url


def ollama_base_url(value: str | None) -> str:
    """The base URL the ``ollama`` command connects to for an ``OLLAMA_HOST`` value.

    ``ValueError`` (saying why) for every value the ``ollama`` command cannot use either.

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
    url = ollama_host_url(value)
    scheme, _, rest = url.partition("://")
    # url.Parse lowercases the scheme; http.Client knows only these two.
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"{scheme!r}" if scheme else "an empty one"
        raise ValueError(f"the scheme is {shown}, and the `ollama` command speaks only http and https")
    hostport, _, path = rest.partition("/")
    host, port = _split_host_port(hostport)
    assert host is not None and port is not None  # ollama_host_url always joins a host and a port
    if not port.isascii() or not port.isdigit():  # url.Parse validOptionalPort: digits only, no sign
        raise ValueError(f"{port!r} is not a port (the `ollama` command fails on it too: invalid port)")
    bad = sorted({char for char in host if _breaks_url(char)})
    if bad:
        shown = " ".join(repr(char) for char in bad)
        why = "a user name cannot go in it; " if "@" in bad else ""
        raise ValueError(
            f"{host!r} holds {shown}, which a URL host cannot carry ({why}the `ollama` command fails on it "
            "too: invalid URL escape)"
        )
    host = _connectable(host)
    if ":" in host and _parse_ip(host) is None:
        # Only an IPv6 address may hold colons; anything else names no host at all.
        raise ValueError(f"{host!r} is not a host name or an IP address")
    url = f"{scheme}://{_join_host_port(host, str(int(port)))}"
    return f"{url}/{path}" if path else url


def _split_host_port(hostport: str) -> tuple[str | None, str | None]:
    """Go's net.SplitHostPort: succeeds only when a port separator is present."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end == -1 or not hostport[end + 1 :].startswith(":"):
            return None, None
        host, port = hostport[1:end], hostport[end + 2 :]
        if "[" in host or ":" in port or "[" in port or "]" in port:  # "too many colons", "unexpected ["
            return None, None
        return host, port
    if hostport.count(":") != 1 or "[" in hostport or "]" in hostport:
        return None, None
    host, _, port = hostport.partition(":")
    return host, port


def _join_host_port(host: str, port: str) -> str:
    """Go's net.JoinHostPort: brackets around a host with a colon."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _go_parse_port_ok(port: str) -> bool:
    """``strconv.ParseInt(port, 10, 32)`` without error and within 0..65535: ASCII digits, one optional
    sign, no underscores (those need base 0)."""
    digits = port[1:] if port[:1] in ("+", "-") else port
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    number = int(port)
    return 0 <= number <= 65535


def _parse_ip(text: str) -> str | None:
    """Go's ``net.ParseIP(text).String()``, or None where ParseIP fails (a zone, leading zeros)."""
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _breaks_url(char: str) -> bool:
    return char.isascii() and not char.isalnum() and char not in _HOST_SAFE


def _connectable(host: str) -> str:
    """A bind-all address cannot be connected to; use loopback instead (``ConnectableHost``: IPv4
    loopback where ``ip.To4()`` is an address, which includes ``::ffff:0.0.0.0``)."""
    if host == "":
        return "127.0.0.1"  # Go dials an empty host as the local system
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "::1"
    return host
