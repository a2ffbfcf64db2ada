"""Plan a whole pipeline's model residency at once, with lookahead. Pure: plain records in, a plan out.

``planner.plan_load`` decides one load from the present alone. A pipeline is known in advance (the stages and
their models, in run order), so this module plans every stage's loads and evictions together, and also plays
the baseline strategies over the same data so a benchmark can compare them:

- ``lookahead`` (ours): when something must leave, evict what is needed furthest in the future, weighing
  reload cost (bytes); keep a model resident across stages that do not use it while memory allows;
- ``lru``: evict the least recently used model until the new one fits (llama.cpp router ``--models-max``,
  servers.md §2.3; oMLX's EnginePool, servers.md §5);
- ``ollama``: Ollama's own scheduler (ollama.md §4): at most ``OLLAMA_MAX_LOADED_MODELS`` models (default 3 on
  one GPU or Apple Silicon, §4.3), victims taken one at a time in order of shortest keep_alive, ties by blob path
  (here: the key), recency playing no part (§4.5); a model also leaves on its own when its keep_alive runs out
  after its last use (§3.3), which only ``durations_s`` lets the plan see (without them only keep_alive 0,
  "unload when idle", expires);
- ``unload-all``: the first seed's default: before every stage, unload every non-pinned model but the stage's
  own, then load it; so each stage is a load unless the previous stage used the same model.

Rules every strategy obeys: the stage's model is resident while the stage runs; the bytes resident never exceed
the budget and the count never exceeds ``max_models``; models leave only when room is needed (lazy), except under
``unload-all``. Pins are common to all strategies, decided by policy before any strategy runs: a pin leaves only
when the stage's model cannot fit beside the pins even with every unpinned model gone, and only if
``allow_evict_pinned`` (the fewest pins, then the fewest bytes, as in ``planner``); it is reloaded as soon as it
fits beside the next stage's model again (``restore_after``), or after the last stage. A model larger than the
budget alone, or one that cannot fit beside pins that may not leave, refuses the whole pipeline at the FIRST
such stage, before anything runs (``--dry-run`` exit 6).

Between two stages the order is: this stage's ``evict_after`` are unloaded and its ``restore_after`` pins come
back (as soon as the stage's work is done), then the next stage's ``expired`` leave (server-side timers), its
``evict`` are unloaded and its model loads. Bytes resident stay within the budget after every step.

Objective of ``lookahead``: the fewest bytes loaded (load time grows with the bytes read from disk or page
cache), then the fewest loads (each has a fixed start-up cost), then the fewest unloads. Pin restores are the
same for every plan, so they never change the choice.

How, and the bound:

- Exact while the pipeline uses at most ``_EXACT_MODELS`` (12) distinct unpinned models and no stage has more
  than ``_EXACT_STATES`` (4096) candidate resident sets; real pipelines (up to 10 tasks, a handful of models,
  repeats expanded) stay far below. A shortest path over the set of resident models between stages, where a
  state keeps only models used again (a model never used again costs nothing to drop, so it stays resident
  while room allows and leaves first). Only demand loads and maximal kept sets are searched: loading early, or
  evicting more than the room needs, never lowers the cost (a plan that keeps a superset of another's models
  can mimic it and never loads more). Within the limit, over all plans that keep the pins as the policy says:
  **bytes loaded equal the optimum**, and **loads are at most the optimum number of loads x (largest model
  size / smallest model size)**, because loads x smallest <= bytes = optimal bytes <= bytes of the
  fewest-loads plan <= its loads x largest. With uniform sizes both are optimal (Belady).
- Beyond the limit: a beam search over the same graph (the ``_BEAM`` (128) cheapest states per stage; every
  maximal kept set while at most ``_BEAM_EXHAUSTIVE`` (6) models are resident, else the sets four look-ahead
  eviction orders choose: furthest next use (Belady), next use / size, next use x size, cheapest to reload),
  set against the lazy plays of those orders, LRU, Ollama's order (without its timers) and unload-all under the
  same pins and limits; the cheapest of all wins. So it is never worse in bytes than those plays, and it plays
  Belady's rule, optimal on uniform sizes while the pins stay put; with mixed sizes there is no constant bound,
  since offline caching with mixed sizes is NP-hard (Chrobak, Woeginger, Makino and Xu, "Caching is hard - even
  in the fault model", ESA 2010). Measured with the exact search off and only the orders' choices in the beam:
  at most 1.375 x the optimal bytes over 40,000 random pipelines of up to 5 models and 8 stages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any

from sourceprep_models.units import human_bytes

STRATEGIES = ("lookahead", "lru", "ollama", "unload-all")

OLLAMA_DEFAULT_KEEP_ALIVE_S = 300.0  # OLLAMA_KEEP_ALIVE default 5m (ollama.md §3.1)
OLLAMA_DEFAULT_MAX_LOADED = 3  # OLLAMA_MAX_LOADED_MODELS auto: 3 x GPUs, at least 3 (ollama.md §4.3)

# Above these, the exact search gives way to the beam and the greedy plays (see the module docstring).
_EXACT_MODELS = 12
_EXACT_STATES = 4096
_BEAM = 128  # states kept per stage by the search beyond the exact limit
_BEAM_EXHAUSTIVE = 6  # beyond the limit, every maximal kept set is still tried while this few models are resident
# Above this many pins, choosing which pins leave is greedy (largest first) instead of exhaustive.
_PIN_COVER_LIMIT = 16


@dataclass(frozen=True)
class PipelineModel:
    key: str  # identity: one resident instance per key
    name: str  # for messages
    size: int  # predicted resident bytes
    pinned: bool = False
    keep_alive_s: float | None = None  # only the "ollama" strategy uses it (None = Ollama's default 5 min)
    group: str = ""  # the server (endpoint) it loads on; one machine's budget spans its servers


@dataclass(frozen=True)
class StagePlan:
    index: int
    stage: str  # stage name (one entry per stage run)
    model: str  # key
    action: str  # "hit" (already resident) | "load"
    evict: tuple[str, ...] = ()  # keys unloaded before this stage's load, in order
    restore_after: tuple[str, ...] = ()  # evicted pins reloaded right after this stage (memory allows again)
    prefetch: str | None = None  # key of the next model this plan will load after this stage (warm it now)
    resident_after: tuple[str, ...] = ()  # keys resident while the stage runs (sorted)
    bytes_resident: int = 0  # their total predicted bytes (<= budget, always)
    expired: tuple[str, ...] = ()  # keys the server unloaded on its own before this stage (keep_alive ran out)
    bytes_loaded: int = 0  # this stage's load plus its restore_after
    evict_after: tuple[str, ...] = ()  # keys unloaded right after this stage, so its restore_after pins fit


@dataclass(frozen=True)
class PipelinePlan:
    strategy: str
    budget: int
    stages: tuple[StagePlan, ...]
    resident_end: tuple[str, ...] = ()  # keys resident once the pipeline is done (sorted)
    max_models: int | None = None  # the cap the plan obeyed (Ollama's default for "ollama")
    exact: bool = False  # proven optimal (lookahead within the exact-search limit)
    warnings: tuple[str, ...] = ()
    names: tuple[tuple[str, str], ...] = ()  # (key, name) for messages and to_dict

    @property
    def loads(self) -> int:
        """Stage loads plus pin restores."""
        return sum((stage.action == "load") + len(stage.restore_after) for stage in self.stages)

    @property
    def bytes_loaded(self) -> int:
        return sum(stage.bytes_loaded for stage in self.stages)

    @property
    def unloads(self) -> int:
        return sum(len(stage.evict) + len(stage.expired) + len(stage.evict_after) for stage in self.stages)

    def to_dict(self) -> dict[str, Any]:
        names = dict(self.names)

        def name(key: str | None) -> str | None:
            return None if key is None else names.get(key, key)

        def listed(keys: tuple[str, ...]) -> list[str]:
            return [names.get(key, key) for key in keys]

        return {
            "strategy": self.strategy,
            "budget": self.budget,
            "max_models": self.max_models,
            "loads": self.loads,
            "bytes_loaded": self.bytes_loaded,
            "unloads": self.unloads,
            "exact": self.exact,
            "stages": [
                {
                    "index": stage.index,
                    "stage": stage.stage,
                    "model": name(stage.model),
                    "action": stage.action,
                    "expired": listed(stage.expired),
                    "evict": listed(stage.evict),
                    "evict_after": listed(stage.evict_after),
                    "restore_after": listed(stage.restore_after),
                    "prefetch": name(stage.prefetch),
                    "resident": listed(stage.resident_after),
                    "bytes_resident": stage.bytes_resident,
                    "bytes_loaded": stage.bytes_loaded,
                }
                for stage in self.stages
            ],
            "resident_end": listed(self.resident_end),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class PipelineRefusal:
    """The pipeline cannot run under this budget and policy; nothing was touched."""

    stage_index: int
    stage: str
    reason: str  # one line naming the stage, the model, the sizes and the fix
    model: str = ""  # key of the stage's model
    blocking_pins: tuple[str, ...] = ()  # keys of the pins that would have to leave
    names: tuple[tuple[str, str], ...] = ()  # (key, name) for to_dict

    def to_dict(self) -> dict[str, Any]:
        names = dict(self.names)
        return {
            "refused": True,
            "stage_index": self.stage_index,
            "stage": self.stage,
            "model": names.get(self.model, self.model),
            "reason": self.reason,
            "blocking_pins": [names.get(pin, pin) for pin in self.blocking_pins],
        }


def plan_pipeline(
    stages: Sequence[tuple[str, str]],
    models: Mapping[str, PipelineModel],
    resident: Sequence[str],
    budget: int,
    *,
    strategy: str = "lookahead",
    allow_evict_pinned: bool = False,
    max_models: int | None = None,
    durations_s: Sequence[float] | None = None,
) -> PipelinePlan | PipelineRefusal:
    """Every stage's evictions and loads under ``strategy``, or the first stage that cannot run.

    ``stages`` are (stage name, model key) in run order, repeats already expanded; ``models`` holds every key
    used or initially resident; ``resident`` lists the keys resident before the first stage, least recently used
    first (LRU reads that order). ``max_models`` is a server's cap on loaded models (llama.cpp --models-max); for
    "ollama", None means Ollama's default cap. ``durations_s`` (one per stage, optional) lets "ollama" expire
    models whose keep_alive runs out; the other strategies ignore it.

    >>> m = {k: PipelineModel(k, k, s) for k, s in (("fast", 5), ("big", 30), ("code", 20))}
    >>> stages = [("a", "fast"), ("b", "big"), ("c", "fast"), ("d", "code"), ("e", "fast")]
    >>> [(p.loads, p.bytes_loaded) for p in (plan_pipeline(stages, m, ["big", "code"], 50, strategy=s)
    ...   for s in ("lookahead", "lru", "unload-all")) if isinstance(p, PipelinePlan)]
    [(2, 25), (3, 55), (5, 65)]
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if max_models is not None and max_models < 1:
        raise ValueError("max_models must be at least 1")
    for key in [key for _, key in stages] + list(resident):
        if key not in models:
            raise ValueError(f"model key {key!r} is used but missing from models")
    if durations_s is not None and (len(durations_s) != len(stages) or any(d < 0 for d in durations_s)):
        raise ValueError("durations_s needs one non-negative duration per stage")
    cap = max_models if max_models is not None or strategy != "ollama" else OLLAMA_DEFAULT_MAX_LOADED

    schedule = _pin_schedule(stages, models, resident, budget, cap, allow_evict_pinned)
    if isinstance(schedule, PipelineRefusal):
        involved = (schedule.model, *schedule.blocking_pins)
        return replace(schedule, names=tuple((key, models[key].name) for key in involved))
    problem = _problem(stages, models, resident, budget, cap, schedule, durations_s)

    exact = False
    if strategy == "lru":
        run = _lazy(problem, _lru_rank(problem))
    elif strategy == "ollama":
        run = _lazy(problem, _ollama_rank(problem), expiry=True)
    elif strategy == "unload-all":
        run = _lazy(problem, _lru_rank(problem), reset=True)
    else:
        found = _exact(problem)
        exact = found is not None
        run = found if found is not None else min(_greedy_candidates(problem), key=lambda r: _cost(problem, r))
    return _assemble(problem, schedule, run, strategy, exact)


