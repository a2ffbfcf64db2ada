"""The one way the tool writes a file: whole or not at all.

Config edits, run states, reports and caches all go through ``write_atomic``: the text goes to a
temp file in the same directory, is fsynced, and replaces the target with ``os.replace``. A crash
leaves either the old file or the new one, never half of each, and readers never see a partial file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from sourceprep_models.errors import SourceprepError


def write_atomic(path: Path, text: str) -> None:
    """Replace the file at ``path`` with ``text`` (UTF-8, line endings as given) in one step.

    A symlink is followed and its target rewritten, so a dotfiles setup keeps its link. Anything
    that is not a regular file (a directory, a FIFO, a device such as /dev/stdout) is refused with
    a ``SourceprepError`` naming the path: replacing it would not write where the user meant.
    The parent directory must exist.
    """
    target = Path(os.path.realpath(path))
    mode = _existing_mode(path, target)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _existing_mode(path: Path, target: Path) -> int:
    """The permission bits the new file keeps: the old file's, or rw-r--r-- for a new one."""
    try:
        info = target.stat()
    except FileNotFoundError:
        return 0o644
    if stat.S_ISREG(info.st_mode):
        return stat.S_IMODE(info.st_mode)
    shown = f"{path} (a link to {target})" if Path(path).is_symlink() else str(path)
    raise SourceprepError(f"{shown}: is {_kind_of(info.st_mode)}, not a regular file; name a file to write instead")


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable where the platform allows opening a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
