"""The unpinned part of a pipeline, which the strategies differ on: the problem and what a strategy does with it.

Room is the machine's: bytes left beside the pins, shared by every server (group). Slots are per cap: how many
unpinned models each capped server (or, under one shared cap, the whole plan) may still hold beside its pins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sourceprep_models.planning.caps import Caps
from sourceprep_models.planning.pins import PinSchedule
from sourceprep_models.planning.records import PipelineModel

Slots = Mapping[str, int]  # cap scope (see ``caps``) -> how many more models it may hold; uncapped scopes absent


@dataclass(frozen=True)
class Problem:
    budget: int
    caps: Caps
    scope: Mapping[str, str | None]  # each key's cap scope (None: no cap counts it)
    stage_names: tuple[str, ...]
    durations: tuple[float, ...]  # each stage's run time (zeros when unknown: only keep_alive 0 expires)
    keys: tuple[str, ...]  # each stage's model
    sizes: Mapping[str, int]
    models: Mapping[str, PipelineModel]
    demands: tuple[str | None, ...]  # each stage's unpinned model (None: the stage runs a pin)
    room: tuple[int, ...]  # bytes left for unpinned models during each stage
    slots: tuple[Slots, ...]  # count left for unpinned models during each stage, per cap
    initial: tuple[str, ...]  # unpinned keys resident before the first stage, least recently used first
    end_room: int
    end_slots: Slots
    next_use: tuple[Mapping[str, int], ...]  # per stage: each key's first demand at or after it


def build_problem(
    stages: Sequence[tuple[str, str]],
    models: Mapping[str, PipelineModel],
    resident: Sequence[str],
    budget: int,
    caps: Caps,
    schedule: PinSchedule,
    durations_s: Sequence[float] | None,
) -> Problem:
    sizes = {key: model.size for key, model in models.items()}
    scope = {key: caps.scope(model.group) for key, model in models.items()}

    def room(pins: frozenset[str]) -> tuple[int, Slots]:
        slots = caps.limits
        for pin in pins:
            if (cap := scope[pin]) is not None:
                slots[cap] -= 1
        return budget - sum(sizes[pin] for pin in pins), slots

    demands = tuple(None if models[key].pinned else key for _, key in stages)
    per_stage = [room(pins) for pins in schedule.pins]
    next_use: list[dict[str, int]] = []
    upcoming: dict[str, int] = {}
    for index in range(len(demands) - 1, -1, -1):
        demand = demands[index]
        if demand is not None:
            upcoming = {**upcoming, demand: index}
        next_use.append(upcoming)
    end_room, end_slots = room(schedule.end)
    return Problem(
        budget=budget,
        caps=caps,
        scope=scope,
        stage_names=tuple(stage for stage, _ in stages),
        durations=tuple(durations_s) if durations_s is not None else (0.0,) * len(stages),
        keys=tuple(key for _, key in stages),
        sizes=sizes,
        models=models,
        demands=demands,
        room=tuple(r for r, _ in per_stage),
        slots=tuple(s for _, s in per_stage),
        initial=tuple(dict.fromkeys(key for key in resident if not models[key].pinned)),
        end_room=end_room,
        end_slots=end_slots,
        next_use=tuple(reversed(next_use)),
    )


@dataclass
class Run:
    """What one strategy does with the unpinned models, stage by stage."""

    evicted: list[tuple[str, ...]] = field(default_factory=list)
    expired: list[tuple[str, ...]] = field(default_factory=list)
    loaded: list[bool] = field(default_factory=list)
    resident: list[frozenset[str]] = field(default_factory=list)
    final_evict: tuple[str, ...] = ()


def fits(problem: Problem, keys: Iterable[str], room: int, slots: Slots) -> bool:
    """Whether these models fit in ``room`` bytes and, under every cap, in its ``slots``."""
    keys = list(keys)
    if sum(problem.sizes[key] for key in keys) > room:
        return False
    if not slots:
        return True
    return all(count <= slots[scope] for scope, count in _counts(problem, keys).items())


def relieves(problem: Problem, victim: str, keys: Iterable[str], room: int, slots: Slots) -> bool:
    """Whether ``victim`` leaving ``keys`` brings them closer to fitting: any model frees bytes, but a slot only
    under a cap that is over (a model of another server frees nothing there)."""
    keys = list(keys)
    if sum(problem.sizes[key] for key in keys) > room:
        return True
    scope = problem.scope[victim]
    return scope is not None and scope in slots and _counts(problem, keys).get(scope, 0) > slots[scope]


def shed(problem: Problem, held: list[str], order: Iterable[str], room: int, slots: Slots) -> list[str]:
    """Take models out of ``held`` in ``order`` until it fits, passing over those whose leaving would not help;
    returns them in the order they left. A model passed over never becomes useful later (leaving only shrinks)."""
    gone: list[str] = []
    for key in order:
        if fits(problem, held, room, slots):
            break
        if relieves(problem, key, held, room, slots):
            held.remove(key)
            gone.append(key)
    return gone


def _counts(problem: Problem, keys: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        if (scope := problem.scope[key]) is not None:
            counts[scope] = counts.get(scope, 0) + 1
    return counts


def run_cost(problem: Problem, run: Run) -> tuple[int, int, int]:
    loads = [demand for demand, loaded in zip(problem.demands, run.loaded, strict=True) if loaded and demand]
    unloads = sum(map(len, run.evicted)) + sum(map(len, run.expired)) + len(run.final_evict)
    return sum(problem.sizes[key] for key in loads), len(loads), unloads


Rank = Callable[[str, int, Mapping[str, float]], tuple[Any, ...]]  # (key, stage, last use) → eviction order
