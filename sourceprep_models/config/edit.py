"""Change the config file in place: comments and layout kept, validated, written atomically, locked.

The edit is applied to tomlkit's document (which keeps every comment and blank line), the whole
result is validated with the same loader that reads it, and only then written with
``fs.write_atomic``: a crash leaves either the old file or the new one, never half of each, and a
validation failure leaves the old file untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sourceprep_models.config.loader import parse_config, read_config_text
from sourceprep_models.config.schema import Config, EndpointKinds
from sourceprep_models.errors import ConfigError
from sourceprep_models.fs import write_atomic

NEW_FILE_HEADER = (
    "# sourceprep-models configuration (created by `sourceprep-models pin`).\n"
    "# See models.example.toml in the project for every option.\n"
)


def edit_config(
    path: Path, change: Callable[[str], str], environ: Mapping[str, str], *, kinds: EndpointKinds
) -> Config:
    """Apply ``change`` (old text → new text) under a lock, validate the result, write atomically."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path) + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with lock.acquire(timeout=30):
            text = read_config_text(path, "the config") if _exists(path) else NEW_FILE_HEADER
            parse_config(text, path, environ, kinds=kinds)  # refuse to edit a file that is already broken
            new_text = change(text)
            config = parse_config(new_text, path, environ, kinds=kinds)
            if new_text != text:
                write_atomic(path, new_text)
            return config
    except Timeout:
        raise ConfigError(f"{path}: another sourceprep-models process is editing it; try again") from None
    except OSError as exc:  # the directory cannot be made or searched, the name is too long, ...
        raise ConfigError(
            f"{path}: cannot edit the config ({exc.strerror or exc}); fix the path or its permissions"
        ) from None


def _exists(path: Path) -> bool:
    """Whether there is a file at ``path``; one that cannot even be looked at is read, which says why."""
    try:
        return path.exists()
    except OSError:
        return True


def set_pin(text: str, key: str, name: str, endpoint: str | None, pinned: bool) -> str:
    """``text`` with ``models.<key>.always_available`` set (creating the entry) or cleared.

    The edit is made on the lines themselves, next to the entry's other keys, so every comment and
    blank line elsewhere stays byte for byte; the result is then checked against tomlkit's reading
    of the intended change, and tomlkit's own document edit is the fallback for layouts the line
    edit does not handle (inline tables, dotted keys).
    """
    import tomlkit

    expected = tomlkit.parse(text).unwrap()
    _apply_pin(expected, key, name, endpoint, pinned)
    edited = _set_pin_lines(text, key, name, endpoint, pinned)
    if edited is not None:
        try:
            if tomlkit.parse(edited).unwrap() == expected:
                return edited
        except Exception:  # a line edit that produced invalid TOML: use the document edit instead
            pass
    document = tomlkit.parse(text)
    _apply_pin(document, key, name, endpoint, pinned)
    return tomlkit.dumps(document)


def _apply_pin(data: Any, key: str, name: str, endpoint: str | None, pinned: bool) -> None:
    """The change itself, on a plain dict or a tomlkit document alike."""
    models = data.setdefault("models", {}) if pinned else data.get("models")
    if models is None:
        return
    entry = models.get(key)
    if entry is None:
        if not pinned:
            return
        entry = {}
        if name != key:
            entry["name"] = name
        if endpoint is not None:
            entry["endpoint"] = endpoint
        models[key] = entry
    if pinned:
        entry["always_available"] = True
    elif "always_available" in entry:
        del entry["always_available"]


def _set_pin_lines(text: str, key: str, name: str, endpoint: str | None, pinned: bool) -> str | None:
    from sourceprep_models.config.keylines import iter_key_lines, toml_key

    lines = text.splitlines(keepends=True)
    entry_lines = [number for path, number in iter_key_lines(text) if path[:2] == ("models", key)]
    flag_lines = [number for path, number in iter_key_lines(text) if path == ("models", key, "always_available")]
    newline = "\r\n" if text.endswith("\r\n") else "\n"
    if flag_lines:
        index = flag_lines[0] - 1
        if pinned:
            indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
            lines[index] = f"{indent}always_available = true{newline}"
        else:
            del lines[index]
        return "".join(lines)
    if not pinned:
        return text
    if entry_lines:
        last = max(entry_lines)
        lines.insert(last, f"always_available = true{newline}")
        return "".join(lines)
    block = [f"[models.{toml_key(key)}]"]
    if name != key:
        block.append(f"name = {json.dumps(name)}")
    if endpoint is not None:
        block.append(f"endpoint = {json.dumps(endpoint)}")
    block.append("always_available = true")
    prefix = "" if not text or text.endswith(("\n", "\r")) else newline
    return text + prefix + newline + newline.join(block) + newline
