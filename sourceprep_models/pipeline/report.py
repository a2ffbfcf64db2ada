"""The run's report: one timing row per stage run, the totals and the swap penalty; the same records
give the table, ``--json`` and ``--report``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sourceprep_models.errors import SourceprepError


@dataclass
class StageReport:
    """One row of the run's timing table."""

    stage: str
    model: str
    endpoint: str
    action: str  # hit | load | preloaded | ready | skipped | resumed
    status: str = "ok"  # ok | failed | skipped
    evicted: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    prefetched: bool = False
    cache: str | None = None  # page cache of the weights when the load started: warm | cold | None (unknown)
    warm_s: float = 0.0
    unload_s: float = 0.0
    load_s: float = 0.0  # preloaded: only what the stage waited for, of a load that ran during an earlier stage
    hidden_s: float = 0.0  # preloaded: the load's seconds that ran during the earlier stage's work
    work_s: float = 0.0
    # When the stage's work started and ended, in seconds since this invocation's run began (monotonic): the
    # run's wall clock from its first stage's work to its last stage's end (``stages_wall_s``) comes from these.
    # None for a stage that did no work here (skipped, or finished by an earlier invocation).
    work_started_s: float | None = None
    work_ended_s: float | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    exit_code: int | None = None
    bytes_loaded: int = 0
    # Where the stage's swap seconds went (``LoadReport.breakdown``); its first token is filled in here.
    seconds: dict[str, Any] | None = None

    @property
    def total_s(self) -> float:
        return self.warm_s + self.unload_s + self.load_s + self.work_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "model": self.model,
            "endpoint": self.endpoint,
            "action": self.action,
            "status": self.status,
            "evicted": self.evicted,
            "restored": self.restored,
            "prefetched": self.prefetched,
            "cache": self.cache,
            "warm_s": round(self.warm_s, 4),
            "unload_s": round(self.unload_s, 4),
            "load_s": round(self.load_s, 4),
            "hidden_s": round(self.hidden_s, 4),
            "work_s": round(self.work_s, 4),
            "work_started_s": _round(self.work_started_s),
            "work_ended_s": _round(self.work_ended_s),
            "ttft_s": round(self.ttft_s, 4) if self.ttft_s is not None else None,
            "tokens_per_s": round(self.tokens_per_s, 2) if self.tokens_per_s is not None else None,
            "exit_code": self.exit_code,
            "bytes_loaded": self.bytes_loaded,
            "seconds": self._seconds(),
            "total_s": round(self.total_s, 4),
        }

    def _seconds(self) -> dict[str, Any] | None:
        if self.seconds is None:
            return None
        return {**self.seconds, "first_token_s": round(self.ttft_s, 4) if self.ttft_s is not None else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageReport:
        fields = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**fields)


@dataclass
class RunReport:
    pipeline: str
    stages: list[StageReport] = field(default_factory=list)
    status: str = "running"
    message: str | None = None
    outputs: str | None = None
    warnings: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def work_s(self) -> float:
        return sum(row.work_s for row in self.stages)

    @property
    def total_s(self) -> float:
        return sum(row.total_s for row in self.stages)

    @property
    def overhead_s(self) -> float:
        """This invocation's seconds outside every stage row: planning, config re-reads, state writes."""
        if not self.wall_s:
            return 0.0
        return max(0.0, self.wall_s - sum(row.total_s for row in self.stages if row.action != "resumed"))

    @property
    def stages_wall_s(self) -> float | None:
        """The wall clock from the first stage's work start to the last stage's work end in this invocation:
        unlike ``wall_s``, it leaves out the planning and the first model's load before any work."""
        timed = [row for row in self.stages if row.work_started_s is not None and row.work_ended_s is not None]
        if not timed:
            return None
        return max(row.work_ended_s or 0.0 for row in timed) - min(row.work_started_s or 0.0 for row in timed)

    @property
    def swap_penalty_s(self) -> float:
        """Every second the run spent that was not the stages' own work: the run's wall clock minus its work
        (stages finished by an earlier invocation count with their own swap time)."""
        return self.total_s - self.work_s + self.overhead_s

    @property
    def loads(self) -> int:
        loads = sum(1 for row in self.stages if row.action in ("load", "preloaded"))
        return loads + sum(len(row.restored) for row in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "status": self.status,
            "message": self.message,
            "stages": [row.to_dict() for row in self.stages],
            "totals": {
                "stages": len(self.stages),
                "loads": self.loads,
                "bytes_loaded": sum(row.bytes_loaded for row in self.stages),
                "unload_s": round(sum(row.unload_s for row in self.stages), 4),
                "load_s": round(sum(row.load_s for row in self.stages), 4),
                "hidden_s": round(sum(row.hidden_s for row in self.stages), 4),
                "warm_s": round(sum(row.warm_s for row in self.stages), 4),
                "work_s": round(self.work_s, 4),
                "total_s": round(self.total_s, 4),
                "wall_s": round(self.wall_s, 4),
                "stages_wall_s": _round(self.stages_wall_s),
                "overhead_s": round(self.overhead_s, 4),
                "swap_penalty_s": round(self.swap_penalty_s, 4),
            },
            "outputs": self.outputs,
            "warnings": self.warnings,
        }


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


class RunStopped(SourceprepError):
    """The run stopped before its end; the state is saved and ``--resume`` continues it."""

    def __init__(self, message: str, exit_code: int, report: RunReport) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.report = report
