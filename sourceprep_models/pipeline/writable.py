"""Before a run loads anything: the files and directories it will write can be written, so that a path that
cannot be written fails the run at once rather than after its first stage."""

from __future__ import annotations

import os
from pathlib import Path

from sourceprep_models.errors import SourceprepError, UsageError


def check_writable(state: Path, report: Path | None, outputs: str | None) -> None:
    """Before anything is loaded: the run state's directory, ``--report`` and ``--outputs`` can be written.

    The options are exit 2 (another value is the fix); the state directory is exit 1 (it comes from
    the environment, XDG_STATE_HOME, not from the command line)."""
    try:
        _probe_directory(state.parent)
    except OSError as exc:
        raise SourceprepError(
            f"cannot write the run state in {state.parent} ({exc.strerror or exc}); make it writable or set "
            "XDG_STATE_HOME to a writable directory"
        ) from None
    for option, value, appends in (("--report", report, False), ("--outputs", outputs, True)):
        if value is None:
            continue
        path = Path(value)
        try:
            _probe_file(path, appends=appends)
        except OSError as exc:
            raise UsageError(
                f"{option} {path}: cannot write there ({exc.strerror or exc}); name a file in a writable directory"
            ) from None


def _probe_directory(directory: Path) -> None:
    """Create ``directory`` if needed and create (and remove) a file in it: the only sure test."""
    import errno
    import tempfile

    existing = next(parent for parent in (directory, *directory.parents) if parent.exists())
    if not existing.is_dir():  # mkdir would only say "File exists"
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".probe.")
    os.close(fd)
    os.unlink(name)


def _probe_file(path: Path, *, appends: bool) -> None:
    """A file the run will write: replaced whole (the report, through the atomic write, which follows a
    link to its target) or appended to (the outputs)."""
    import errno

    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory")
    if target.exists() and not target.is_file() and not (appends and str(target) == os.devnull):
        raise OSError(errno.EINVAL, "not a regular file")
    if appends and target.exists():
        with open(target, "a", encoding="utf-8"):
            pass
        return
    _probe_directory(target.parent)
