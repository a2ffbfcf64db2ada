"""What survives between invocations of a run: which stage runs finished and why the run stopped,
written atomically after every stage so that ``--resume`` continues from the first unfinished one."""

from __future__ import annotations

import hashlib
import json
import re
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "status": self.status,
            "finished": self.finished,
            "message": self.message,
            "outputs": self.outputs,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
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


def load_state(path: Path) -> RunState | None:
    try:
        return RunState.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceprepError(f"the saved run state {path} is unreadable ({exc}); delete it to start over") from None


def save_state(path: Path, state: RunState) -> None:
    from sourceprep_models.fs import write_atomic
    from sourceprep_models.providers import secrets

    state.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Its messages quote server errors, which may quote the API key.
    write_atomic(path, json.dumps(secrets.scrub_data(state.to_dict()), indent=2) + "\n")
