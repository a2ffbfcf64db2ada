"""Page-cache warming and residency on real files (hardware.md §5).

The cold/warm tests need a platform where an unprivileged process can evict a file
(``posix_fadvise``, Linux) and a file system whose pages can be evicted (not tmpfs). Everything
else runs anywhere by injecting the RAM figure or faking the platform.
"""

from __future__ import annotations

import errno
import io
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sourceprep_models.warming import pagecache
from sourceprep_models.warming.pagecache import Residency, WarmResult, drop, drop_all_caches, residency, warm

MiB = 1024 * 1024
FILE_BYTES = 32 * MiB + 12345  # not a multiple of any page size, to exercise the partial last page
HUGE = 1 << 50  # an "available RAM" figure that never limits

has_mincore = pytest.mark.skipif(
    sys.platform not in ("linux", "darwin"), reason="mincore residency is only implemented on Linux and macOS"
)


def _memory_backed(path: Path) -> bool:
    """True when ``path`` is on tmpfs/ramfs, whose pages are the file itself and cannot be dropped."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    best, kind = "", ""
    target = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3 or len(fields[1]) < len(best):
            continue
        if target == fields[1] or target.startswith(fields[1].rstrip("/") + "/"):
            best, kind = fields[1], fields[2]
    return kind in ("tmpfs", "ramfs")


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "weights.bin"
    chunk = os.urandom(MiB)
    with open(path, "wb") as handle:
        for _ in range(FILE_BYTES // MiB):
            handle.write(chunk)
        handle.write(chunk[: FILE_BYTES % MiB])
        handle.flush()
        os.fsync(handle.fileno())
    return path


@pytest.fixture
def cold_file(data_file: Path) -> Path:
    """``data_file`` evicted from the page cache, or a skip saying why that is impossible here."""
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise on this platform (macOS, Windows): cannot evict a file without root")
    if _memory_backed(data_file):
        pytest.skip("tmp_path is on tmpfs/ramfs: the file's pages are its storage and cannot be evicted")
    assert drop(data_file) is True
    return data_file


def never_limits() -> int:
    return HUGE


# --- residency -----------------------------------------------------------------------------------


@has_mincore
def test_drop_makes_file_cold(cold_file: Path) -> None:
    state = residency(cold_file)
    assert state.reason is None
    assert state.total_bytes == FILE_BYTES
    assert state.resident_bytes is not None
    assert state.resident_bytes <= 0.02 * FILE_BYTES
    assert state.fraction is not None and state.fraction <= 0.02


@has_mincore
def test_warm_makes_file_resident(cold_file: Path) -> None:
    result = warm(cold_file, min_available_bytes=0, available=never_limits)
    assert result.stopped is None
    assert result.bytes_read == result.total_bytes == FILE_BYTES
    assert result.before.fraction is not None and result.before.fraction <= 0.02
    assert result.after.fraction is not None and result.after.fraction >= 0.98
    assert result.after.resident_bytes is not None and result.after.resident_bytes <= FILE_BYTES


@has_mincore
def test_residency_counts_the_partial_last_page_exactly(data_file: Path) -> None:
    warm(data_file, min_available_bytes=0, available=never_limits)
    state = residency(data_file)
    assert state.resident_bytes == FILE_BYTES  # never more than the file, even with a partial last page


@has_mincore
def test_warm_with_psutil_default(data_file: Path) -> None:
    result = warm(data_file, min_available_bytes=0)
    assert result.stopped is None
    assert result.bytes_read == FILE_BYTES


@has_mincore
def test_residency_windows_add_up(monkeypatch: pytest.MonkeyPatch, data_file: Path) -> None:
    warm(data_file, min_available_bytes=0, available=never_limits)
    whole = residency(data_file)
    monkeypatch.setattr(pagecache, "_WINDOW_BYTES", 64 * os.sysconf("SC_PAGE_SIZE"))
    assert residency(data_file) == whole


@has_mincore
def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.touch()
    assert residency(path) == Residency(0, 0)
    assert residency(path).fraction == 1.0
    result = warm(path, min_available_bytes=0, available=never_limits)
    assert (result.bytes_read, result.stopped) == (0, None)


def test_residency_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        residency(tmp_path / "absent")


def _pretend_untrusted(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Another, unprivileged user who cannot write the file (hardware.md §5.2)."""
    owner = path.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 4242, raising=False)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    monkeypatch.setattr(pagecache, "_platform", lambda: "linux")


