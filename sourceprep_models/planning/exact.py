"""The exact search of ``lookahead``, made to scale with the number of stages.

It finds the same shortest path over resident sets as the plain search (``search.reference_run``, which the tests
hold it to, plan for plan), with four changes that only skip work:

1. **Bitmasks and one integer cost.** A set of the (at most ``search._EXACT_MODELS``) demanded models is an int and
   its bytes, its place in the plain search's tie order, whether it fits a room and which models could join it
   are looked up in tables: bytes and places are lists made up front up to ``_EAGER_MODELS`` models, else filled
   as the search meets each set, like the rest (the masks a search meets are a small part of all 2^models). A
   path's cost (bytes, loads, unloads) is one int, ``(bytes * W + loads) * W + unloads``, whose integer order is
   the lexicographic order while loads and unloads stay below ``W`` (2^32).
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
from functools import partial
from operator import itemgetter

from sourceprep_models.planning.problem import Problem

_W = 1 << 32  # cost = (bytes * _W + loads) * _W + unloads
_BYTES = _W * _W
_BYTES_SHIFT = 64  # cost >> _BYTES_SHIFT: its bytes (a shift: a big int division by a power of two is not one)
_PRUNE_AGAINST = 8  # a state is checked against this many of the cheapest survivors (more prunes little more)
_MIN_REPEATS = 2  # a block is skipped ahead only when it repeats at least this often
_MAX_BLOCK = 256  # the longest block looked for (stages)
_CYCLE_WINDOW = 64  # the repetitions remembered: a fixed point is a cycle of at most this many
# Up to this many models, a mask's bytes and tie place are lists made up front (4,096 entries at 12, about a
# millisecond): a list index is about three times as fast as a dict lookup, which the hot loops of _step and _prune
# feel (10-20 % at 12 models). Above it, 2^models entries would cost more up front than most searches spend.
_EAGER_MODELS = 12

Layer = dict[int, int] | None  # each state's predecessor; None: every state is its own (nothing changed)


class _Lazy(dict[int, int]):
    """A table by mask, filled as it is read."""

    def __init__(self, fill: Callable[[int], int]) -> None:
        super().__init__()
        self._fill = fill

    def __missing__(self, mask: int) -> int:
        value = self[mask] = self._fill(mask)
        return value


Table = list[int] | _Lazy  # a value per mask: made up front or filled as read


def _size_table(sizes: Sequence[int]) -> Table:
    """Each mask's bytes."""
    if len(sizes) <= _EAGER_MODELS:
        made = [0]
        for size in sizes:  # the masks holding this model follow the ones below it, each plus its size
            made += [other + size for other in made]
        return made
    lazy = _Lazy(lambda mask: lazy[mask & (mask - 1)] + sizes[(mask & -mask).bit_length() - 1] if mask else 0)
    return lazy


def _rank_table(count: int) -> Table:
    """Each mask's place in the plain search's tie order: its sorted keys (bit positions) compared as tuples, a
    preorder walk of the prefix tree. A mask ``rest`` plus a last position ``top`` comes one place after ``rest``
    (where ``rest``'s first child would be) plus the subtree of each position after ``rest``'s last and before
    ``top`` (2^(count - 1 - position) masks each): 2^(count - bit_length(rest)) - 2^(count - top) places."""
    if count <= _EAGER_MODELS:
        made = [0]
        for top in range(count):
            made += [
                made[rest] + 1 + (1 << (count - rest.bit_length())) - (1 << (count - top)) for rest in range(1 << top)
            ]
        return made

    def fill(mask: int) -> int:
        if not mask:
            return 0
        top = mask.bit_length() - 1
        rest = mask ^ 1 << top
        return lazy[rest] + 1 + (1 << (count - rest.bit_length())) - (1 << (count - top))

    lazy = _Lazy(fill)
    return lazy


