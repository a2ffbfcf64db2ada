"""`doctor` as a table: STATUS, CHECK, DETAIL / FIX, one line per check (the JSON is the report's to_dict)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sourceprep_models.doctor.records import DoctorReport
    from sourceprep_models.ui.render.flex import FlexTable

_STYLES = {"ok": "green", "warning": "yellow", "problem": "bold red", "skipped": "dim"}


def doctor_table(report: DoctorReport) -> FlexTable:
    """STATUS, CHECK, DETAIL / FIX: one row per check, the fix after the summary; the detail wraps, the
    status and the check's name are never cut."""
    from sourceprep_models.ui.render.flex import FlexTable

    table = FlexTable(("STATUS", "CHECK", "DETAIL / FIX"))
    for check in report.checks:
        detail = check.summary + (f" -> fix: {check.fix}" if check.fix else "")
        table.add_row(check.status, check.id, detail, style=_STYLES[check.status])
    return table
