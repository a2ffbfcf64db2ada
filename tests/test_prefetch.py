"""Background warming of the next model's weights: completes when given time, stops when told to."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from sourceprep_models.warming import pagecache
from sourceprep_models.warming.prefetch import Prefetch, cache_state, warm_paths


def weights(tmp_path: Path, mib: int = 8) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"\x01" * (mib * 1024 * 1024))
    pagecache.drop(path)
    return path


def test_a_prefetch_that_runs_to_the_end_leaves_the_weights_warm(tmp_path: Path) -> None:
    path = weights(tmp_path)
    before = pagecache.residency(path).fraction
    if before is None or before > 0.5:
        pytest.skip("this platform or file system cannot make a file cold without root (hardware.md §5)")
    assert cache_state([path]) == "cold"
    prefetch = Prefetch.start("m", [path])
    prefetch.wait()  # the stage's work outlasts the prefetch
    assert prefetch.finish() is True
    assert cache_state([path]) == "warm"
    # What the pipeline's timing table shows for the prefetch: every byte read, cold to fully resident.
    pattern = rf"read 8\.4 MB in \d+\.\d+s, {before:.0%} → 100% resident"
    assert re.fullmatch(pattern, prefetch.detail), prefetch.detail


def test_a_cancelled_warm_stops_before_reading_and_says_so(tmp_path: Path) -> None:
    path = weights(tmp_path)
    cancel = threading.Event()
    cancel.set()  # the stage ended before the prefetch could start reading
    _, detail = warm_paths([path], cancel)
    assert "stopped: cancelled" in detail


def test_cache_state_is_unknown_without_files() -> None:
    assert cache_state([]) is None