# -- pins: common to every strategy ----------------------------------------------------------------------


@dataclass(frozen=True)
class _PinSchedule:
    pins: tuple[frozenset[str], ...]  # pins resident during each stage (the stage's own model included)
    initial: frozenset[str]  # pins resident before the first stage
    end: frozenset[str]  # pins resident once the pipeline is done
    warnings: tuple[str, ...]


def _pin_schedule(
    stages: Sequence[tuple[str, str]],
    models: Mapping[str, PipelineModel],
    resident: Sequence[str],
    budget: int,
    cap: int | None,
    allow_evict_pinned: bool,
) -> _PinSchedule | PipelineRefusal:
    """Which pins stay for each stage; the first stage that cannot run at all is the refusal."""
    wanted = list(dict.fromkeys(key for key in resident if models[key].pinned))  # pins stay wanted once loaded
    initial = here = frozenset(wanted)
    per_stage: list[frozenset[str]] = []
    warnings: list[str] = []
    total = len(stages)
    for index, (stage, key) in enumerate(stages):
        model = models[key]
        where = f"stage '{stage}' (run {index + 1} of {total})"
        if model.size > budget:
            return PipelineRefusal(
                index,
                stage,
                f"{where}: {model.name} needs about {human_bytes(model.size)} but the budget is "
                f"{human_bytes(budget)} even with nothing else loaded; use a smaller context or quantization, "
                "or raise memory.budget",
                model=key,
            )
        if model.pinned and key not in wanted:
            wanted.append(key)
        # Pins already out stay out until they fit again; the ones present leave only for lack of room.
        present = [models[pin] for pin in wanted if pin != key and pin in here]
        need_bytes = model.size + sum(pin.size for pin in present) - budget
        need_count = 0 if cap is None else 1 + len(present) - cap
        leaving = _pin_cover(present, need_bytes, need_count)  # none when all fit
        if leaving:
            pin_names = ", ".join(pin.name for pin in leaving)
            if not allow_evict_pinned:
                if need_bytes > 0:
                    reason = (
                        f"{where}: {model.name} ({human_bytes(model.size)}) fits in the {human_bytes(budget)} "
                        f"budget only if pinned {pin_names} ({human_bytes(sum(pin.size for pin in leaving))}) "
                        "leave(s); set memory.allow_evict_pinned = true to allow it (pins are reloaded "
                        "afterwards), or unpin with `sourceprep-models pin --remove`"
                    )
                else:
                    reason = (
                        f"{where}: the server keeps at most {cap} models loaded and pinned {pin_names} would have "
                        f"to leave for {model.name}; raise its --models-max, set memory.allow_evict_pinned = true, "
                        "or unpin with `sourceprep-models pin --remove`"
                    )
                return PipelineRefusal(index, stage, reason, model=key, blocking_pins=tuple(p.key for p in leaving))
            warnings.append(f"{where}: evicting pinned {pin_names} to fit {model.name}; reloaded when it fits again")
        gone = {pin.key for pin in leaving}
        staying = [pin for pin in present if pin.key not in gone] + ([model] if model.pinned else [])
        here = _restore(staying, [models[pin] for pin in wanted if pin != key and pin not in here], budget, cap, model)
        per_stage.append(here)
    end = _restore([models[pin] for pin in here], [models[pin] for pin in wanted if pin not in here], budget, cap)
    return _PinSchedule(tuple(per_stage), initial, end, tuple(warnings))


