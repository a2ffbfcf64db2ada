"""API keys: read from the variable an endpoint names, checked, and kept out of every text that leaves
the process.

A key is read where a request is built (``api_key``), never stored on a provider, and remembered here
for the life of the process: a server (or an authenticating proxy in front of it) may quote the
request it refused, Authorization header included, in its error text, and a model may repeat its
input. ``scrub`` (for text) and ``scrub_data`` (for JSON documents) remove every key this process has
read; they are applied where text leaves it: the messages of the errors providers and prompts raise,
the output layer (stdout, stderr, ``--json``), the run-state file and the prompt outputs file.

A key that no HTTP header can carry (RFC 9110 §5.5: visible ASCII only; a newline, a control or a
non-ASCII character) is a config error naming its variable, raised before any request, so it never
reaches the HTTP library, whose own error would quote it.

Short keys: a key shorter than ``MIN_SUBSTRING_LENGTH`` is replaced only where it stands as a token of
its own (not inside a longer run of key characters). Replaced everywhere, a key like ``abc`` or
``qwen`` would cut model names, paths and words to pieces and make the messages wrong; a key that
short is guessable in any case, and where a server quotes the header (``Bearer abc``) it still stands
alone and is still removed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sourceprep_models.errors import ConfigError

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Endpoint

REDACTED = "***"
MIN_SUBSTRING_LENGTH = 8
# The characters of an RFC 7235 token68 (what a Bearer credential is made of), and the word characters.
_TOKEN_CHARS = r"\w\-.~+/"

_known: set[str] = set()


def api_key(endpoint: Endpoint, environ: Mapping[str, str] | None = None) -> str | None:
    """The key in the variable the endpoint names (``api_key_env``); None when it names none or it is
    empty. A key no HTTP header can carry is a ``ConfigError`` naming the variable, never the key."""
    variable = endpoint.api_key_env
    if not variable:
        return None
    value = (os.environ if environ is None else environ).get(variable)
    if not value:
        return None
    _known.add(value)  # even a rejected key: it must not be printed either
    bad = next((char for char in value if not "\x21" <= char <= "\x7e"), None)
    if bad is not None:
        raise ConfigError(
            f"the API key in {variable} (api_key_env of endpoint {endpoint.name!r}) contains {_describe(bad)}, "
            f"which an HTTP header cannot carry; set {variable} to the key alone"
        )
    return value


def auth_headers(endpoint: Endpoint, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    key = api_key(endpoint, environ)
    return {"Authorization": f"Bearer {key}"} if key else {}


def remember(secret: str) -> None:
    """Scrub ``secret`` too from now on (a session cookie a server handed out, for instance)."""
    if secret:
        _known.add(secret)


def scrub(text: str) -> str:
    """``text`` without any key this process has read, in any of the spellings a quote gives it."""
    for secret in sorted(_known, key=len, reverse=True):
        for form in _spellings(secret):
            if len(secret) >= MIN_SUBSTRING_LENGTH:
                text = text.replace(form, REDACTED)
            elif form in text:
                pattern = rf"(?<![{_TOKEN_CHARS}]){re.escape(form)}(?![{_TOKEN_CHARS}])"
                text = re.sub(pattern, REDACTED, text)
    return text


def scrub_data(value: Any) -> Any:
    """A JSON document (or any nest of dicts, lists and strings) with ``scrub`` applied to every string."""
    if not _known:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {scrub_data(key): scrub_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_data(item) for item in value]
    return value


def _spellings(secret: str) -> list[str]:
    """The key as sent, and as a JSON string or a Python repr quotes it (``"`` and ``\\`` escaped)."""
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret)[1:-1]}
    return sorted(forms, key=len, reverse=True)


def _describe(char: str) -> str:
    if char in "\r\n":
        return "a line break"
    if char == " ":
        return "a space"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return "a control character"
    return "a non-ASCII character"
