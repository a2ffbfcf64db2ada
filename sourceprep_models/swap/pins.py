"""Keep configured pins true on the server: notice a pin the server lost and put it back.

A pin can be lost three ways: the server restarted (nothing is loaded), another client sent a
finite keep_alive (ollama.md §3.2), or this tool evicted it on purpose for heavy work. Repair
never evicts anything: a pin that does not fit right now comes back at the next repair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sourceprep_models.errors import ModelNotFound
from sourceprep_models.planning.load import Plan
from sourceprep_models.swap.executor import Executor, Step
from sourceprep_models.swap.residency import Session


@dataclass
class Repair:
    steps: list[Step] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # pins that do not fit without evicting
    absent: list[str] = field(default_factory=list)  # pins the server does not have at all
    where: dict[str, str] = field(default_factory=dict)  # pin name -> its endpoint, for messages


def repair_pins(session: Session, executor: Executor, skip: set[str] | None = None) -> Repair:
    """Reload configured pins the server lost, when they fit without evicting; ``skip`` identities."""
    repair = Repair()
    loaded = session.loaded()
    for spec, why in session.lost_pins(loaded):
        repair.where[spec.name] = session.endpoint.name
        if skip and session.identity(spec.name) in skip:
            continue
        request = session.request(spec.name, spec)
        if why == "missing":
            try:
                plan, _, _ = session.plan(request, loaded)
            except ModelNotFound:
                repair.absent.append(spec.name)
                continue
            if not isinstance(plan, Plan) or plan.evict:
                repair.waiting.append(spec.name)
                continue
        repair.steps.extend(executor.restore([request], detail=f"pin repaired ({why})"))
        repair.repaired.append(spec.name)
        loaded = session.loaded()
    return repair
