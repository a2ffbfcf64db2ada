"""Shared bits for the benchmark scripts."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.emulator import EmulatedModel, OllamaEmulator


@contextmanager
def emulator(models: list[EmulatedModel], **kwargs: object) -> Iterator[OllamaEmulator]:
    with tempfile.TemporaryDirectory(prefix="spm-bench-") as tmp:
        emu = OllamaEmulator(Path(tmp) / "store", models, **kwargs)  # type: ignore[arg-type]
        emu.start()
        try:
            yield emu
        finally:
            emu.stop()


def ms(values: list[float]) -> str:
    low, high = min(values) * 1000, max(values) * 1000
    return f"median {statistics.median(values) * 1000:8.2f} ms  (min {low:.2f}, max {high:.2f})"
