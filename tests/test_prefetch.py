"""Background warming of the next model's weights: completes when given time, stops when told to."""

from __future__ import annotations

import threading
from pathlib import Path

from sourceprep_models.warming import pagecache
from sourceprep_models.warming.prefetch import Prefetch, cache_state, warm_paths


def weights(tmp_path: Path, mib: int = 8) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"\x01" * (mib * 1024 * 1024))
    pagecache.drop(path)
    return path


def test_a_prefetch_that_runs_to_the_end_leaves_the_weights_warm(tmp_path: Path) -> None:
    path = weights(tmp_path)
    prefetch = Prefetch.start("m", [path])
    prefetch.wait()  # the stage's work outlasts the prefetch
    assert prefetch.finish() is True
    assert cache_state([path]) == "warm"
    assert "read 8.4 MB" in prefetch.detail or "already cached" in prefetch.detail


def test_a_cancelled_warm_stops_before_reading_and_says_so(tmp_path: Path) -> None:
    path = weights(tmp_path)
    cancel = threading.Event()
    cancel.set()  # the stage ended before the prefetch could start reading
    _, detail = warm_paths([path], cancel)
    assert "stopped: cancelled" in detail


def test_cache_state_is_unknown_without_files() -> None:
    assert cache_state([]) is None
