"""Every path the tool keeps comes from paths.py and follows the platform's directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from sourceprep_models import paths


def test_paths_follow_the_xdg_directories(tmp_path: Path) -> None:
    # tests/conftest.py points XDG_CONFIG_HOME, XDG_STATE_HOME and XDG_CACHE_HOME into tmp_path.
    if not str(paths.cache_dir()).startswith(str(tmp_path)):
        pytest.skip("this platform's directories do not follow XDG_* here")
    app = "sourceprep-models"
    assert paths.user_config_file() == tmp_path / "xdg-config" / app / "config.toml"
    assert paths.runs_dir() == tmp_path / "xdg-state" / app / "runs"
    assert paths.locks_dir() == tmp_path / "xdg-state" / app / "locks"
    assert paths.gguf_metadata_cache_dir() == tmp_path / "xdg-cache" / app / "gguf-metadata"
    assert paths.size_book_file() == tmp_path / "xdg-cache" / app / "measured-sizes.json"
