"""Which config file is in use.

Precedence: ``--config``, then ``$SOURCEPREP_MODELS_CONFIG``, then the platformdirs user config file;
no file at all means built-in defaults (one Ollama endpoint at ``OLLAMA_HOST``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sourceprep_models.constants import ENV_CONFIG
from sourceprep_models.paths import user_config_file


@dataclass(frozen=True)
class ConfigLocation:
    path: Path | None
    layer: str  # "--config", ENV_CONFIG, "user config" or "defaults"
    explicit: bool


def locate_config(cli_path: str | None, environ: Mapping[str, str]) -> ConfigLocation:
    if cli_path:
        return ConfigLocation(_expanded(cli_path), "--config", explicit=True)
    if environ.get(ENV_CONFIG):
        return ConfigLocation(_expanded(environ[ENV_CONFIG]), ENV_CONFIG, explicit=True)
    path = user_config_file()
    try:
        present = path.exists()
    except (OSError, ValueError):
        # Present but unreadable (a directory above it that cannot be searched): the loader says so.
        present = True
    if present:
        return ConfigLocation(path, "user config", explicit=False)
    return ConfigLocation(None, "defaults", explicit=False)


def _expanded(value: str) -> Path:
    """``~`` and ``~user`` expanded; a ``~user`` that names nobody stays as written (not found)."""
    try:
        return Path(value).expanduser()
    except RuntimeError:
        return Path(value)
