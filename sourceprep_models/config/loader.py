"""Read the config: locate the file, parse it with tomlkit, validate it into ``schema`` records.

Every problem is reported as one line naming the file, the line, the key path and the fix. The
endpoint kinds to accept come from the provider registry (``providers.endpoint_kinds()``), which
the caller passes: the config sits below the providers and does not import them.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sourceprep_models.config.keylines import dotted, first_duplicate, key_lines
from sourceprep_models.config.locate import locate_config
from sourceprep_models.config.schema import Config, EndpointKinds
from sourceprep_models.config.validate import Validator
from sourceprep_models.errors import ConfigError

# The largest config file read. A real one is a few KiB (1,000 models and 1,000 stages come to about
# 100 KiB), and tomlkit's parse time grows faster than the size (0.8 s at 74 KB, 2.8 s at 378 KB,
# 28 s at 10 MB), so this cap keeps every command's start under about two seconds. It also bounds
# what a device such as /dev/zero, named by mistake, could make us read.
MAX_CONFIG_BYTES = 256 * 1024


def load_config(cli_path: str | None, environ: Mapping[str, str], *, kinds: EndpointKinds) -> Config:
    """Locate, read and validate the config; raise ``ConfigError`` (exit 5) on any problem."""
    location = locate_config(cli_path, environ)
    if location.path is None:
        return parse_config("", None, environ, kinds=kinds)
    text = read_config_text(location.path, location.layer)
    return parse_config(text, location.path, environ, kinds=kinds)


def read_config_text(path: Path, layer: str) -> str:
    """The config file's text; ``ConfigError`` naming ``layer`` (who named the file) when unusable."""
    raw = _read_bytes(path, layer)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{_shown(path)}:{line}: the file is not valid UTF-8; save it as UTF-8") from None


def _read_bytes(path: Path, layer: str) -> bytes:
    """The file's bytes, read only when it is a regular file of at most ``MAX_CONFIG_BYTES``.

    Opened without blocking and checked on the open descriptor before any read: a FIFO would wait
    for a writer forever, and a device can have no end.
    """
    shown = _shown(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{shown}: config file not found (named by {layer}); create it or fix the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{shown}: is a directory, not a config file; point {layer} at a .toml file") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot open the config file ({_reason(exc)}); {_open_fix(exc, layer)}") from None
    except ValueError:  # a NUL byte in the path
        raise ConfigError(f"{shown}: not a usable file name (it contains a NUL byte); fix {layer}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{shown}: is a directory, not a config file; point {layer} at a .toml file")
        if _is_devnull(info):  # `--config /dev/null`: the usual way to say "no config file"
            return b""
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(
                f"{shown}: is not a regular file (a pipe, socket or device); point {layer} at a .toml file"
            )
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file:
        try:
            raw = file.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{shown}: cannot read the config file ({_reason(exc)}); check the file") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{shown}: is larger than {MAX_CONFIG_BYTES // 1024} KiB, the largest config read; "
            "a config of a few KiB describes hundreds of models: check that this is the right file"
        )
    return raw


def parse_config(text: str, path: Path | None, environ: Mapping[str, str], *, kinds: EndpointKinds) -> Config:
    """Validate config text; ``path`` only names the file in messages (``<config>`` when None)."""
    label = _shown(path) if path is not None else "<config>"
    if not text:  # no config file (or /dev/null): what tomlkit would parse it to, without importing it
        return Validator(label, key_lines(text), environ, kinds).config({}, path)
    import tomlkit
    from tomlkit.exceptions import KeyAlreadyPresent, ParseError

    try:
        # unwrap() too: a table written again after one of its subtables only fails there.
        data: dict[str, Any] = tomlkit.parse(text).unwrap()
    except ParseError as exc:
        if isinstance(exc.__cause__, KeyAlreadyPresent):
            raise _duplicate_key(label, text, exc.__cause__) from None
        # tomlkit's message already ends with "at line L col C"; keep only the reason.
        reason = re.sub(r"\s+at line \d+ col \d+$", "", str(exc))
        raise ConfigError(f"{label}:{exc.line}: invalid TOML: {reason}; fix the syntax at column {exc.col}") from None
    except KeyAlreadyPresent as exc:
        raise _duplicate_key(label, text, exc) from None
    except RecursionError:  # arrays or inline tables nested thousands deep
        raise ConfigError(f"{label}: invalid TOML: values nested too deeply; flatten them") from None
    return Validator(label, key_lines(text), environ, kinds).config(data, path)


def _duplicate_key(label: str, text: str, exc: Exception) -> ConfigError:
    """Name the key written twice and both its lines (tomlkit names only the last part of the key)."""
    found = first_duplicate(text)
    if found is None:  # inside an inline table, where the line scan does not look
        return ConfigError(f"{label}: invalid TOML: {exc}; keep one of the two")
    keypath, first, second = found
    return ConfigError(
        f"{label}:{second}: invalid TOML: {dotted(keypath)} is set twice (lines {first} and {second}); "
        "keep one of the two"
    )


def _is_devnull(info: os.stat_result) -> bool:
    try:
        return os.path.samestat(info, os.stat(os.devnull))
    except OSError:
        return False


def _shown(path: Path) -> str:
    """A path as messages show it: one of thousands of characters is cut in the middle."""
    text = str(path)
    return text if len(text) <= 200 else f"{text[:80]}…{text[-80:]}"


def _reason(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))


def _open_fix(exc: OSError, layer: str) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "check the permissions of the file and of every directory above it"
    return f"fix the path given by {layer}"
