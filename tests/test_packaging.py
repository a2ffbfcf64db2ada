"""The version is written once, as ``sourceprep_models.__version__``: the package metadata is built
from it and ``--version`` prints it (tests/test_cli_basics.py)."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from sourceprep_models import __version__

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_the_installed_distribution_carries_the_package_version() -> None:
    # Fails after a version bump until the package is reinstalled (pip install -e '.[test]').
    assert version("sourceprep-models") == __version__


def test_pyproject_reads_the_version_from_the_package() -> None:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert "version" not in config["project"]
    assert config["project"]["dynamic"] == ["version"]
    assert config["tool"]["hatch"]["version"] == {"path": "sourceprep_models/__init__.py"}
