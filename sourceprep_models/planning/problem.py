"""The unpinned part of a pipeline, which the strategies differ on: the problem and what a strategy does with it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sourceprep_models.planning.pins import PinSchedule
from sourceprep_models.planning.records import PipelineModel


@dataclass(frozen=True)
class Problem:
    budget: int
    cap: int | None
    stage_names: tuple[str, ...]
    durations: tuple[float, ...]  # each stage's run time (zeros when unknown: only keep_alive 0 expires)
    keys: tuple[str, ...]  # each stage's model
    sizes: Mapping[str, int]
    models: Mapping[str, PipelineModel]
    demands: tuple[str | None, ...]  # each stage's unpinned model (None: the stage runs a pin)
    room: tuple[int, ...]  # bytes left for unpinned models during each stage
    slots: tuple[int | None, ...]  # count left for unpinned models during each stage
    initial: tuple[str, ...]  # unpinned keys resident before the first stage, least recently used first
    end_room: int
    end_slots: int | None
    next_use: tuple[Mapping[str, int], ...]  # per stage: each key's first demand at or after it


def build_problem(
    stages: Sequence[tuple[str, str]],
    models: Mapping[str, PipelineModel],
    resident: Sequence[str],
    budget: int,
    cap: int | None,
    schedule: PinSchedule,
    durations_s: Sequence[float] | None,
) -> Problem:
    sizes = {key: model.size for key, model in models.items()}

    def room(pins: frozenset[str]) -> tuple[int, int | None]:
        return budget - sum(sizes[pin] for pin in pins), None if cap is None else cap - len(pins)

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
        cap=cap,
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


def fits(problem: Problem, keys: Sequence[str] | frozenset[str], room: int, slots: int | None) -> bool:
    return sum(problem.sizes[key] for key in keys) <= room and (slots is None or len(keys) <= slots)


def run_cost(problem: Problem, run: Run) -> tuple[int, int, int]:
    loads = [demand for demand, loaded in zip(problem.demands, run.loaded, strict=True) if loaded and demand]
    unloads = sum(map(len, run.evicted)) + sum(map(len, run.expired)) + len(run.final_evict)
    return sum(problem.sizes[key] for key in loads), len(loads), unloads


Rank = Callable[[str, int, Mapping[str, float]], tuple[Any, ...]]  # (key, stage, last use) → eviction order