def test_untrusted_mincore_is_unknown(monkeypatch: pytest.MonkeyPatch, data_file: Path) -> None:
    _pretend_untrusted(monkeypatch, data_file)
    state = residency(data_file)
    assert state.resident_bytes is None
    assert state.fraction is None
    assert state.total_bytes == FILE_BYTES
    assert state.reason is not None
    assert "not owner and not writable" in state.reason
    assert "mincore" in state.reason


@has_mincore
def test_write_access_is_trusted(monkeypatch: pytest.MonkeyPatch, data_file: Path) -> None:
    _pretend_untrusted(monkeypatch, data_file)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)
    assert residency(data_file).resident_bytes is not None


@has_mincore
def test_owner_is_trusted(monkeypatch: pytest.MonkeyPatch, data_file: Path) -> None:
    _pretend_untrusted(monkeypatch, data_file)
    owner = data_file.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner, raising=False)
    assert residency(data_file).resident_bytes is not None


@has_mincore
def test_root_is_trusted(monkeypatch: pytest.MonkeyPatch, data_file: Path) -> None:
    _pretend_untrusted(monkeypatch, data_file)
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    assert residency(data_file).resident_bytes is not None


@has_mincore
def test_ownership_check_is_linux_only(monkeypatch: pytest.MonkeyPatch, data_file: Path) -> None:
    _pretend_untrusted(monkeypatch, data_file)
    monkeypatch.setattr(pagecache, "_platform", lambda: "darwin")
    assert residency(data_file).resident_bytes is not None


@pytest.mark.parametrize("platform", ["win32", "freebsd14", "emscripten"])
def test_unsupported_platform_is_unknown(monkeypatch: pytest.MonkeyPatch, data_file: Path, platform: str) -> None:
    monkeypatch.setattr(pagecache, "_platform", lambda: platform)
    state = residency(data_file)
    assert state == Residency(None, FILE_BYTES, "mincore unavailable on this platform")


def test_missing_libc_is_unknown(monkeypatch: pytest.MonkeyPatch, data_file: Path) -> None:
    monkeypatch.setattr(pagecache, "_platform", lambda: "linux")
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    monkeypatch.setattr(pagecache, "_libc", lambda: None)
    assert residency(data_file).reason == "mincore unavailable on this platform"


@has_mincore
def test_unmappable_file_is_unknown(tmp_path: Path) -> None:
    state = residency(tmp_path)  # a directory: mmap refuses it
    assert state.resident_bytes is None
    assert state.reason is not None and "\n" not in state.reason


# --- warm: RAM margin ----------------------------------------------------------------------------


def shrinking(start: int, step: int) -> Callable[[], int]:
    """An ``available`` figure that drops by ``step`` at every call, like another process allocating."""
    values: Iterator[int] = (start - step * index for index in range(10**6))
    return lambda: next(values)


def test_margin_stops_when_available_shrinks(data_file: Path) -> None:
    margin = 1 << 30
    seen: list[int] = []
    # Checks happen at 0, 4, 8, ... MiB. The n-th check sees margin + 20 MiB - 4n MiB and needs room
    # for the next 4 MiB, so checks 0..4 pass and the one at 20 MiB stops.
    result = warm(
        data_file,
        min_available_bytes=margin,
        buffer_bytes=MiB,
        check_every_bytes=4 * MiB,
        available=shrinking(margin + 20 * MiB, 4 * MiB),
        progress=lambda done, total: seen.append(done),
    )
    assert result.stopped == "RAM margin"
    assert result.bytes_read == 20 * MiB
    assert result.bytes_read < result.total_bytes
    assert seen[-1] == 20 * MiB


