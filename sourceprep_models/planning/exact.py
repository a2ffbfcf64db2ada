"""The exact search of ``lookahead``, made to scale with the number of stages.

It finds the same shortest path over resident sets as the plain search (``search.reference_run``, which the tests
hold it to, plan for plan), with four changes that only skip work:

1. **Bitmasks and one integer cost.** A set of the (at most ``search._EXACT_MODELS``) demanded models is an int and
   its bytes, whether it fits a room and which models could join it are looked up in tables filled as the search
   meets each set (never all 2^models up front); a path's cost (bytes, loads, unloads) is one int,
   ``(bytes * W + loads) * W + unloads``, whose integer order is the lexicographic order while loads and unloads
   stay below ``W`` (2^32).
2. **Transitions computed once.** What a stage may keep depends only on what is kept coming in, the stage's model
   and the room beside its pins, so the maximal kept sets are cached on those: a pipeline that repeats asks the
   same few questions again and again. A stage that changes nothing (in every state its model is resident and
   nothing has to leave) stores no layer.
3. **Dominated states dropped.** Take two resident sets S and S' after the same stage. From S', a plan can load
   at most the bytes of S - S' more than the best plan from S: drop S' - S, then follow S's plan, holding what
   it holds minus what S' lacked, and load each model of S - S' at its next use instead of finding it resident
   (holding a subset of what S's plan holds, it fits wherever that plan fits). The search from S' loads the
   fewest bytes of any plan (``lookahead``'s guarantee), so when bytes(S') + size(S - S') < bytes(S), no plan
   through S loads the fewest bytes and S is dropped. A state that lies on some optimal plan is never dropped,
   nor is any of its cheapest predecessors, so the plan found is the plain search's, ties included. Checking a
   state against the few cheapest survivors only finds fewer dominated states, never a wrong one.
4. **Repeated blocks skipped.** A block of stages repeated r times (a group with ``repeat``, or any run of equal
   stage sequences: the same models, the same room and the same models still needed later) turns the frontier
   before a repetition (each state's cost, in iteration order) into the frontier after it. Adding one constant c
   to every cost before adds c to every cost after and changes nothing else: each step compares costs with
   costs (sums, minima, ties by the sets' order, the pruning's bytes differences; the encoding of rule 1 adds
   componentwise), so the layers a repetition stores depend only on the *normalised* frontier, each cost minus
   the cheapest. Hence, once the normalised frontier before repetition j equals the one before an earlier
   repetition i, repetitions j, j+1, ... repeat i, i+1, ... exactly, costs rising by the same amount every j - i
   repetitions: the optimal plan over the block has reached its fixed point (a cycle of j - i repetitions, one
   when a single way of running the block is cheapest for good). The remaining whole cycles are skipped: their
   layers are the stored cycle's, shared, not copied. The fixed point is reached as soon as the normalised
   frontier stops changing, which it must once the costs stay within a bounded distance of the cheapest (then
   only finitely many normalised frontiers exist). Rule 3 bounds the bytes: the cheapest state is always among
   those checked, so a survivor's bytes exceed the cheapest's by at most one resident set. Loads and unloads
   are unbounded only if two states load the same bytes per repetition, forever, in different numbers of loads
   or unloads; then no frontier repeats and the block is run through, as the plain search does, with the same
   result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter

from sourceprep_models.planning.problem import Problem

_W = 1 << 32  # cost = (bytes * _W + loads) * _W + unloads
_BYTES = _W * _W
_PRUNE_AGAINST = 8  # a state is checked against this many of the cheapest survivors (more prunes little more)
_MIN_REPEATS = 2  # a block is skipped ahead only when it repeats at least this often
_MAX_BLOCK = 256  # the longest block looked for (stages)
_CYCLE_WINDOW = 64  # the repetitions remembered: a fixed point is a cycle of at most this many

Layer = dict[int, int] | None  # each state's predecessor; None: every state is its own (nothing changed)


class _Tables:
    """The problem in bitmasks: one bit per demanded model (in key order, so that the tie order is the plain
    search's), each stage's signature, and the cached transitions."""

    def __init__(self, problem: Problem, keys: Sequence[str]) -> None:
        self.keys = keys
        bit = {key: 1 << index for index, key in enumerate(keys)}
        # Each table below is filled as the search asks, mask by mask: the masks a search meets are a small
        # part of all 2^models, so the number of models costs nothing up front.
        self._sizes = [problem.sizes[key] for key in keys]
        self.known_sizes: dict[int, int] = {0: 0}
        self._order: dict[int, tuple[int, ...]] = {}
        scopes = sorted({scope for key in keys if (scope := problem.scope[key]) is not None})
        self.scope_masks = [sum(bit[key] for key in keys if problem.scope[key] == scope) for scope in scopes]
        rooms: dict[tuple[int, tuple[int, ...]], int] = {}
        self.rooms: list[tuple[int, tuple[int, ...]]] = []
        self.signatures: list[tuple[int, int, int]] = []  # per stage: (demand bit, still-needed mask, room id)
        live = 0
        lives = []
        for demand in reversed(problem.demands):
            live |= bit[demand] if demand is not None else 0
            lives.append(live)
        lives.reverse()
        for index, demand in enumerate(problem.demands):
            slots = problem.slots[index]
            room = (problem.room[index], tuple(slots[scope] for scope in scopes))  # every cap has its slots
            if room not in rooms:
                rooms[room] = len(self.rooms)
                self.rooms.append(room)
            room_id = rooms[room]
            self.signatures.append((bit[demand] if demand is not None else 0, lives[index], room_id))
        self.load = [problem.sizes[key] * _BYTES + _W for key in keys]  # one load's cost, per bit
        self._fits: list[dict[int, bool]] = [{} for _ in self.rooms]
        self._grow: list[dict[int, int]] = [{} for _ in self.rooms]
        self._options: dict[tuple[int, int], dict[int, tuple[tuple[int, int], ...]]] = {}

    def size(self, mask: int) -> int:
        """The bytes of the models of ``mask``."""
        found = self.known_sizes.get(mask)
        if found is None:
            low = mask & -mask
            found = self.known_sizes[mask] = self.size(mask ^ low) + self._sizes[low.bit_length() - 1]
        return found

    def order(self, mask: int) -> tuple[int, ...]:
        """The plain search's tie order: a mask's bit positions in order (its sorted keys), compared as tuples."""
        found = self._order.get(mask)
        if found is None:
            found = self._order[mask] = tuple(position for position in range(len(self.keys)) if mask >> position & 1)
        return found

    def fits(self, mask: int, room_id: int) -> bool:
        """Whether ``mask`` fits this room: its bytes and, under every cap, its slots."""
        known = self._fits[room_id]
        found = known.get(mask)
        if found is None:
            room, slots = self.rooms[room_id]
            found = known[mask] = self.size(mask) <= room and all(
                (mask & scope).bit_count() <= free for scope, free in zip(self.scope_masks, slots, strict=True)
            )
        return found

    def grow(self, mask: int, room_id: int) -> int:
        """The models that could each still join ``mask`` (one at a time) in this room."""
        known = self._grow[room_id]
        found = known.get(mask)
        if found is None:
            found = 0
            for position in range(len(self.keys)):
                one = 1 << position
                if not mask & one and self.fits(mask | one, room_id):
                    found |= one
            known[mask] = found
        return found

    def options(self, demand: int, room_id: int) -> dict[int, tuple[tuple[int, int], ...]]:
        """The cache of ``maximal`` for one stage model and room, by what is kept coming in."""
        return self._options.setdefault((demand, room_id), {})

    def maximal(self, keep: int, demand: int, room_id: int) -> tuple[tuple[int, int], ...]:
        """Every maximal subset of ``keep`` that holds the stage's model and fits, with how many it drops."""
        if self.fits(keep, room_id):
            return ((keep, 0),)
        others = keep & ~demand
        found = []
        subset = others
        fits, grows = self._fits[room_id], self._grow[room_id]  # looked up inline: this loop is the hot one
        while True:  # every subset of ``others``, largest first; maximal: none of the others left out could join
            kept = subset | demand
            fit = fits.get(kept)
            if fit is None:
                fit = self.fits(kept, room_id)
            grow = grows.get(kept) if fit else 0
            if grow is None:
                grow = self.grow(kept, room_id)
            if fit and not grow & others & ~subset:
                found.append((kept, (others & ~subset).bit_count()))
            if not subset:
                break
            subset = (subset - 1) & others
        return tuple(found)


def exact_sets(problem: Problem, most_states: int) -> list[frozenset[str]] | None:
    """The optimal resident sets of still-needed models, stage by stage; None once a stage has more than
    ``most_states`` states (the caller bounds the number of models: a kept set's transitions try each of its
    subsets)."""
    keys = sorted({demand for demand in problem.demands if demand is not None})
    tables = _Tables(problem, keys)
    bit = {key: 1 << index for index, key in enumerate(keys)}
    first_live = tables.signatures[0][1] if tables.signatures else 0
    start = sum(bit[key] for key in problem.initial if key in bit) & first_live
    frontier: dict[int, int] = {start: 0}
    layers: list[Layer] = []
    count = len(tables.signatures)
    index = 0
    for start_at, period, repeats in _blocks(tables.signatures):
        while index < start_at:
            frontier = _step(tables, index, frontier, layers)
            if len(frontier) > most_states:
                return None
            index += 1
        seen: dict[tuple[tuple[int, int], ...], tuple[int, int]] = {}  # normalised frontier -> (repetition, base)
        done = 0
        while done < repeats:
            base = min(frontier.values())
            shape = tuple((state, cost - base) for state, cost in frontier.items())  # in order: ties follow it
            if shape in seen:
                then, then_base = seen[shape]
                cycle = done - then
                skipped = (repeats - done) // cycle
                cycle_layers = layers[len(layers) - cycle * period :]
                layers += cycle_layers * skipped
                shift = (base - then_base) * skipped
                frontier = {state: cost + shift for state, cost in frontier.items()}
                done += skipped * cycle
                index += skipped * cycle * period
                seen.clear()
                continue
            seen[shape] = (done, base)
            if len(seen) > _CYCLE_WINDOW:
                del seen[next(iter(seen))]
            for _ in range(period):
                frontier = _step(tables, index, frontier, layers)
                if len(frontier) > most_states:
                    return None
                index += 1
            done += 1
    while index < count:
        frontier = _step(tables, index, frontier, layers)
        if len(frontier) > most_states:
            return None
        index += 1
    if not count:
        return []
    best = min(frontier, key=lambda state: (frontier[state], tables.order(state)))
    chosen = [best]
    for layer in reversed(layers[1:]):
        chosen.append(chosen[-1] if layer is None else layer[chosen[-1]])
    chosen.reverse()
    return [frozenset(key for position, key in enumerate(keys) if mask >> position & 1) for mask in chosen]


def _step(tables: _Tables, index: int, frontier: dict[int, int], layers: list[Layer]) -> dict[int, int]:
    """One stage of the shortest path: the next frontier; its layer appended to ``layers``.

    Of two equal paths the one from the state first in the plain search's order (sorted keys) wins, as there.
    """
    demand, live, room_id = tables.signatures[index]
    load = tables.load[demand.bit_length() - 1] if demand else 0
    options = tables.options(demand, room_id)
    order = tables.order
    costs: dict[int, int] = {}
    previous: dict[int, int] = {}
    for state, cost in frontier.items():
        keep = (state & live) | demand
        if not state & demand:
            cost += load
        found = options.get(keep)
        if found is None:
            found = options[keep] = tables.maximal(keep, demand, room_id)
        for kept, dropped in found:
            total = cost + dropped
            old = costs.get(kept)
            if old is None or total < old or (total == old and order(state) < order(previous[kept])):
                costs[kept] = total
                previous[kept] = state
    if costs == frontier:  # every state its own successor at no cost: every kept set holds the stage's model,
        layers.append(None)  # so none was loaded, and none was dropped, since a set that fits nowhere is in neither
        return frontier
    if len(costs) > 1:
        costs = _prune(tables.size, tables.known_sizes, costs)
    layers.append(previous)
    return costs


def _prune(sizes: Callable[[int], int], known: dict[int, int], costs: dict[int, int]) -> dict[int, int]:
    """The states no cheaper one dominates (rule 3 of the module docstring), cheapest first. ``sizes``: a mask's
    bytes; ``known``: the ones already computed."""
    ordered = sorted(costs.items(), key=itemgetter(1))
    least = ordered[0][1] // _BYTES  # the fewest bytes: no state with as few is dominated
    kept: list[tuple[int, int]] = []  # (state, bytes) of the cheapest survivors
    out: dict[int, int] = {}
    for state, cost in ordered:
        paid = cost // _BYTES
        if paid > least:
            for survivor, other in kept:
                extra = state & ~survivor
                if other + (known[extra] if extra in known else sizes(extra)) < paid:
                    break
            else:
                out[state] = cost
                if len(kept) < _PRUNE_AGAINST:
                    kept.append((state, paid))
        else:
            out[state] = cost
            if len(kept) < _PRUNE_AGAINST:
                kept.append((state, paid))
    return out


def _blocks(signatures: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The runs of a repeated block: (first stage, block length, repetitions), in order, not overlapping.

    At each stage, the block that covers the most stages by repeating from there (at least ``_MIN_REPEATS``
    times) is taken; stages in no such run are left out.
    """
    found: list[tuple[int, int, int]] = []
    count = len(signatures)
    following = [count] * count  # the next stage with the same signature
    last: dict[tuple[int, int, int], int] = {}
    for index in range(count - 1, -1, -1):
        following[index] = last.get(signatures[index], count)
        last[signatures[index]] = index
    index = 0
    while index < count:
        best = (0, 0)  # (stages covered, block length)
        longest = min(_MAX_BLOCK, (count - index) // _MIN_REPEATS)
        other = following[index]
        while other - index <= longest:
            length = other - index
            other = following[other]
            if signatures[index + length - 1] != signatures[index + 2 * length - 1]:
                continue  # the cheap test first: most candidates fail it
            block = signatures[index : index + length]
            repeats = 1
            while signatures[index + repeats * length : index + (repeats + 1) * length] == block:
                repeats += 1
            if repeats >= _MIN_REPEATS and repeats * length > best[0]:
                best = (repeats * length, length)
        if best[0]:
            found.append((index, best[1], best[0] // best[1]))
            index += best[0]
        else:
            index += 1
    return found
