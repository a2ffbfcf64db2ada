"""Page-cache warming of a model's weights: before a load (``load``), or in the background while a
pipeline stage works (prefetch of the next model the plan will load).

Only weights on this machine's disk can be warmed; providers that know where they are offer
``weight_paths(name)`` (Ollama's blob store, llama-server's ``--model`` argument). Warming stops
before available RAM would drop below the margin (hardware.md §5: page cache is evictable, but
reading more than fits only pushes out something else). A server that reads with direct I/O
(llama-server ``--load-mode dio``, Ollama on Linux with an integrated CUDA/ROCm GPU) never uses the
cache, so its loads are not warmed and the warm step says why (``skip_direct_io``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sourceprep_models.units import format_seconds, human_bytes

# Warming stops before available RAM would drop below this (or 10 % of RAM, whichever is larger).
WARM_MARGIN_BYTES = 2 * 1024**3
# A file at least this resident counts as warm.
WARM_FRACTION = 0.9


def margin_bytes() -> int:
    import psutil

    return max(WARM_MARGIN_BYTES, psutil.virtual_memory().total // 10)


def cache_state(paths: list[Path]) -> str | None:
    """``"warm"`` when every file is at least 90 % in the page cache, ``"cold"`` otherwise, None when unknown."""
    from sourceprep_models.warming import pagecache

    if not paths:
        return None
    fractions = [pagecache.residency(path).fraction for path in paths]
    if any(fraction is None for fraction in fractions):
        return None
    return "warm" if all(f is not None and f >= WARM_FRACTION for f in fractions) else "cold"


def warm_paths(paths: list[Path], cancel: threading.Event | None = None) -> tuple[float, str]:
    """Read the files into the page cache; (seconds, one-line detail)."""
    from sourceprep_models.warming import pagecache

    margin = margin_bytes()
    started = time.monotonic()
    details = []
    for path in paths:
        before = pagecache.residency(path)
        if before.fraction is not None and before.fraction >= WARM_FRACTION:
            details.append(f"{path.name[:19]} already cached")
            continue
        result = pagecache.warm(path, min_available_bytes=margin, cancel=cancel)
        was, now = before.fraction, result.after.fraction
        share = f", {was:.0%} → {now:.0%} resident" if was is not None and now is not None else ""
        share = share or ", residency unknown (hardware.md §5.2: not measurable for this file)"
        stopped = f", stopped: {result.stopped}" if result.stopped else ""
        details.append(f"read {human_bytes(result.bytes_read)} in {format_seconds(result.seconds)}{share}{stopped}")
    return time.monotonic() - started, "; ".join(details)


def skip_direct_io(reason: str) -> tuple[float, str]:
    """The warm step of a load whose server bypasses the page cache: nothing read, and why (direct I/O)."""
    return 0.0, f"skipped: direct I/O ({reason}): the server bypasses the page cache"


class Prefetch:
    """A background warm of one model's weights, cancelled cleanly when its stage ends first."""

    def __init__(self, model: str, paths: list[Path]) -> None:
        self.model = model
        self.paths = paths
        self.seconds: float | None = None
        self.detail = ""
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"prefetch-{model}", daemon=True)

    @classmethod
    def start(cls, model: str, paths: list[Path]) -> Prefetch:
        prefetch = cls(model, paths)
        prefetch._thread.start()
        return prefetch

    def _run(self) -> None:
        try:
            self.seconds, self.detail = warm_paths(self.paths, self._cancel)
        except OSError as exc:  # a file that vanished: the load will say what is wrong
            self.detail = f"prefetch failed: {exc}"

    def wait(self) -> None:
        """Let it read to the end."""
        self._thread.join()

    def finish(self) -> bool:
        """Stop (if still reading) and wait; True when the whole warm completed."""
        self._cancel.set()
        self._thread.join()
        return self.seconds is not None and "cancelled" not in self.detail
