"""`bench` as tables: each model's loads and first token, or the alternation call by call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sourceprep_models.ui.render import _table
from sourceprep_models.units import format_seconds

if TYPE_CHECKING:
    from sourceprep_models.bench import Alternation, ModelBench
    from sourceprep_models.ui.render.flex import FlexTable


def bench_table(results: list[ModelBench]) -> FlexTable:
    table = _table("MODEL", "COLD LOAD", "WARM LOAD", "TTFT", "TOK/S", "CACHE")
    for row in results:
        table.add_row(
            row.model,
            format_seconds(row.cold_load_s) if row.cold_load_s is not None else "",
            format_seconds(row.warm_load_s) if row.warm_load_s is not None else "",
            format_seconds(row.ttft_s) if row.ttft_s is not None else "",
            f"{row.tokens_per_s:.1f}" if row.tokens_per_s is not None else "",
            row.cache,
        )
    return table


def alternation_table(result: Alternation) -> FlexTable:
    """Call by call, as the server behaves now (BEFORE) and with both models resident (AFTER)."""
    table = _table("CALL", "MODEL", "BEFORE", "AFTER")
    for call in result.calls:
        after = format_seconds(call.after_s) if call.after_s is not None else "n/a"
        table.add_row(str(call.index), call.model, format_seconds(call.before_s), after)
    after_total = result.after_total_s
    table.add_row(
        "total",
        "",
        format_seconds(result.before_total_s),
        format_seconds(after_total) if after_total is not None else "n/a",
        style="bold",
    )
    return table