class _Tables:
    """The problem in bitmasks: one bit per demanded model (in key order, so that the tie order is the plain
    search's), each stage's signature, and the cached transitions."""

    def __init__(self, problem: Problem, keys: Sequence[str]) -> None:
        self.keys = keys
        bit = {key: 1 << index for index, key in enumerate(keys)}
        self.sizes = _size_table([problem.sizes[key] for key in keys])
        self.ranks = _rank_table(len(keys))
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
        # Per room, whether a mask fits (1 or 0) and which models could each still join it (one at a time),
        # filled as read: what a stage may keep is asked of few masks, and rooms are many when pins come and go.
        self.fits: list[_Lazy] = []
        self.grow: list[_Lazy] = []
        for room_bytes, room_slots in self.rooms:
            self.fits.append(_Lazy(partial(self._fits, room_bytes, room_slots)))
            self.grow.append(_Lazy(partial(self._grow, self.fits[-1])))
        self._options: dict[tuple[int, int], dict[int, tuple[tuple[int, int], ...]]] = {}

    def _fits(self, room: int, slots: tuple[int, ...], mask: int) -> int:
        """Whether ``mask`` fits a room: its bytes and, under every cap, its slots."""
        return int(
            self.sizes[mask] <= room
            and all((mask & scope).bit_count() <= free for scope, free in zip(self.scope_masks, slots, strict=True))
        )

    def _grow(self, fits: _Lazy, mask: int) -> int:
        """The models that could each still join ``mask`` (one at a time) in a room, given its ``fits``."""
        found = 0
        for position in range(len(self.keys)):
            one = 1 << position
            if not mask & one and fits[mask | one]:
                found |= one
        return found

    def options(self, demand: int, room_id: int) -> dict[int, tuple[tuple[int, int], ...]]:
        """The cache of ``maximal`` for one stage model and room, by what is kept coming in."""
        return self._options.setdefault((demand, room_id), {})

    def maximal(self, keep: int, demand: int, room_id: int) -> tuple[tuple[int, int], ...]:
        """Every maximal subset of ``keep`` that holds the stage's model and fits, with how many it drops."""
        fits, grow = self.fits[room_id], self.grow[room_id]
        if fits[keep]:
            return ((keep, 0),)
        others = keep & ~demand
        found = []
        subset = others
        while True:  # every subset of ``others``, largest first; maximal: none of the others left out could join
            kept = subset | demand
            if fits[kept] and not grow[kept] & others & ~subset:
                found.append((kept, (others & ~subset).bit_count()))
            if not subset:
                break
            subset = (subset - 1) & others
        return tuple(found)


class MaskSets:
    """The maximal kept sets of ``_Tables``, asked and answered as sets of keys (for the beam)."""

    def __init__(self, problem: Problem) -> None:
        keys = sorted({demand for demand in problem.demands if demand is not None})
        self._tables = _Tables(problem, keys)
        self._bit = {key: 1 << index for index, key in enumerate(keys)}
        self._sets: dict[int, frozenset[str]] = {}

    def maximal(self, keep: frozenset[str], index: int) -> list[tuple[frozenset[str], int]]:
        """Every maximal subset of ``keep`` that holds stage ``index``'s model and fits, with how many it drops."""
        tables, bit = self._tables, self._bit
        demand, _, room_id = tables.signatures[index]
        options = tables.options(demand, room_id)
        mask = sum(bit[key] for key in keep)
        found = options.get(mask)
        if found is None:
            found = options[mask] = tables.maximal(mask, demand, room_id)
        return [(self._set(kept), dropped) for kept, dropped in found]

    def _set(self, mask: int) -> frozenset[str]:
        found = self._sets.get(mask)
        if found is None:
            keys = self._tables.keys
            found = self._sets[mask] = frozenset(key for position, key in enumerate(keys) if mask >> position & 1)
        return found


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
    ranks = tables.ranks
    best = min(frontier, key=lambda state: (frontier[state], ranks[state]))
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
    ranks = tables.ranks
    costs: dict[int, int] = {}
    previous: dict[int, int] = {}
    known, cost_of = options.get, costs.get  # bound once: this loop is most of the planner's time
    for state, cost in frontier.items():
        keep = (state & live) | demand
        if not state & demand:
            cost += load
        found = known(keep)
        if found is None:
            found = options[keep] = tables.maximal(keep, demand, room_id)
        for kept, dropped in found:
            total = cost + dropped
            old = cost_of(kept)
            if old is None or total < old:
                costs[kept] = total
                previous[kept] = state
            elif total == old and ranks[state] < ranks[previous[kept]]:
                previous[kept] = state
    if costs == frontier:  # every state its own successor at no cost: every kept set holds the stage's model,
        layers.append(None)  # so none was loaded, and none was dropped, since a set that fits nowhere is in neither
        return frontier
    if len(costs) > 1:
        costs = _prune(tables.sizes, costs)
    layers.append(previous)
    return costs


def _prune(sizes: Table, costs: dict[int, int]) -> dict[int, int]:
    """The states no cheaper one dominates (rule 3 of the module docstring), cheapest first."""
    ordered = sorted(costs.items(), key=itemgetter(1))
    kept: list[tuple[int, int]] = []  # (the models it lacks, bytes) of the cheapest survivors, in cost order
    out: dict[int, int] = {}
    for state, cost in ordered:
        paid = cost >> _BYTES_SHIFT
        dominated = False
        for lacks, other in kept:
            if other >= paid:  # neither this survivor nor a later one (none loaded fewer bytes) dominates it
                break
            if other + sizes[state & lacks] < paid:
                dominated = True
                break
        if not dominated:
            out[state] = cost
            if len(kept) < _PRUNE_AGAINST:
                kept.append((~state, paid))
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