def test_margin_already_too_low_reads_nothing(data_file: Path) -> None:
    calls: list[int] = []
    result = warm(
        data_file,
        min_available_bytes=8 << 30,
        available=lambda: 8 << 30,  # exactly the margin: no room for the first chunk
        progress=lambda done, total: calls.append(done),
    )
    assert (result.bytes_read, result.stopped) == (0, "RAM margin")
    assert calls == []


def test_margin_charges_cold_reads_even_if_available_does_not_move(
    monkeypatch: pytest.MonkeyPatch, data_file: Path
) -> None:
    # Linux counts page cache as available, so the figure may not drop while we warm; warm charges the
    # bytes it reads that were not resident before against the first figure.
    monkeypatch.setattr(pagecache, "residency", lambda path: Residency(0, FILE_BYTES))
    margin = 1 << 30
    result = warm(
        data_file,
        min_available_bytes=margin,
        buffer_bytes=MiB,
        check_every_bytes=4 * MiB,
        available=lambda: margin + 10 * MiB,
    )
    # At 8 MiB read: 10 - 8 MiB left above the margin, not enough for the next 4 MiB.
    assert (result.bytes_read, result.stopped) == (8 * MiB, "RAM margin")


def test_margin_does_not_charge_pages_that_were_already_resident(
    monkeypatch: pytest.MonkeyPatch, data_file: Path
) -> None:
    monkeypatch.setattr(pagecache, "residency", lambda path: Residency(FILE_BYTES, FILE_BYTES))
    margin = 1 << 30
    result = warm(
        data_file,
        min_available_bytes=margin,
        buffer_bytes=MiB,
        check_every_bytes=4 * MiB,
        available=lambda: margin + 10 * MiB,
    )
    assert (result.bytes_read, result.stopped) == (FILE_BYTES, None)


def test_margin_is_not_checked_after_the_last_byte(data_file: Path) -> None:
    # One check at the start covers the whole file; a later drop in the figure does not matter.
    result = warm(
        data_file,
        min_available_bytes=0,
        check_every_bytes=FILE_BYTES,
        available=shrinking(FILE_BYTES, FILE_BYTES),
    )
    assert (result.bytes_read, result.stopped) == (FILE_BYTES, None)


# --- warm: cancel, progress, errors --------------------------------------------------------------


def test_cancel_from_progress_stops_after_that_chunk(data_file: Path) -> None:
    cancel = threading.Event()
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done >= 3 * MiB:
            cancel.set()

    result = warm(
        data_file,
        min_available_bytes=0,
        buffer_bytes=MiB,
        cancel=cancel,
        available=never_limits,
        progress=progress,
    )
    assert result.stopped == "cancelled"
    assert result.bytes_read == 3 * MiB
    assert seen == [(MiB, FILE_BYTES), (2 * MiB, FILE_BYTES), (3 * MiB, FILE_BYTES)]


