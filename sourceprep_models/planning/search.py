"""The lookahead strategy: the exact shortest path over resident sets, or a beam beyond the exact limit (see the
bound in ``lookahead``'s docstring). The exact search runs through ``exact`` (the same path, found faster); the
plain one here is the reference it is tested against, and the beam."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

from sourceprep_models.planning.exact import MaskSets, exact_sets
from sourceprep_models.planning.problem import Problem, Rank, Run, fits, shed
from sourceprep_models.planning.strategies import final_evict, lru_rank, ollama_rank, play_lazy

# Above these, the exact search gives way to the beam and the greedy plays (see ``lookahead``'s docstring).
# The models bound the plain search's transitions (every subset of what is kept) more than the fast one's.
_EXACT_MODELS = 16
_EXACT_STATES = 4096
_BEAM = 128  # states kept per stage by the search beyond the exact limit
_BEAM_EXHAUSTIVE = 6  # beyond the limit, every maximal kept set is still tried while this few models are resident


def _next_use_ranks(problem: Problem) -> list[Rank]:
    """Eviction orders that look ahead; each ranks a model by when it is next needed and what it costs to reload.

    Furthest next use is Belady's rule (optimal when sizes are equal); with a byte budget every evicted byte costs
    one byte to bring back, so "furthest" is the natural order. Under a count cap freeing a big model buys no more
    room than a small one, so the other orders weigh distance by size, one way and the other, or take the cheapest
    to reload. Models never needed again come first in every order.
    """

    def distance(key: str, index: int) -> float:
        upcoming = problem.next_use[index].get(key)
        return math.inf if upcoming is None else upcoming - index

    def furthest(key: str, index: int, last_use: Mapping[str, float]) -> tuple[Any, ...]:
        return (-distance(key, index), last_use.get(key, -math.inf), key)

    def cheapest_per_stage(key: str, index: int, last_use: Mapping[str, float]) -> tuple[Any, ...]:
        return (-distance(key, index) / max(problem.sizes[key], 1), last_use.get(key, -math.inf), key)

    def largest_and_furthest(key: str, index: int, last_use: Mapping[str, float]) -> tuple[Any, ...]:
        return (-distance(key, index) * problem.sizes[key], last_use.get(key, -math.inf), key)

    def cheapest(key: str, index: int, last_use: Mapping[str, float]) -> tuple[Any, ...]:
        return (problem.sizes[key] if distance(key, index) < math.inf else -1, -distance(key, index), key)

    return [furthest, cheapest_per_stage, largest_and_furthest, cheapest]


def greedy_candidates(problem: Problem) -> list[Run]:
    beam = _search(problem, exact=False)
    assert beam is not None
    return [
        beam,
        *(play_lazy(problem, rank, readd=True) for rank in _next_use_ranks(problem)),
        play_lazy(problem, lru_rank(problem)),
        play_lazy(problem, ollama_rank(problem)),
        play_lazy(problem, lru_rank(problem), reset=True),
    ]


def exact_run(problem: Problem) -> Run | None:
    """The optimal plan, or None beyond the exact limit."""
    if len({demand for demand in problem.demands if demand is not None}) > _EXACT_MODELS:
        return None
    sets = exact_sets(problem, _EXACT_STATES)
    return None if sets is None else _realise(problem, sets)


def reference_run(problem: Problem) -> Run | None:
    """The plain exact search, every state of every stage: what ``exact_run`` must equal, plan for plan."""
    return _search(problem, exact=True)


def _search(problem: Problem, *, exact: bool, plain_options: bool = False) -> Run | None:
    """A shortest path over resident sets of models still needed.

    Exact: every maximal kept set, every state; None beyond the limit. Otherwise a beam: the ``_BEAM`` cheapest
    states per stage, and every maximal kept set while few models are resident, else the ones the look-ahead
    orders choose. ``plain_options``: the beam takes the maximal kept sets from ``_kept_sets`` (the reference
    its tables are tested against), not from the bitmask tables; the options are the same sets, so is the plan.
    """
    if exact and len({demand for demand in problem.demands if demand is not None}) > _EXACT_MODELS:
        return None
    ranks = _next_use_ranks(problem)
    Cost = tuple[int, int, int]
    State = frozenset[str]
    start: State = frozenset(key for key in problem.initial if key in live_keys(problem, 0))
    frontier: dict[State, tuple[Cost, State | None]] = {start: ((0, 0, 0), None)}
    layers: list[dict[State, tuple[Cost, State | None]]] = []
    # The kept sets of a stage depend on the models kept, the stage's model and its room, not on the stage:
    # the same few questions come back stage after stage. The look-ahead orders' choices also depend on
    # the stage's distances, so they are only shared between the states of one stage.
    exhaustive: dict[tuple[State, str | None, int, tuple[tuple[str, int], ...]], list[tuple[State, int]]] = {}
    # The beam asks for every maximal kept set of tens of thousands of different sets (beyond the exact limit
    # the resident sets are many): the exact search's bitmask tables answer them several times as fast.
    masks = None if exact or plain_options else MaskSets(problem)
    order: dict[State, list[str]] = {}  # each state's sorted keys, the tie order: states recur stage after stage

    def in_order(state: State) -> list[str]:
        found = order.get(state)
        if found is None:
            found = order[state] = sorted(state)
        return found

    for index, demand in enumerate(problem.demands):
        live = live_keys(problem, index)
        step: Cost = (problem.sizes[demand], 1, 0) if demand is not None else (0, 0, 0)
        layer: dict[State, tuple[Cost, State | None]] = {}
        room = (problem.room[index], tuple(sorted(problem.slots[index].items())))
        ranked: dict[State, list[tuple[State, int]]] = {}
        orders: list[list[str]] = []
        for state in sorted(frontier, key=in_order):
            cost = frontier[state][0]
            keep = frozenset((state & live) | ({demand} if demand is not None else set()))
            paid = step if demand is not None and demand not in state else (0, 0, 0)
            if exact or len(keep) <= _BEAM_EXHAUSTIVE:
                known = exhaustive.get((keep, demand, *room))
                if known is None:
                    known = exhaustive[(keep, demand, *room)] = (
                        _kept_sets(problem, keep, demand, index) if masks is None else masks.maximal(keep, index)
                    )
                options = known
            else:
                if keep not in ranked:
                    if not orders:  # each look-ahead order over this stage's models, once per stage
                        orders = [_in_order(live, rank, index) for rank in ranks]
                    ranked[keep] = _ranked_sets(problem, keep, demand, index, orders)
                options = ranked[keep]
            for kept, dropped in options:
                total = (cost[0] + paid[0], cost[1] + paid[1], cost[2] + dropped)
                if kept not in layer or total < layer[kept][0]:
                    layer[kept] = (total, state)
        if exact and len(layer) > _EXACT_STATES:
            return None
        if not exact and len(layer) > _BEAM:
            layer = dict(sorted(layer.items(), key=lambda item: (item[1][0], in_order(item[0])))[:_BEAM])
        layers.append(layer)
        frontier = layer
    if not layers:
        return _realise(problem, [])
    best = min(frontier, key=lambda state: (frontier[state][0], sorted(state)))
    chosen: list[State] = [best]
    for layer in reversed(layers[1:]):
        previous = layer[chosen[-1]][1]
        assert previous is not None
        chosen.append(previous)
    return _realise(problem, list(reversed(chosen)))


def live_keys(problem: Problem, index: int) -> frozenset[str]:
    return frozenset(problem.next_use[index]) if index < len(problem.next_use) else frozenset()


def _kept_sets(
    problem: Problem, keep: frozenset[str], demand: str | None, index: int
) -> list[tuple[frozenset[str], int]]:
    """Every maximal subset of ``keep`` that fits with the stage's model, with how many it drops."""
    room, slots = problem.room[index], problem.slots[index]
    if fits(problem, keep, room, slots):
        return [(keep, 0)]
    base = [demand] if demand is not None else []
    others = sorted(keep - set(base))
    sizes, scope = problem.sizes, problem.scope
    base_size = sum(sizes[key] for key in base)
    largest = sorted((sizes[key] for key in others), reverse=True)
    free = dict(slots)  # per cap, how many of ``others`` may stay beside the stage's model
    for key in base:
        if (cap := scope[key]) is not None:
            free[cap] -= 1
    members: dict[str | None, int] = {}
    for key in others:
        members[scope[key]] = members.get(scope[key], 0) + 1
    # The most of ``others`` any kept set can hold: all of the uncapped, and each cap's free slots. A kept set
    # with fewer has, under some cap or none, both a model left out and a slot for it.
    most = sum(n if cap is None else min(n, max(free[cap], 0)) for cap, n in members.items())
    options: list[tuple[frozenset[str], int]] = []
    for count in range(most + 1):
        if count < most and base_size + sum(largest[: count + 1]) <= room:
            continue  # such a set also has room for even the largest model left out: none of this size is maximal
        for combo in combinations(others, count):
            total = base_size + sum(sizes[key] for key in combo)
            if total > room:
                continue
            used: dict[str, int] = {}
            for key in combo:
                if (cap := scope[key]) is not None:
                    used[cap] = used.get(cap, 0) + 1
            if any(n > free[cap] for cap, n in used.items()):
                continue
            # Maximal: no model left out could have stayed, for lack of bytes or of a slot under its cap.
            if all(
                total + sizes[key] > room or ((cap := scope[key]) is not None and used.get(cap, 0) >= free[cap])
                for key in others
                if key not in combo
            ):
                options.append((frozenset([*base, *combo]), len(others) - count))
    return options


