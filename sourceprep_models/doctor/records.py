"""The records doctor produces: one ``Check`` per line of the checklist, and the whole report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sourceprep_models.config.locate import ConfigLocation
    from sourceprep_models.config.schema import Config
    from sourceprep_models.providers.diagnostics import Finding

Status = Literal["ok", "warning", "problem", "skipped"]
STATUSES: tuple[Status, ...] = ("ok", "warning", "problem", "skipped")


@dataclass(frozen=True)
class Check:
    """One line of the checklist."""

    id: str
    status: Status
    summary: str
    fix: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, check_id: str, finding: Finding) -> Check:
        """A provider's finding about its server, as a line of the checklist."""
        return cls(check_id, finding.status, finding.summary, finding.fix, finding.details)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "summary": self.summary, "fix": self.fix, "details": self.details}


def ok(check_id: str, summary: str, **details: Any) -> Check:
    return Check(check_id, "ok", summary, None, details)


def warning(check_id: str, summary: str, fix: str, **details: Any) -> Check:
    return Check(check_id, "warning", summary, fix, details)


def problem(check_id: str, summary: str, fix: str, **details: Any) -> Check:
    return Check(check_id, "problem", summary, fix, details)


def skipped(check_id: str, summary: str, **details: Any) -> Check:
    return Check(check_id, "skipped", summary, None, details)


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {status: sum(1 for check in self.checks if check.status == status) for status in STATUSES}

    @property
    def exit_code(self) -> int:
        """1 when any check is a problem; warnings alone do not fail (so CI can gate on it)."""
        return 1 if any(check.status == "problem" for check in self.checks) else 0

    def summary_line(self) -> str:
        counts = self.counts()
        line = (
            f"{counts['ok']} ok, {counts['warning']} warning{'' if counts['warning'] == 1 else 's'}, "
            f"{counts['problem']} problem{'' if counts['problem'] == 1 else 's'}"
        )
        return line + (f", {counts['skipped']} skipped" if counts["skipped"] else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "checks": [check.to_dict() for check in self.checks],
            "summary": self.counts(),
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class DoctorInputs:
    location: ConfigLocation
    config_exists: bool
    config: Config | None
    config_error: str | None
    environ: Mapping[str, str]
    only_endpoint: str | None = None


@dataclass(frozen=True)
class Sized:
    """A model with its predicted size on an endpoint (``identity``: two names of one instance share it)."""

    name: str
    identity: str
    bytes: int
    pinned: bool = False