def _restore(
    staying: Sequence[PipelineModel],
    out: Sequence[PipelineModel],
    budget: int,
    cap: int | None,
    stage_model: PipelineModel | None = None,
) -> frozenset[str]:
    """The pins resident for a stage: those staying, plus every pin that was out and fits again (pin order)."""
    held = list(staying)
    beside = [] if stage_model is None or stage_model.pinned else [stage_model]
    for pin in out:
        trial = [*held, pin, *beside]
        if sum(m.size for m in trial) <= budget and (cap is None or len(trial) <= cap):
            held.append(pin)
    return frozenset(pin.key for pin in held)


def _pin_cover(pins: Sequence[PipelineModel], need_bytes: int, need_count: int) -> list[PipelineModel]:
    """The fewest pins freeing ``need_bytes`` and ``need_count`` slots; among those, the fewest bytes."""
    ordered = sorted(pins, key=lambda pin: (pin.size, pin.key))

    def enough(chosen: Sequence[PipelineModel]) -> bool:
        return sum(pin.size for pin in chosen) >= need_bytes and len(chosen) >= need_count

    if len(ordered) <= _PIN_COVER_LIMIT:
        for count in range(max(need_count, 0), len(ordered) + 1):
            fitting = [combo for combo in combinations(ordered, count) if enough(combo)]
            if fitting:
                return list(min(fitting, key=lambda combo: sum(pin.size for pin in combo)))
    chosen: list[PipelineModel] = []
    for pin in reversed(ordered):  # largest first reaches the target in the fewest evictions
        if enough(chosen):
            break
        chosen.append(pin)
    return chosen