def _in_order(keys: frozenset[str], rank: Rank, index: int) -> list[str]:
    return sorted(keys, key=lambda key: rank(key, index, {}))


def _ranked_sets(
    problem: Problem, keep: frozenset[str], demand: str | None, index: int, orders: Sequence[Sequence[str]]
) -> list[tuple[frozenset[str], int]]:
    """The kept sets the look-ahead orders choose: evict in order until it fits, then put back what still fits.

    ``orders``: the stage's models in each look-ahead order. The same as ``shed`` then putting back the evicted
    models, last evicted first, that still fit; with the bytes and the per-cap counts kept as running totals."""
    room, slots = problem.room[index], problem.slots[index]
    sizes, scope = problem.sizes, problem.scope
    whole = sum(sizes[key] for key in keep)
    held: dict[str, int] = {}
    for key in keep:
        if (cap := scope[key]) is not None:
            held[cap] = held.get(cap, 0) + 1
    full = sum(count > slots[cap] for cap, count in held.items())  # the caps over their slots
    if whole <= room and not full:  # ``fits``, from the totals
        return [(keep, 0)]
    options: dict[frozenset[str], int] = {}
    for order in orders:
        total, counts, over = whole, dict(held), full
        evicted: list[str] = []
        for key in order:
            if key not in keep or key == demand:
                continue
            if total <= room and not over:
                break
            cap = scope[key]
            if total > room or (cap is not None and cap in slots and counts.get(cap, 0) > slots[cap]):
                evicted.append(key)
                total -= sizes[key]
                if cap is not None:
                    counts[cap] -= 1
                    over -= counts[cap] == slots[cap]  # this cap is no longer over
                    if not counts[cap]:
                        del counts[cap]
        kept = set(keep).difference(evicted)
        for victim in reversed(evicted):
            cap = scope[victim]
            if total + sizes[victim] > room or (cap is not None and counts.get(cap, 0) + 1 > slots[cap]):
                continue
            kept.add(victim)
            total += sizes[victim]
            if cap is not None:
                counts[cap] = counts.get(cap, 0) + 1
        options[frozenset(kept)] = len(keep) - len(kept)
    return list(options.items())


def _realise(problem: Problem, live_sets: Sequence[frozenset[str]]) -> Run:
    """Turn the optimal sets of still-needed models into a plan: models never needed again stay while they fit."""
    run = Run()
    current = list(problem.initial)
    last_use: dict[str, float] = {key: position - len(current) for position, key in enumerate(current)}
    for index, demand in enumerate(problem.demands):
        live, target = live_keys(problem, index), live_sets[index]
        upcoming = problem.next_use[index]
        dropped = sorted((key for key in current if key in live and key not in target), key=lambda k: -upcoming[k])
        dead = sorted((key for key in current if key not in live), key=lambda key: last_use[key])
        # Never needed again: they stay while they fit, and the least recently used leaves first.
        evicted = shed(problem, [*target, *dead], list(dead), problem.room[index], problem.slots[index])
        dead = [key for key in dead if key not in evicted]
        run.evicted.append(tuple(evicted + dropped))
        run.expired.append(())
        run.loaded.append(demand is not None and demand not in current)
        current = [key for key in current if key in target or key in dead]
        if demand is not None and demand not in current:
            current.append(demand)
        if demand is not None:
            last_use[demand] = index
        run.resident.append(frozenset(current))
    run.final_evict = final_evict(problem, current, last_use)
    return run
