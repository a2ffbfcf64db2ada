"""Warm a model's weight file into the OS page cache, and measure how much of it is resident.

Why: once a runner memory-maps the GGUF blob (ollama.md §4.4), a warm page cache turns a load from
disk speed into memory speed, and on Apple Silicon the cached pages *are* the GPU's copy of the
weights (hardware.md §1.3). Everything here is best effort and never needs root.

- ``warm`` reads the file sequentially into a reused buffer. That is the only method that reliably
  fills the cache: fadvise/madvise WILLNEED are capped per call at the readahead window
  (hardware.md §5.1).
- ``residency`` asks ``mincore`` which pages of a read-only mapping are in memory (hardware.md §5.2).
- ``drop`` and ``drop_all_caches`` make files cold again, for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import mmap
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# mincore is asked about at most this much of the file per mapping, so a 70 GiB blob never needs a
# 70 GiB address-space reservation or a huge result vector at once (hardware.md §5.2).
_WINDOW_BYTES = 1 << 30
_DROP_CACHES = Path("/proc/sys/vm/drop_caches")
# Bit 0 of each mincore byte means "resident" on Linux and macOS (MINCORE_INCORE); macOS also sets
# other bits, so keep only bit 0 before counting.
_LOW_BIT = bytes(value & 1 for value in range(256))


@dataclass(frozen=True)
class Residency:
    """How much of a file is in the page cache; ``resident_bytes`` is None when that is unknown."""

    resident_bytes: int | None
    total_bytes: int
    reason: str | None = None  # why unknown, one line

    @property
    def fraction(self) -> float | None:
        """Share of the file that is resident (0.0 to 1.0); an empty file counts as fully resident."""
        if self.resident_bytes is None:
            return None
        if self.total_bytes <= 0:
            return 1.0
        return min(1.0, self.resident_bytes / self.total_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "resident_bytes": self.resident_bytes,
            "total_bytes": self.total_bytes,
            "fraction": self.fraction,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class WarmResult:
    """The outcome of one ``warm`` call; ``stopped`` is None when the whole file was read."""

    path: Path
    total_bytes: int
    bytes_read: int
    seconds: float  # time spent opening and reading, residency checks excluded
    stopped: str | None  # "RAM margin", "cancelled" or "read error: ..."
    before: Residency
    after: Residency

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "total_bytes": self.total_bytes,
            "bytes_read": self.bytes_read,
            "seconds": self.seconds,
            "complete": self.stopped is None,
            "stopped": self.stopped,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
        }


def residency(path: Path) -> Residency:
    """Resident bytes of ``path`` according to ``mincore``, or unknown with a one-line reason.

    Raises ``FileNotFoundError`` when the file does not exist; every other problem (no permission,
    unsupported platform or file system) gives an unknown ``Residency``.
    """
    st = os.stat(path)
    total = st.st_size
    platform = _platform()
    if platform not in ("linux", "darwin"):
        return Residency(None, total, "mincore unavailable on this platform")
    if platform == "linux" and not _mincore_trusted(path, st.st_uid):
        # Since Linux 5.2, mincore on a file the caller neither owns nor may write reports every page
        # as resident, to close a side channel (hardware.md §5.2). The kernel gives no error, so the
        # only safe answer is "unknown".
        return Residency(None, total, "not owner and not writable: mincore would report every page resident")
    if total == 0:
        return Residency(0, 0)
    libc = _libc()
    if libc is None:
        return Residency(None, total, "mincore unavailable on this platform")
    if ctypes.sizeof(ctypes.c_long) < 8 and total > _WINDOW_BYTES:
        return Residency(None, total, "file too large to map on a 32-bit system")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        return Residency(None, total, f"cannot open: {_one_line(exc)}")
    try:
        resident = 0
        for offset in range(0, total, _WINDOW_BYTES):
            length = min(_WINDOW_BYTES, total - offset)
            resident += _resident_in_window(libc, fd, offset, length)
    except OSError as exc:
        return Residency(None, total, f"mincore failed: {_one_line(exc)}")
    finally:
        os.close(fd)
    return Residency(resident, total)


def warm(
    path: Path,
    *,
    min_available_bytes: int,
    buffer_bytes: int = 1024 * 1024,  # fits the CPU cache: the fastest read, cold or resident (hardware.md §5.1)
    cancel: threading.Event | None = None,
    available: Callable[[], int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    check_every_bytes: int = 64 * 1024 * 1024,
) -> WarmResult:
    """Read ``path`` once from start to end so that it lands in the page cache.

    Stops early, and says why in ``stopped``, when:
    - available RAM would fall below ``min_available_bytes`` while reading the next
      ``check_every_bytes`` ("RAM margin"; checked before the first read and then every
      ``check_every_bytes``). Each byte read that was not resident before counts as a byte less
      available, even when the measured figure does not move;
    - ``cancel`` is set (checked before every chunk; "cancelled");
    - reading fails ("read error: <reason>"). I/O errors are never raised, but a missing file
      raises ``FileNotFoundError``.

    ``available`` returns the bytes of RAM available now; it defaults to psutil's
    ``virtual_memory().available``. ``progress(bytes_read, total_bytes)`` is called after each chunk.
    """
    if buffer_bytes <= 0 or check_every_bytes <= 0:
        raise ValueError("buffer_bytes and check_every_bytes must be positive")
    path = Path(path)
    before = residency(path)
    total = before.total_bytes
    measure = available if available is not None else _psutil_available
    bytes_read = 0
    stopped: str | None = None
    started = time.monotonic()
    try:
        with open(path, "rb", buffering=0) as handle:
            total = os.fstat(handle.fileno()).st_size
            bytes_read, stopped = _read_all(
                handle,
                total,
                min_available_bytes=min_available_bytes,
                already_resident=before.resident_bytes or 0,
                buffer_bytes=buffer_bytes,
                cancel=cancel,
                available=measure,
                progress=progress,
                check_every_bytes=check_every_bytes,
            )
    except FileNotFoundError:
        raise
    except OSError as exc:
        stopped = f"read error: {_one_line(exc)}"
    seconds = time.monotonic() - started
    try:
        after = residency(path)
    except OSError as exc:
        after = Residency(None, total, f"cannot stat: {_one_line(exc)}")
    return WarmResult(path, total, bytes_read, seconds, stopped, before, after)


def drop(path: Path) -> bool:
    """Ask the kernel to evict ``path`` from the page cache; True when the advice was accepted.

    Uses ``posix_fadvise(POSIX_FADV_DONTNEED)``, which works without root on Linux
    (hardware.md §5.1). Dirty pages are written back first, since the advice skips them. Pages that
    another process has mapped or locked may stay. Returns False where there is no
    ``posix_fadvise`` (macOS, Windows; hardware.md §5.3) or the call fails. A missing file raises
    ``FileNotFoundError``.
    """
    fadvise = getattr(os, "posix_fadvise", None)
    dontneed = getattr(os, "POSIX_FADV_DONTNEED", None)
    if fadvise is None or dontneed is None:
        os.stat(path)
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError:
        return False
    try:
        # Measured: right after writing a 64 MiB file, DONTNEED alone left 16 MiB (dirty) cached.
        # A file system that cannot sync still gets the advice for its clean pages.
        with contextlib.suppress(OSError):
            os.fdatasync(fd)
        fadvise(fd, 0, 0, dontneed)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def drop_all_caches() -> bool:
    """Flush dirty data and drop the whole page cache (Linux, root only). For benchmarks, never routine use.

    Returns False when not permitted or not Linux; never raises for that.
    """
    if _platform() != "linux":
        return False
    try:
        os.sync()
        with open(_DROP_CACHES, "w", encoding="ascii") as handle:
            handle.write("3\n")
    except OSError:
        return False
    return True


def _read_all(
    handle: io.FileIO,
    total: int,
    *,
    min_available_bytes: int,
    already_resident: int,
    buffer_bytes: int,
    cancel: threading.Event | None,
    available: Callable[[], int],
    progress: Callable[[int, int], None] | None,
    check_every_bytes: int,
) -> tuple[int, str | None]:
    """The read loop of ``warm``: ``(bytes_read, stopped)``; a failing read becomes ``stopped``."""
    buffer = bytearray(min(buffer_bytes, max(total, 1)))
    first_available: int | None = None
    next_check = 0
    bytes_read = 0
    while bytes_read < total:
        if cancel is not None and cancel.is_set():
            return bytes_read, "cancelled"
        if bytes_read >= next_check:
            now = available()
            if first_available is None:
                first_available = now
            # Linux counts page cache as available, so reading a file barely lowers the figure
            # (measured: 512 MiB read, MemAvailable down 51 MiB). Charge what we read that was
            # not resident before against the first reading too, and take the lower estimate.
            charged = max(0, bytes_read - already_resident)
            projected = min(now, first_available - charged)
            if projected - min(check_every_bytes, total - bytes_read) < min_available_bytes:
                return bytes_read, "RAM margin"
            next_check = bytes_read + check_every_bytes
        want = min(len(buffer), total - bytes_read)
        try:
            count = handle.readinto(memoryview(buffer)[:want] if want < len(buffer) else buffer)
        except OSError as exc:
            return bytes_read, f"read error: {_one_line(exc)}"
        if not count:
            return bytes_read, f"read error: file ended at {bytes_read} of {total} bytes"
        bytes_read += count
        if progress is not None:
            progress(bytes_read, total)
    return bytes_read, None


def _resident_in_window(libc: ctypes.CDLL, fd: int, offset: int, length: int) -> int:
    """Resident bytes of ``[offset, offset + length)``; ``offset`` is a multiple of the page size."""
    page = mmap.PAGESIZE
    pages = (length + page - 1) // page
    # PROT_READ and MAP_SHARED are 1 on both Linux and macOS.
    address = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
    if address is None or address == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    try:
        vector = (ctypes.c_ubyte * pages)()
        if libc.mincore(ctypes.c_void_p(address), length, vector) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        flags = bytes(vector).translate(_LOW_BIT)
    finally:
        libc.munmap(ctypes.c_void_p(address), length)
    resident = flags.count(1) * page
    tail = length - (pages - 1) * page
    if flags[-1]:
        resident -= page - tail  # the last page is only partly file
    return resident


_MAP_FAILED = ctypes.c_void_p(-1).value
_LIBC: ctypes.CDLL | None = None
_LIBC_LOADED = False


def _libc() -> ctypes.CDLL | None:
    """The C library with mmap/mincore/munmap prototypes set, or None when they are missing."""
    global _LIBC, _LIBC_LOADED
    if _LIBC_LOADED:
        return _LIBC
    _LIBC_LOADED = True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mmap_fn, mincore_fn, munmap_fn = libc.mmap, libc.mincore, libc.munmap
    except (OSError, AttributeError):
        return None
    size_t, void_p = ctypes.c_size_t, ctypes.c_void_p
    mmap_fn.restype = void_p
    mmap_fn.argtypes = (void_p, size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    mincore_fn.restype = ctypes.c_int
    mincore_fn.argtypes = (void_p, size_t, ctypes.POINTER(ctypes.c_ubyte))
    munmap_fn.restype = ctypes.c_int
    munmap_fn.argtypes = (void_p, size_t)
    _LIBC = libc
    return libc


def _mincore_trusted(path: Path, owner: int) -> bool:
    euid = os.geteuid()
    return euid in (0, owner) or os.access(path, os.W_OK)


def _platform() -> str:
    return sys.platform


def _psutil_available() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _one_line(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(text.split()) or type(exc).__name__
