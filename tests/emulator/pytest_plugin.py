"""pytest plugin for the Ollama emulator (test infrastructure, not product code).

Register with ``pytest_plugins = ["tests.emulator.pytest_plugin"]`` (or ``-p``). The
``ollama_emulator`` fixture returns a factory; every emulator it starts is stopped at
teardown, even when the test stopped it already or left requests held or loads running.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from .server import OllamaEmulator
from .store import EmulatedModel


class EmulatorFactory(Protocol):
    def __call__(self, models: list[EmulatedModel] | None = None, **kwargs: Any) -> OllamaEmulator: ...


@pytest.fixture
def ollama_emulator(tmp_path: Path) -> Iterator[EmulatorFactory]:
    started: list[OllamaEmulator] = []

    def make(models: list[EmulatedModel] | None = None, **kwargs: Any) -> OllamaEmulator:
        root = kwargs.pop("root", None) or tmp_path / f"ollama-models-{len(started)}"
        emulator = OllamaEmulator(Path(root), list(models or []), **kwargs)
        started.append(emulator)  # registered before start: a failed start is still cleaned up
        emulator.start()
        return emulator

    yield make
    for emulator in reversed(started):
        emulator.stop()  # shutdown + server_close (joins handler threads) + join the serve thread
