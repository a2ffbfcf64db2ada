"""`doctor` as a table: STATUS, CHECK, DETAIL / FIX, one line per check (the JSON is the report's to_dict)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

    from sourceprep_models.doctor.records import DoctorReport

_STYLES = {"ok": "green", "warning": "yellow", "problem": "bold red", "skipped": "dim"}


def doctor_table(report: DoctorReport) -> Table:
    """STATUS, CHECK, DETAIL: one line per check, the fix after the summary."""
    from rich.table import Table

    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, show_edge=False)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("CHECK", no_wrap=True)
    table.add_column("DETAIL / FIX", no_wrap=True)
    for check in report.checks:
        detail = check.summary + (f" -> fix: {check.fix}" if check.fix else "")
        table.add_row(check.status, check.id, detail, style=_STYLES[check.status])
    return table