def test_cancel_already_set_reads_nothing(data_file: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    result = warm(data_file, min_available_bytes=0, cancel=cancel, available=never_limits)
    assert (result.bytes_read, result.stopped) == (0, "cancelled")


def test_cancel_set_on_the_last_chunk_still_completes(data_file: Path) -> None:
    cancel = threading.Event()
    result = warm(
        data_file,
        min_available_bytes=0,
        cancel=cancel,
        available=never_limits,
        progress=lambda done, total: cancel.set() if done == total else None,
    )
    assert (result.bytes_read, result.stopped) == (FILE_BYTES, None)


def test_progress_reaches_total_with_a_partial_last_chunk(data_file: Path) -> None:
    seen: list[int] = []
    warm(data_file, min_available_bytes=0, available=never_limits, progress=lambda done, total: seen.append(done))
    assert seen[-1] == FILE_BYTES
    assert seen == sorted(seen)


def test_warm_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        warm(tmp_path / "absent", min_available_bytes=0, available=never_limits)


def test_warm_directory_is_a_read_error(tmp_path: Path) -> None:
    result = warm(tmp_path, min_available_bytes=0, available=never_limits)
    assert result.stopped is not None and result.stopped.startswith("read error: ")
    assert result.bytes_read == 0


class _FailingFile(io.FileIO):
    """Reads ``good`` chunks, then fails like a bad disk (or ends early when ``eof`` is set)."""

    good = 2
    eof = False

    def readinto(self, buffer: object) -> int:
        if _FailingFile.good <= 0:
            if _FailingFile.eof:
                return 0
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        _FailingFile.good -= 1
        return super().readinto(buffer)  # type: ignore[arg-type]


@pytest.mark.parametrize(("eof", "reason"), [(False, os.strerror(errno.EIO)), (True, "file ended at")])
def test_warm_read_failure_is_reported(
    monkeypatch: pytest.MonkeyPatch, data_file: Path, eof: bool, reason: str
) -> None:
    monkeypatch.setattr(_FailingFile, "good", 2)
    monkeypatch.setattr(_FailingFile, "eof", eof)
    monkeypatch.setattr(pagecache, "open", lambda path, mode, buffering: _FailingFile(path, "rb"), raising=False)
    result = warm(data_file, min_available_bytes=0, buffer_bytes=MiB, available=never_limits)
    assert result.bytes_read == 2 * MiB
    assert result.stopped is not None
    assert result.stopped.startswith("read error: ")
    assert reason in result.stopped
    assert "\n" not in result.stopped


@pytest.mark.parametrize("field", ["buffer_bytes", "check_every_bytes"])
def test_warm_rejects_non_positive_sizes(data_file: Path, field: str) -> None:
    with pytest.raises(ValueError, match="positive"):
        warm(data_file, min_available_bytes=0, available=never_limits, **{field: 0})  # type: ignore[arg-type]


def test_warm_result_to_dict_is_json(data_file: Path) -> None:
    result = warm(data_file, min_available_bytes=0, available=never_limits)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["path"] == str(data_file)
    assert data["total_bytes"] == data["bytes_read"] == FILE_BYTES
    assert data["complete"] is True
    assert data["stopped"] is None
    assert set(data["before"]) == set(data["after"]) == {"resident_bytes", "total_bytes", "fraction", "reason"}


def test_warm_result_fields() -> None:
    unknown = Residency(None, 10, "why")
    result = WarmResult(Path("x"), 10, 4, 0.5, "cancelled", unknown, Residency(4, 10))
    assert result.to_dict()["complete"] is False
    assert result.to_dict()["after"] == {"resident_bytes": 4, "total_bytes": 10, "fraction": 0.4, "reason": None}
    assert unknown.to_dict()["fraction"] is None


# --- drop / drop_all_caches ----------------------------------------------------------------------


def test_drop_unsupported_platform(monkeypatch: pytest.MonkeyPatch, data_file: Path) -> None:
    monkeypatch.delattr(os, "posix_fadvise", raising=False)
    assert drop(data_file) is False


def test_drop_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        drop(tmp_path / "absent")


def test_drop_all_caches_writes_3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Never drops this machine's caches: the proc file is redirected to a temporary one.
    target = tmp_path / "drop_caches"
    target.touch()
    synced: list[bool] = []
    monkeypatch.setattr(pagecache, "_platform", lambda: "linux")
    monkeypatch.setattr(pagecache, "_DROP_CACHES", target)
    monkeypatch.setattr(os, "sync", lambda: synced.append(True), raising=False)
    assert drop_all_caches() is True
    assert target.read_text() == "3\n"
    assert synced == [True]


def test_drop_all_caches_not_permitted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pagecache, "_platform", lambda: "linux")
    monkeypatch.setattr(pagecache, "_DROP_CACHES", tmp_path / "missing-dir" / "drop_caches")
    monkeypatch.setattr(os, "sync", lambda: None, raising=False)
    assert drop_all_caches() is False


def test_drop_all_caches_not_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pagecache, "_platform", lambda: "darwin")
    assert drop_all_caches() is False
