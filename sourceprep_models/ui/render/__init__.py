"""Two views of the same result records: JSON-ready dicts and rich tables. Rendering never computes
anything a JSON consumer would not also get."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sourceprep_models.config.schema import LOCAL_HOST
from sourceprep_models.units import format_seconds, human_bytes, processor, until

if TYPE_CHECKING:
    from sourceprep_models.pipeline.plan import RunPlan
    from sourceprep_models.pipeline.report import RunReport
    from sourceprep_models.swap.executor import LoadReport, Step, UnloadReport
    from sourceprep_models.swap.operations import LoadPreview
    from sourceprep_models.swap.pins import Repair
    from sourceprep_models.swap.status import StatusReport
    from sourceprep_models.ui.render.flex import FlexTable


# -- dicts ---------------------------------------------------------------------------------------


# -- tables --------------------------------------------------------------------------------------


def _table(*headers: str) -> FlexTable:
    """A table whose figures, names and statuses are never cut (see ``flex``)."""
    from sourceprep_models.ui.render.flex import FlexTable

    return FlexTable(headers)


def status_table(report: StatusReport) -> FlexTable:
    """One row per loaded model; a HOST column first when the config's servers run on several machines."""
    several_hosts = len(report.hosts) > 1
    headers = ("ENDPOINT", "MODEL", "STATE", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL")
    table = _table(*(("HOST", *headers) if several_hosts else headers))
    for endpoint in report.endpoints:
        first = (endpoint.host, endpoint.name) if several_hosts else (endpoint.name,)
        if endpoint.error:
            # The full one-line error goes to stderr; the table only flags the row.
            label = "(unreachable)" if endpoint.exit_code == 4 else "(error)"
            table.add_row(*first, label, "", "", "", "", "")
            continue
        if not endpoint.models and not endpoint.lost_pins:
            table.add_row(*first, "(nothing loaded)", "", "", "", "", "")
        for model in endpoint.models:
            table.add_row(
                *first,
                model.name,
                model.state + (" (pinned)" if model.pinned or model.name in endpoint.pins else ""),
                human_bytes(model.size),
                processor(model.size, model.size_vram),
                str(model.context_length or ""),
                until(model.expires_at),
            )
        for name, reason in endpoint.lost_pins:
            if reason == "missing":
                table.add_row(*first, name, "lost (pinned)", "", "", "", "not loaded")
    return table


def lost_pin_lines(report: StatusReport) -> list[str]:
    """Pins a server no longer keeps, each with the command that puts it back (status itself only looks)."""
    lines = []
    for endpoint in report.endpoints:
        for name, reason in endpoint.lost_pins:
            what = "is not loaded" if reason == "missing" else "is loaded with an expiry another client set"
            lines.append(f"pinned {name} {what} on {endpoint.name}; `sourceprep-models pin --repair` puts it back")
    return lines


def host_lines(report: StatusReport) -> list[str]:
    """Each machine's memory across its servers: the budget the planner uses, what is in use, what is free."""
    lines = []
    for host in report.hosts:
        if host.free_bytes is None:
            lines.append(
                f"MACHINE {host.name}: budget unknown ({host.budget.source}); models use {human_bytes(host.used_bytes)}"
            )
            continue
        lines.append(
            f"MACHINE {host.name}: {human_bytes(host.used_bytes)} used of {human_bytes(host.budget.bytes)} budget, "
            f"{human_bytes(host.free_bytes)} free ({host.budget.source}; "
            f"servers: {', '.join(host.endpoints) or 'none'})"
        )
    return lines


def repair_lines(repair: Repair) -> list[str]:
    """What a pin repair did or could not do, one warning each."""
    lines = [
        f"pinned {name} was not kept by {repair.where.get(name, 'its server')}; reloaded it" for name in repair.repaired
    ]
    lines += [
        f"pinned {name} is not on {repair.where.get(name, 'its server')}; pull it there or unpin it"
        for name in repair.absent
    ]
    lines += [
        f"pinned {name} is not loaded on {repair.where.get(name, 'its server')} and does not fit beside what is"
        for name in repair.waiting
    ]
    return lines


def server_lines(report: StatusReport) -> list[str]:
    """One line per endpoint whose server limits what can be loaded, e.g. llama.cpp's --models-max."""
    lines = []
    for endpoint in report.endpoints:
        facts = endpoint.server
        if not facts:
            continue
        if facts.get("role") == "single-model":
            lines.append(f"{endpoint.name}: single-model llama-server; its model is fixed (start it in router mode)")
        elif facts.get("max_models"):
            lines.append(
                f"{endpoint.name}: {facts.get('role', 'server')} keeps at most {facts['max_models']} models loaded; "
                "beyond that it evicts the least recently used"
            )
    return lines


def hardware_lines(hardware: Mapping[str, Any]) -> list[str]:
    lines = []
    ram_total, ram_available = hardware.get("ram_total"), hardware.get("ram_available")
    if ram_total is not None:
        lines.append(f"RAM     {human_bytes(ram_available)} available of {human_bytes(ram_total)}")
    for gpu in hardware.get("gpus") or []:
        total, free = gpu.get("total_bytes"), gpu.get("free_bytes")
        amount = f"{human_bytes(free)} free of {human_bytes(total)}" if free is not None else human_bytes(total)
        lines.append(f"GPU {gpu.get('index', 0)}   {gpu.get('name')}: {amount}")
    # The planner's budget (config and headroom applied) is the MACHINE line; the probe's raw figure stays in --json.
    for unknown in hardware.get("unknowns") or []:
        lines.append(f"unknown {unknown.get('item')}: {unknown.get('reason')}")
    return lines


def steps_table(steps: list[Step], reports: Sequence[LoadReport] = ()) -> FlexTable:
    """The timed steps; for loads, the total row says where the seconds went (``seconds_text``)."""
    table = _table("STEP", "MODEL", "ENDPOINT", "WALL", "SERVER", "DETAIL")
    for step in steps:
        table.add_row(
            step.step,
            step.model,
            step.endpoint,
            format_seconds(step.wall_s),
            format_seconds(step.server_s) if step.server_s is not None else "-",
            step.detail,
        )
    total = sum(step.wall_s for step in steps)
    texts = [seconds_text(report) for report in reports if report.outcome != "always-ready"]
    if len(texts) > 1:
        texts = [f"{report.model}: {text}" for report, text in zip(reports, texts, strict=True)]
    by_host: dict[str, float] = {}
    for report in reports:
        by_host[report.host] = by_host.get(report.host, 0.0) + report.total_s
    if len(by_host) > 1:
        # The hosts swapped at the same time: each host's steps add up, the hosts do not.
        for host, seconds in by_host.items():
            table.add_row(f"total on {host}", "", "", format_seconds(seconds), "", "")
        total = max(by_host.values())
        texts.insert(0, "hosts in parallel")
    table.add_row("total", "", "", format_seconds(total), "", "; ".join(texts), style="bold")
    return table


def seconds_text(report: LoadReport) -> str:
    """Where one swap's seconds went: ``unload 0.01s, released 0.05s, read 0.30s from disk, load 1.2s``."""
    seconds = report.breakdown()
    parts = []
    if seconds.busy_wait_s is not None:
        parts.append(f"busy wait {format_seconds(seconds.busy_wait_s)}")
    if seconds.unload_s or seconds.released_s:
        parts.append(f"unload {format_seconds(seconds.unload_s)}, released {format_seconds(seconds.released_s)}")
    source = f" from {seconds.read_from}" if seconds.read_from else ""
    if seconds.read_s is not None:
        parts.append(f"read {format_seconds(seconds.read_s)}{source}")
    served = f" (server {format_seconds(seconds.server_load_s)})" if seconds.server_load_s is not None else ""
    parts.append(f"load {format_seconds(seconds.load_s)}{served}" + ("" if seconds.read_s is not None else source))
    if seconds.first_token_s is not None:
        parts.append(f"first token {format_seconds(seconds.first_token_s)}")
    return ", ".join(parts)


def load_summary(report: LoadReport) -> str:
    if report.outcome == "always-ready":
        return f"{report.model} on {report.endpoint}: cloud endpoint, always ready, nothing to load"
    verb = {"loaded": "loaded", "reloaded": "reloaded", "already-loaded": "already loaded"}[report.outcome]
    where = ""
    if report.resident is not None:
        resident = report.resident
        parts = [processor(resident.size, resident.size_vram), human_bytes(resident.size)]
        if resident.context_length:
            parts.append(f"context {resident.context_length}")
        # A server that does not say where the model runs (llama.cpp, LM Studio) gets no "unknown" here.
        where = " (" + ", ".join(part for part in parts if part != "unknown") + ")"
    return f"{report.model} {verb} on {report.endpoint} in {format_seconds(report.total_s)}{where}"


def unload_summary(report: UnloadReport) -> list[str]:
    lines = []
    if report.unloaded:
        total = sum(step.wall_s for step in report.steps)
        lines.append(f"unloaded {', '.join(report.unloaded)} from {report.endpoint} in {format_seconds(total)}")
    lines.extend(f"{name} was not loaded on {report.endpoint}" for name in report.not_loaded)
    if not lines:
        lines.append(f"nothing was loaded on {report.endpoint}")
    return lines


def plan_table(preview: LoadPreview) -> FlexTable:
    """`load --dry-run`: every model loaded on the machine's servers, what leaves, what comes in, the budget."""
    from sourceprep_models.planning.load import Refusal

    plan, prediction, budget = preview.plan, preview.prediction, preview.budget
    table = _table("MODEL", "ENDPOINT", "ACTION", "SIZE", "NOTE")
    victims = set() if isinstance(plan, Refusal) else {(v.group or preview.endpoint, v.name) for v in plan.evict}
    restore = (
        set() if isinstance(plan, Refusal) else {(p.group or preview.endpoint, p.name) for p in plan.restore_after}
    )
    for where, model in preview.loaded:
        if (where, model.name) in victims:
            action = "evict"
            note = "pinned; reloaded afterwards" if (where, model.name) in restore else ""
        else:
            action, note = "stays", ""
        table.add_row(model.name, where, action, human_bytes(model.size), note)
    incoming = plan.incoming
    if isinstance(plan, Refusal):
        action, note = "refused", plan.reason
    elif plan.noop:
        action, note = "already loaded", "nothing to do"
    else:
        action = "reload" if plan.reload else "load"
        note = f"predicted ({prediction.source}), context {prediction.num_ctx}"
    table.add_row(incoming.name, preview.endpoint, action, human_bytes(incoming.size), note)
    after = "" if isinstance(plan, Refusal) else human_bytes(plan.resident_after)
    table.add_row(
        "budget",
        "this machine" if preview.host == LOCAL_HOST else f"host {preview.host}",
        "",
        human_bytes(budget.bytes),
        f"{budget.source}; in use after: {after or '-'}",
    )
    return table


# -- pipelines --------------------------------------------------------------------------------------


def run_plan_table(plan: RunPlan) -> FlexTable:
    """`run-pipeline --dry-run`: per stage what loads and what leaves first (ACTION, as in the run's own
    table), what is prefetched, memory in use. ENDPOINT appears when the pipeline uses more than one
    server (the JSON always has it)."""
    rows = plan.to_dict()["stages"]
    several = len({row["endpoint"] for row in rows}) > 1
    table = _table("STAGE", "MODEL", *(["ENDPOINT"] if several else []), "ACTION", "PREFETCH", "RESIDENT", "PREDICTED")
    for row in rows:
        action = row["action"] + (f", evict {', '.join(row['evicted'])}" if row["evicted"] else "")
        if row.get("preload_during"):
            action += f" (preload during stage {row['preload_during']})"
        if row["restore_after"]:
            action += f", back after: {', '.join(row['restore_after'])}"
        table.add_row(
            row["stage"],
            row["model"],
            *([row["endpoint"]] if several else []),
            action,
            row["prefetch"] or "",
            ", ".join(row["resident"]),
            human_bytes(row["predicted_bytes"]) if row["predicted_bytes"] else "",
        )
    return table


def run_table(report: RunReport) -> FlexTable:
    """The run's timing table: what each stage cost in swapping and in work, and the swap penalty."""
    table = _table("STAGE", "MODEL", "ACTION", "UNLOAD", "LOAD", "CACHE", "WORK", "TTFT", "TOK/S", "STATUS")
    for row in report.stages:
        action = row.action
        if row.evicted:
            action += f", evict {', '.join(row.evicted)}"
        if row.restored:
            action += f", restore {', '.join(row.restored)}"
        cache = (row.cache or "") + (" (prefetched)" if row.prefetched else "")
        if row.hidden_s:
            action += f" ({format_seconds(row.hidden_s)} hidden)"
        table.add_row(
            row.stage,
            row.model,
            action,
            format_seconds(row.unload_s) if row.unload_s else "",
            format_seconds(row.load_s + row.warm_s) if row.load_s or row.warm_s else "",
            cache,
            format_seconds(row.work_s),
            format_seconds(row.ttft_s) if row.ttft_s is not None else "",
            f"{row.tokens_per_s:.1f}" if row.tokens_per_s is not None else "",
            row.status if not row.exit_code else f"{row.status} (exit {row.exit_code})",
        )
    totals = report.to_dict()["totals"]
    if totals["overhead_s"] >= 0.0005:
        # The tool's own time between and around the stages, so that every second of the run is in the table.
        overhead = format_seconds(totals["overhead_s"])
        table.add_row("(between)", "", "plan, config, state", "", "", "", "", "", "", overhead)
    table.add_row(
        "total",
        "",
        f"{totals['loads']} loads",
        format_seconds(totals["unload_s"]),
        format_seconds(totals["load_s"] + totals["warm_s"]),
        "",
        format_seconds(totals["work_s"]),
        "",
        "",
        f"swap penalty {format_seconds(totals['swap_penalty_s'])}",
        style="bold",
    )
    return table
