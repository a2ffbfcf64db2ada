"""Every file and directory the tool keeps for itself, resolved by platformdirs in one place.

The names follow each platform's conventions (XDG on Linux, and on macOS too when ``XDG_*`` is set):

    user config file ....... <config>/sourceprep-models/config.toml   (what `pin` edits when no file is named)
    state directory ........ <state>/sourceprep-models/
      runs/ ................ one JSON run state per pipeline (resume), its journal of finished stages, its outputs
      locks/ ............... one lock file per endpoint URL
    cache directory ........ <cache>/sourceprep-models/
      gguf-metadata/ ....... parsed GGUF headers by blob digest
      measured-sizes.json .. sizes servers reported after earlier loads

platformdirs is imported inside the functions: the CLI's start-up (``--help``, completion) needs no path.
"""

from __future__ import annotations

from pathlib import Path

from sourceprep_models.constants import APP_NAME


def user_config_file() -> Path:
    """The config file used when neither ``--config`` nor ``$SOURCEPREP_MODELS_CONFIG`` names one."""
    from platformdirs import user_config_path

    return user_config_path(APP_NAME, appauthor=False) / "config.toml"


def state_dir() -> Path:
    from platformdirs import user_state_path

    return user_state_path(APP_NAME, appauthor=False)


def runs_dir() -> Path:
    """Where a pipeline's run state (and its outputs log) is kept so `run --resume` can continue it."""
    return state_dir() / "runs"


def locks_dir() -> Path:
    """The per-endpoint lock files that keep two processes from swapping on one server at once."""
    return state_dir() / "locks"


def cache_dir() -> Path:
    from platformdirs import user_cache_path

    return user_cache_path(APP_NAME, appauthor=False)


def gguf_metadata_cache_dir() -> Path:
    return cache_dir() / "gguf-metadata"


def size_book_file() -> Path:
    return cache_dir() / "measured-sizes.json"
