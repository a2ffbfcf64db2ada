"""What survives between invocations of a run: which stage runs finished and why the run stopped, so
that ``--resume`` continues from the first unfinished stage.

Two files, so that a stage costs what it adds and not the whole run (a 600-stage run rewrote 600 rows
600 times):

- the header, ``<name>.json``: status, message, outputs, the rows finished before this invocation, and
  ``journal``, a token naming the journal that belongs to it. Written whole and atomically
  (``fs.write_atomic``: temp file, fsync, rename) when an invocation starts and when it stops, never
  per stage. It is the commit point: whatever it says holds after any crash.
- the journal, ``<name>.stages.jsonl``: its first line carries the header's token, then one line per
  finished stage, appended as the stage finishes. Trusted only when its token is the header's, so a
  journal left by an earlier invocation (a crash between writing a new header and starting a new
  journal) is never replayed into a fresh run. Replay stops at the first line that is not a whole
  JSON object ending in a newline: a line torn by a kill or a power loss is dropped with what follows
  it, so that stage simply runs again on ``--resume``.

The journal's lines are not fsynced: a kill (even ``kill -9``) loses nothing the process wrote, since
the kernel holds it; only a power loss can drop the last lines, and then those stages run again, as a
stage interrupted mid-way does. Each invocation starts by folding the journal into a new header and a
new journal (``begin``), so a resumed run never appends after a torn line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sourceprep_models.errors import SourceprepError

# File names that stand for themselves: lower case (a case-insensitive disk folds case), no leading dot.
_PLAIN_NAME = re.compile(r"[a-z0-9_-][a-z0-9._-]{0,99}")
_SLUG_LENGTH = 100


@dataclass
class RunState:
    """What survives between invocations: which stage runs finished, and why the run stopped."""

    pipeline: str
    status: str = "running"  # running | done | failed | paused | interrupted
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage id -> its report row
    message: str | None = None
    outputs: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    updated_at: str | None = None
    journal: str | None = None  # the token of the journal that belongs to this header (see the module)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "status": self.status,
            "finished": self.finished,
            "message": self.message,
            "outputs": self.outputs,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "journal": self.journal,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        return cls(
            pipeline=str(data["pipeline"]),
            status=str(data.get("status", "running")),
            finished=dict(data.get("finished") or {}),
            message=data.get("message"),
            outputs=data.get("outputs"),
            started_at=str(data.get("started_at") or ""),
            updated_at=data.get("updated_at"),
            journal=data.get("journal"),
        )


def state_path(pipeline: str) -> Path:
    """The run-state file of ``pipeline``: one file per exact name (``--resume`` must never pick up another
    pipeline's run), readable in the runs directory.

    A name that is already a plain file name keeps it (``nightly.json``). Any other name gets a slug
    and a hash of the exact name after a ``~``, a character no plain name contains, so that ``a/b``,
    ``a_b`` and ``A_b`` (one file on a case-insensitive disk) never share a file."""
    from sourceprep_models.paths import runs_dir

    if _PLAIN_NAME.fullmatch(pipeline):
        return runs_dir() / f"{pipeline}.json"
    slug = "".join(char if (char.isascii() and char.isalnum()) or char in "-_." else "_" for char in pipeline)
    digest = hashlib.sha256(pipeline.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return runs_dir() / f"{slug.lower()[:_SLUG_LENGTH]}~{digest}.json"


def journal_path(path: Path) -> Path:
    """The journal beside the header ``path`` (``nightly.json``: ``nightly.stages.jsonl``)."""
    return path.with_suffix(".stages.jsonl")


def load_state(path: Path) -> RunState | None:
    """The saved run: the header, with the finished stages of its journal replayed into it."""
    try:
        state = RunState.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceprepError(f"the saved run state {path} is unreadable ({exc}); delete it to start over") from None
    if state.journal is not None:
        state.finished.update(_replay(journal_path(path), state.journal))
    return state


def _replay(journal: Path, token: str) -> dict[str, dict[str, Any]]:
    try:
        data = journal.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SourceprepError(
            f"the saved run journal {journal} is unreadable ({exc}); delete it and its .json to start over"
        ) from None
    finished: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(data.split(b"\n")[:-1]):  # the last piece never ended in a newline
        try:
            line = json.loads(raw)
        except ValueError:
            break
        if not isinstance(line, dict):
            break
        if number == 0:
            if line.get("journal") != token:
                return {}  # another invocation's journal: the header alone is the truth
            continue
        stage, row = line.get("stage"), line.get("row")
        if not isinstance(stage, str) or not isinstance(row, dict):
            break
        finished[stage] = row
    return finished


def begin(path: Path, state: RunState) -> None:
    """An invocation starts: a new header holding every finished row, then a new journal for its stages."""
    state.journal = secrets.token_hex(8)
    save_state(path, state)
    _write(journal_path(path), json.dumps({"journal": state.journal}) + "\n", os.O_TRUNC)


def record(path: Path, state: RunState, stage: str, row: dict[str, Any]) -> None:
    """A stage finished: one line appended to the journal (the header is not touched)."""
    from sourceprep_models.providers import secrets as keys

    state.finished[stage] = row
    # Its messages quote server errors, which may quote the API key.
    line = json.dumps(keys.scrub_data({"stage": stage, "row": row}), separators=(",", ":")) + "\n"
    _write(journal_path(path), line, os.O_APPEND)


def _write(path: Path, text: str, mode: int) -> None:
    # One write(2) (in append mode for a stage): the line lands after whatever is there, whole unless
    # the machine itself stops mid-write (then replay drops it).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o644)
    try:
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def save_state(path: Path, state: RunState) -> None:
    """Rewrite the header (status, message and every finished row so far) atomically."""
    from sourceprep_models.fs import write_atomic
    from sourceprep_models.providers import secrets as keys

    state.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Its messages quote server errors, which may quote the API key.
    write_atomic(path, json.dumps(keys.scrub_data(state.to_dict()), indent=2) + "\n")
