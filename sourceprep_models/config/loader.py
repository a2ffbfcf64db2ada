"""Read the config: locate the file, parse it with tomlkit, validate it into ``schema`` records.

Every problem is reported as one line naming the file, the line, the key path and the fix. The
endpoint kinds to accept come from the provider registry (``providers.endpoint_kinds()``), which
the caller passes: the config sits below the providers and does not import them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sourceprep_models.config.keylines import first_duplicate_line, key_lines
from sourceprep_models.config.locate import locate_config
from sourceprep_models.config.schema import Config, EndpointKinds
from sourceprep_models.config.validate import Validator
from sourceprep_models.errors import ConfigError


def load_config(cli_path: str | None, environ: Mapping[str, str], *, kinds: EndpointKinds) -> Config:
    """Locate, read and validate the config; raise ``ConfigError`` (exit 5) on any problem."""
    location = locate_config(cli_path, environ)
    if location.path is None:
        return parse_config("", None, environ, kinds=kinds)
    path = location.path
    if not path.exists():
        raise ConfigError(f"{path}: config file not found (named by {location.layer}); create it or fix the path")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file; point {location.layer} at a .toml file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror}); check its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: the file is not valid UTF-8; save it as UTF-8") from None
    return parse_config(text, path, environ, kinds=kinds)


def parse_config(text: str, path: Path | None, environ: Mapping[str, str], *, kinds: EndpointKinds) -> Config:
    """Validate config text; ``path`` only names the file in messages (``<config>`` when None)."""
    import tomlkit
    from tomlkit.exceptions import KeyAlreadyPresent, ParseError

    label = str(path) if path is not None else "<config>"
    try:
        document = tomlkit.parse(text)
    except ParseError as exc:
        # tomlkit's message already ends with "at line L col C"; keep only the reason.
        reason = re.sub(r"\s+at line \d+ col \d+$", "", str(exc))
        raise ConfigError(f"{label}:{exc.line}: invalid TOML: {reason}; fix the syntax at column {exc.col}") from None
    except KeyAlreadyPresent as exc:
        line = first_duplicate_line(text)
        where = f"{label}:{line}" if line else label
        raise ConfigError(f"{where}: invalid TOML: {exc}; keep one of the two") from None
    data: dict[str, Any] = document.unwrap()
    return Validator(label, key_lines(text), environ, kinds).config(data, path)
