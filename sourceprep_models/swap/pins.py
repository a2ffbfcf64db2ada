"""Keep configured pins true on the server: notice a pin the server lost and put it back.

A pin can be lost three ways: the server restarted (nothing is loaded), another client sent a
finite keep_alive (ollama.md §3.2), or this tool evicted it on purpose for heavy work. Repair
never evicts anything: a pin that does not fit right now comes back at the next repair. When the
heavy work a pin was evicted for stops early (Ctrl-C, a failure), ``bring_back`` reloads it at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sourceprep_models.errors import ModelNotFound, SourceprepError

if TYPE_CHECKING:
    from sourceprep_models.providers.base import LoadRequest
    from sourceprep_models.swap.executor import Executor, PutBack, Step
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
    from sourceprep_models.planning.load import Plan

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


def bring_back(
    session: Session, names: Iterable[str], *, restore: Mapping[tuple[str, str], LoadRequest], timeout_s: float
) -> PutBack:
    """Pins this tool evicted for work that then stopped (Ctrl-C, a failure): reload each now,
    evicting the unpinned models in its way (the work they were loaded for is over), and confirm it
    listed as loaded. Never evicts another pin for one; never raises: what stays out is named."""
    from sourceprep_models.planning.load import Refusal
    from sourceprep_models.swap.executor import PutBack

    back = PutBack()
    wanted = {session.identity(name) for name in names}
    for spec in session.pinned_specs():
        identity = session.identity(spec.name)
        if identity not in wanted:
            continue
        try:
            loaded = session.loaded()
            if identity in {session.identity(model.name) for model in loaded}:
                back.restored.append(spec.name)  # listed: it came back on its own (a later stage loaded it)
                continue
            request = session.request(spec.name, spec)
            plan, _, _ = session.plan(request, loaded)
            if isinstance(plan, Refusal):
                back.lost[spec.name] = plan.reason
                continue
            if any(victim.pinned for victim in plan.evict):
                pins = ", ".join(victim.name for victim in plan.evict if victim.pinned)
                back.lost[spec.name] = f"it fits only without pinned {pins}"
                continue
            # The executor's load waits for the evictions and verifies the pin is listed afterwards.
            session.machine.executor(session).load(request, plan, restore=restore, unload_timeout_s=timeout_s)
            back.restored.append(spec.name)
        except SourceprepError as exc:
            back.lost[spec.name] = exc.message
        except KeyboardInterrupt:
            back.lost[spec.name] = "interrupted again before it was reloaded"
    return back
