"""Shared bits for the benchmark scripts."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.emulator import EmulatedModel, OllamaEmulator


@contextmanager
def real_server_workdir(prefix: str) -> Iterator[tuple[Path, Path]]:
    """The llama-server binary and a scratch directory (with ``models/``) removed afterwards."""
    from tests.realserver.router import find_binary

    binary = find_binary()
    if binary is None:
        raise SystemExit("no llama-server: run scripts/install-llama-server first")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        (work / "models").mkdir()
        yield binary, work


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
