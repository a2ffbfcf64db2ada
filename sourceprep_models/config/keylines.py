"""Where each key of a TOML text sits: line numbers for error messages, and keys written back.

tomlkit does not keep positions, so this light scan of the source supplies them: every key path
that starts a line (table headers, ``key = value``) maps to its 1-based line number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

KeyPath = tuple[str | int, ...]


def toml_key(key: str) -> str:
    """A key as TOML needs it written: bare when it can be, quoted otherwise."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dotted(keypath: KeyPath) -> str:
    """A key path as a user writes it: ``models."qwen3:4b".options.num_ctx``, ``stages[1]``."""
    parts: list[str] = []
    for part in keypath:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            parts.append(f".{part}" if parts else part)
        else:
            parts.append(f'."{part}"' if parts else f'"{part}"')
    return "".join(parts)


_KEY_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+))\s*')


def _split_key(text: str) -> tuple[list[str], int] | None:
    """Split a dotted TOML key at the start of ``text``; return the parts and where the key ends."""
    parts: list[str] = []
    pos = 0
    while True:
        match = _KEY_TOKEN.match(text, pos)
        if not match:
            return None
        basic, literal, bare = match.groups()
        parts.append(
            _unescape(basic) if basic is not None else next(part for part in (literal, bare) if part is not None)
        )
        pos = match.end()
        if pos < len(text) and text[pos] == ".":
            pos += 1
            continue
        return parts, pos


def _unescape(body: str) -> str:
    """A basic-string key as TOML reads it (``"a\\nb"`` is a, newline, b); as written when odd."""
    import json

    try:
        unescaped: str = json.loads(f'"{body}"')  # TOML's escapes are JSON's, plus \UXXXXXXXX
    except ValueError:
        return body
    return unescaped


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map each key path that starts a line (headers, ``key = value``) to its 1-based line number.

    tomlkit does not keep positions, so this light scan of the source supplies them for error
    messages. Values spanning lines (multi-line strings and arrays) are skipped over; keys inside
    inline tables fall back to the line of the enclosing key.
    """
    lines: dict[KeyPath, int] = {}
    for keypath, number in iter_key_lines(text):
        lines.setdefault(keypath, number)
    return lines


def iter_key_lines(text: str) -> Iterator[tuple[KeyPath, int]]:
    table: KeyPath = ()
    array_counts: dict[KeyPath, int] = {}
    in_multiline: str | None = None
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if in_multiline:
            if in_multiline in stripped:
                in_multiline = None
            continue
        if depth > 0:
            depth += stripped.count("[") - stripped.count("]")
            continue
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[["):
            split = _split_key(stripped[2:])
            if split:
                base: KeyPath = tuple(split[0])
                index = array_counts.get(base, 0)
                array_counts[base] = index + 1
                table = (*_resolve_arrays(base, array_counts), index)
                if index == 0:
                    yield base, number
                yield table, number
            continue
        if stripped.startswith("["):
            split = _split_key(stripped[1:])
            if split:
                table = _resolve_arrays(tuple(split[0]), array_counts)
                yield table, number
            continue
        split = _split_key(stripped)
        if split and stripped[split[1] :].startswith("="):
            keypath = (*table, *split[0])
            yield keypath, number
            value = stripped[split[1] + 1 :].strip()
            for quote in ('"""', "'''"):
                if value.startswith(quote) and value.count(quote) == 1:
                    in_multiline = quote
            if value.startswith("["):
                depth = _bracket_depth(value)


def first_duplicate(text: str) -> tuple[KeyPath, int, int] | None:
    """The first key path written twice: the path, the line of its first and of its second writing."""
    seen: dict[KeyPath, int] = {}
    for keypath, number in iter_key_lines(text):
        if keypath in seen:
            return keypath, seen[keypath], number
        seen[keypath] = number
    return None


def _resolve_arrays(path: KeyPath, array_counts: dict[KeyPath, int]) -> KeyPath:
    """A header below an array of tables refers to that array's latest element."""
    resolved: list[str | int] = []
    for end in range(1, len(path) + 1):
        resolved.append(path[end - 1])
        prefix = path[:end]
        if prefix in array_counts and end < len(path):
            resolved.append(array_counts[prefix] - 1)
    return tuple(resolved)


def _bracket_depth(value: str) -> int:
    """Open-bracket balance of a value, ignoring brackets inside strings."""
    depth = 0
    quote: str | None = None
    for char in value.split("#", 1)[0] if '"' not in value and "'" not in value else value:
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
    return depth