# -- the unpinned part, which the strategies differ on ---------------------------------------------------


@dataclass(frozen=True)
class _Problem:
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


def _problem(
    stages: Sequence[tuple[str, str]],
    models: Mapping[str, PipelineModel],
    resident: Sequence[str],
    budget: int,
    cap: int | None,
    schedule: _PinSchedule,
    durations_s: Sequence[float] | None,
) -> _Problem:
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
    return _Problem(
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
class _Run:
    """What one strategy does with the unpinned models, stage by stage."""

    evicted: list[tuple[str, ...]] = field(default_factory=list)
    expired: list[tuple[str, ...]] = field(default_factory=list)
    loaded: list[bool] = field(default_factory=list)
    resident: list[frozenset[str]] = field(default_factory=list)
    final_evict: tuple[str, ...] = ()


def _fits(problem: _Problem, keys: Sequence[str] | frozenset[str], room: int, slots: int | None) -> bool:
    return sum(problem.sizes[key] for key in keys) <= room and (slots is None or len(keys) <= slots)


def _cost(problem: _Problem, run: _Run) -> tuple[int, int, int]:
    loads = [demand for demand, loaded in zip(problem.demands, run.loaded, strict=True) if loaded and demand]
    unloads = sum(map(len, run.evicted)) + sum(map(len, run.expired)) + len(run.final_evict)
    return sum(problem.sizes[key] for key in loads), len(loads), unloads


_Rank = Callable[[str, int, Mapping[str, float]], tuple[Any, ...]]  # (key, stage, last use) → eviction order


def _lazy(
    problem: _Problem,
    rank: _Rank,
    *,
    reset: bool = False,
    readd: bool = False,
    expiry: bool = False,
) -> _Run:
    """Play a server-style strategy: keep everything, evict in ``rank`` order only when the stage needs room.

    ``reset`` unloads every unpinned model but the stage's own first (unload-all); ``readd`` puts back any
    evicted model that still fits (the greedy lookahead's maximal keep); ``expiry`` lets a model leave on its own
    once its keep_alive has run since its last use ended (Ollama, ollama.md §3.3).
    """
    run = _Run()
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
        if not _fits(problem, wanted, room, slots):
            victims = sorted((key for key in current if key != demand), key=lambda k: rank(k, index, last_use))
            for victim in victims:
                evicted.append(victim)
                wanted.remove(victim)
                if _fits(problem, wanted, room, slots):
                    break
            if readd:
                for victim in reversed(list(evicted)):
                    if victim in victims and _fits(problem, [*wanted, victim], room, slots):
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
    run.final_evict = _final_evict(problem, current, last_use)
    return run


def _final_evict(problem: _Problem, current: Sequence[str], last_use: Mapping[str, float]) -> tuple[str, ...]:
    """After the last stage, make room for the pins coming back: least recently used first."""
    staying = sorted(current, key=lambda key: last_use.get(key, -math.inf))
    leaving: list[str] = []
    while staying and not _fits(problem, staying, problem.end_room, problem.end_slots):
        leaving.append(staying.pop(0))
    return tuple(leaving)


def _lru_rank(problem: _Problem) -> _Rank:
    return lambda key, index, last_use: (last_use.get(key, -math.inf), key)


def _ollama_rank(problem: _Problem) -> _Rank:
    # Shortest keep_alive first, forever last, ties by blob path (the key stands in); recency plays no part.
    return lambda key, index, last_use: (_keep_alive(problem.models[key]), key)


def _keep_alive(model: PipelineModel) -> float:
    if model.pinned:
        return math.inf
    if model.keep_alive_s is None:
        return OLLAMA_DEFAULT_KEEP_ALIVE_S
    return math.inf if model.keep_alive_s < 0 else model.keep_alive_s


def _next_use_ranks(problem: _Problem) -> list[_Rank]:
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


def _greedy_candidates(problem: _Problem) -> list[_Run]:
    beam = _search(problem, exact=False)
    assert beam is not None
    return [
        beam,
        *(_lazy(problem, rank, readd=True) for rank in _next_use_ranks(problem)),
        _lazy(problem, _lru_rank(problem)),
        _lazy(problem, _ollama_rank(problem)),
        _lazy(problem, _lru_rank(problem), reset=True),
    ]


def _exact(problem: _Problem) -> _Run | None:
    return _search(problem, exact=True)


def _search(problem: _Problem, *, exact: bool) -> _Run | None:
    """A shortest path over resident sets of models still needed.

    Exact: every maximal kept set, every state; None beyond the limit. Otherwise a beam: the ``_BEAM`` cheapest
    states per stage, and every maximal kept set while few models are resident, else the ones the look-ahead
    orders choose.
    """
    if exact and len({demand for demand in problem.demands if demand is not None}) > _EXACT_MODELS:
        return None
    ranks = _next_use_ranks(problem)
    Cost = tuple[int, int, int]
    State = frozenset[str]
    start: State = frozenset(key for key in problem.initial if key in _live(problem, 0))
    frontier: dict[State, tuple[Cost, State | None]] = {start: ((0, 0, 0), None)}
    layers: list[dict[State, tuple[Cost, State | None]]] = []
    for index, demand in enumerate(problem.demands):
        live = _live(problem, index)
        step: Cost = (problem.sizes[demand], 1, 0) if demand is not None else (0, 0, 0)
        layer: dict[State, tuple[Cost, State | None]] = {}
        for state in sorted(frontier, key=sorted):
            cost = frontier[state][0]
            keep = frozenset((state & live) | ({demand} if demand is not None else set()))
            paid = step if demand is not None and demand not in state else (0, 0, 0)
            if exact or len(keep) <= _BEAM_EXHAUSTIVE:
                options = _kept_sets(problem, keep, demand, index)
            else:
                options = _ranked_sets(problem, keep, demand, index, ranks)
            for kept, dropped in options:
                total = (cost[0] + paid[0], cost[1] + paid[1], cost[2] + dropped)
                if kept not in layer or total < layer[kept][0]:
                    layer[kept] = (total, state)
        if exact and len(layer) > _EXACT_STATES:
            return None
        if not exact and len(layer) > _BEAM:
            layer = dict(sorted(layer.items(), key=lambda item: (item[1][0], sorted(item[0])))[:_BEAM])
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


def _live(problem: _Problem, index: int) -> frozenset[str]:
    return frozenset(problem.next_use[index]) if index < len(problem.next_use) else frozenset()


def _kept_sets(
    problem: _Problem, keep: frozenset[str], demand: str | None, index: int
) -> list[tuple[frozenset[str], int]]:
    """Every maximal subset of ``keep`` that fits with the stage's model, with how many it drops."""
    room, slots = problem.room[index], problem.slots[index]
    if _fits(problem, keep, room, slots):
        return [(keep, 0)]
    base = [demand] if demand is not None else []
    others = sorted(keep - set(base))
    sizes = problem.sizes
    base_size = sum(sizes[key] for key in base)
    largest = sorted((sizes[key] for key in others), reverse=True)
    options: list[tuple[frozenset[str], int]] = []
    for count in range(len(others) + 1):
        held = len(base) + count
        if slots is not None and held > slots:
            break
        room_for_one_more = slots is None or held + 1 <= slots
        if count < len(others) and room_for_one_more and base_size + sum(largest[: count + 1]) <= room:
            continue  # even the largest such set leaves room for one more: none of this size is maximal
        for combo in combinations(others, count):
            total = base_size + sum(sizes[key] for key in combo)
            if total > room:
                continue
            # Maximal: not even the smallest model left out could have stayed (sizes are non-negative).
            left_out = [sizes[key] for key in others if key not in combo]
            if not left_out or (slots is not None and held + 1 > slots) or total + min(left_out) > room:
                options.append((frozenset([*base, *combo]), len(others) - count))
    return options


def _ranked_sets(
    problem: _Problem, keep: frozenset[str], demand: str | None, index: int, ranks: Sequence[_Rank]
) -> list[tuple[frozenset[str], int]]:
    """The kept sets the look-ahead orders choose: evict in order until it fits, then put back what still fits."""
    room, slots = problem.room[index], problem.slots[index]
    if _fits(problem, keep, room, slots):
        return [(keep, 0)]
    options: dict[frozenset[str], int] = {}
    for rank in ranks:
        kept = sorted(keep)
        victims = sorted((key for key in kept if key != demand), key=lambda k: rank(k, index, {}))
        evicted: list[str] = []
        for victim in victims:
            evicted.append(victim)
            kept.remove(victim)
            if _fits(problem, kept, room, slots):
                break
        for victim in reversed(evicted):
            if _fits(problem, [*kept, victim], room, slots):
                kept.append(victim)
        options[frozenset(kept)] = len(keep) - len(kept)
    return list(options.items())


def _realise(problem: _Problem, live_sets: Sequence[frozenset[str]]) -> _Run:
    """Turn the optimal sets of still-needed models into a plan: models never needed again stay while they fit."""
    run = _Run()
    current = list(problem.initial)
    last_use: dict[str, float] = {key: position - len(current) for position, key in enumerate(current)}
    for index, demand in enumerate(problem.demands):
        live, target = _live(problem, index), live_sets[index]
        upcoming = problem.next_use[index]
        dropped = sorted((key for key in current if key in live and key not in target), key=lambda k: -upcoming[k])
        dead = sorted((key for key in current if key not in live), key=lambda key: last_use[key])
        evicted: list[str] = []
        while dead and not _fits(problem, [*target, *dead], problem.room[index], problem.slots[index]):
            evicted.append(dead.pop(0))  # never needed again: the least recently used leaves first
        run.evicted.append(tuple(evicted + dropped))
        run.expired.append(())
        run.loaded.append(demand is not None and demand not in current)
        current = [key for key in current if key in target or key in dead]
        if demand is not None and demand not in current:
            current.append(demand)
        if demand is not None:
            last_use[demand] = index
        run.resident.append(frozenset(current))
    run.final_evict = _final_evict(problem, current, last_use)
    return run


# -- the plan ---------------------------------------------------------------------------------------------


def _evictions_for_restores(
    problem: _Problem,
    schedule: _PinSchedule,
    run: _Run,
    restores: Sequence[tuple[str, ...]],
    expired: list[list[str]],
    evict: list[list[str]],
) -> list[tuple[str, ...]]:
    """What must leave right after a stage so its pins can come back: the first of the next stage's departures.

    A runner restores pins as soon as the stage's work is done, while the stage's model is still resident, so
    the room they need is taken from the front of the next stage's expired and evict lists (moved, not copied).
    """
    count = len(problem.keys)
    after: list[tuple[str, ...]] = [()] * count
    for index in range(count):
        if index + 1 == count:
            after[index] = run.final_evict
            continue
        if not restores[index]:
            continue
        held = set(run.resident[index] | schedule.pins[index]) | set(restores[index])
        taken: list[str] = []
        for source in (expired[index + 1], evict[index + 1]):
            while source and not _fits(problem, list(held), problem.budget, problem.cap):
                taken.append(source.pop(0))
                held.discard(taken[-1])
        after[index] = tuple(taken)
    return after


def _assemble(problem: _Problem, schedule: _PinSchedule, run: _Run, strategy: str, exact: bool) -> PipelinePlan:
    sizes = problem.sizes
    count = len(problem.keys)
    actions: list[str] = []
    restores: list[tuple[str, ...]] = []
    pin_evictions: list[tuple[str, ...]] = []
    for index, key in enumerate(problem.keys):
        before = schedule.pins[index - 1] if index else schedule.initial
        pins = schedule.pins[index]
        pin_evictions.append(tuple(sorted(before - pins)))
        if problem.demands[index] is None:
            actions.append("hit" if key in before else "load")
        else:
            actions.append("load" if run.loaded[index] else "hit")
        after = schedule.pins[index + 1] - {problem.keys[index + 1]} if index + 1 < count else schedule.end
        restores.append(tuple(sorted(after - pins)))
    expired = [list(keys) for keys in run.expired]
    evict = [list(run.evicted[index] + pin_evictions[index]) for index in range(count)]
    evict_after = _evictions_for_restores(problem, schedule, run, restores, expired, evict)
    stages: list[StagePlan] = []
    for index, key in enumerate(problem.keys):
        later = next((problem.keys[j] for j in range(index + 1, count) if actions[j] == "load"), None)
        resident = tuple(sorted(run.resident[index] | schedule.pins[index]))
        loaded = (sizes[key] if actions[index] == "load" else 0) + sum(sizes[pin] for pin in restores[index])
        stages.append(
            StagePlan(
                index=index,
                stage=problem.stage_names[index],
                model=key,
                action=actions[index],
                evict=tuple(evict[index]),
                restore_after=restores[index],
                prefetch=later,
                resident_after=resident,
                bytes_resident=sum(sizes[k] for k in resident),
                expired=tuple(expired[index]),
                bytes_loaded=loaded,
                evict_after=evict_after[index],
            )
        )
    if stages:
        end = (run.resident[-1] - set(run.final_evict)) | schedule.end
    else:  # nothing runs, nothing moves
        end = frozenset(problem.initial) | schedule.initial
    return PipelinePlan(
        strategy=strategy,
        budget=problem.budget,
        stages=tuple(stages),
        resident_end=tuple(sorted(end)),
        max_models=problem.cap,
        exact=exact,
        warnings=schedule.warnings,
        names=tuple((key, model.name) for key, model in sorted(problem.models.items())),
    )
