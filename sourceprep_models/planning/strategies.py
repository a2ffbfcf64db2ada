"""The lazy plays: keep everything, evict in one order only when a stage needs room (the baselines lru,
ollama and unload-all, and the look-ahead orders the search is set against)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from sourceprep_models.planning.problem import Problem, Rank, Run, fits, shed
from sourceprep_models.planning.records import PipelineModel

OLLAMA_DEFAULT_KEEP_ALIVE_S = 300.0  # OLLAMA_KEEP_ALIVE default 5m (ollama.md §3.1)


def play_lazy(
    problem: Problem,
    rank: Rank,
    *,
    reset: bool = False,
    readd: bool = False,
    expiry: bool = False,
) -> Run:
    """Play a server-style strategy: keep everything, evict in ``rank`` order only when the stage needs room.

    ``reset`` unloads every unpinned model but the stage's own first (unload-all); ``readd`` puts back any
    evicted model that still fits (the greedy lookahead's maximal keep); ``expiry`` lets a model leave on its own
    once its keep_alive has run since its last use ended (Ollama, ollama.md §3.3).
    """
    run = Run()
    current = list(problem.initial)
    last_use: dict[str, float] = {key: position - len(current) for position, key in enumerate(current)}
    last_end: dict[str, float] = dict.fromkeys(current, 0.0)
    clock = 0.0
    for index, demand in enumerate(problem.demands):
        expired: list[str] = []
        if expiry:
            # The idle timer starts when the model's last request ends; keep_alive 0 leaves as soon as it is idle.
            expired = [key for key in current if last_end[key] + _keep_alive(problem.models[key]) <= clock]
            current = [key for key in current if key not in expired]
        evicted: list[str] = []
        if reset:
            evicted = [key for key in current if key != demand]
            current = [key for key in current if key == demand]
        loaded = demand is not None and demand not in current
        wanted = current + ([demand] if loaded and demand is not None else [])
        room, slots = problem.room[index], problem.slots[index]
        if not fits(problem, wanted, room, slots):
            victims = sorted((key for key in current if key != demand), key=lambda k: rank(k, index, last_use))
            evicted += shed(problem, wanted, victims, room, slots)
            if readd:
                for victim in reversed(list(evicted)):
                    if victim in victims and fits(problem, [*wanted, victim], room, slots):
                        wanted.append(victim)
                        evicted.remove(victim)
        current = wanted
        if demand is not None:
            last_use[demand] = index
        run.evicted.append(tuple(evicted))
        run.expired.append(tuple(expired))
        run.loaded.append(loaded)
        run.resident.append(frozenset(current))
        clock += problem.durations[index]
        if demand is not None:
            last_end[demand] = clock
    run.final_evict = final_evict(problem, current, last_use)
    return run


def final_evict(problem: Problem, current: Sequence[str], last_use: Mapping[str, float]) -> tuple[str, ...]:
    """After the last stage, make room for the pins coming back: least recently used first."""
    staying = sorted(current, key=lambda key: last_use.get(key, -math.inf))
    return tuple(shed(problem, staying, list(staying), problem.end_room, problem.end_slots))


def lru_rank(problem: Problem) -> Rank:
    return lambda key, index, last_use: (last_use.get(key, -math.inf), key)


def ollama_rank(problem: Problem) -> Rank:
    # Shortest keep_alive first, forever last, ties by blob path (the key stands in); recency plays no part.
    return lambda key, index, last_use: (_keep_alive(problem.models[key]), key)


def _keep_alive(model: PipelineModel) -> float:
    if model.pinned:
        return math.inf
    if model.keep_alive_s is None:
        return OLLAMA_DEFAULT_KEEP_ALIVE_S
    return math.inf if model.keep_alive_s < 0 else model.keep_alive_s
