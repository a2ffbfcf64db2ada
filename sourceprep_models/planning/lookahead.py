"""Plan a whole pipeline's model residency at once, with lookahead. Pure: plain records in, a plan out.

``load.plan_load`` decides one load from the present alone. A pipeline is known in advance (the stages and
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

Memory belongs to the machine, so one plan may cover every server (endpoint) of a machine: each model carries
its ``group``, the server's name (keys are unique across servers). The budget, the pins, the search and
``unload-all`` look at every group together. A cap on loaded models is one server's (see ``caps``): ``max_models``
is an int over every model (one server, as before groups) or a mapping group -> cap, under which only the models
of a named server count toward its cap, so a model needing that server's slot takes its victim there, while a
model needing memory takes it from any server. ``ollama`` gives every server without a cap Ollama's default.

Rules every strategy obeys: the stage's model is resident while the stage runs; the bytes resident never exceed
the budget and the models of a capped server (all models, under an int) never exceed its cap; models leave only
when room is needed (lazy), and only those whose leaving gives room that is missing (bytes, from any server, or
a slot of a server over its cap), except under ``unload-all``. Pins are common to all strategies, decided by
policy before any strategy runs: a pin leaves only when the stage's model cannot fit beside the pins even with
every unpinned model gone (in the budget, or under a cap that the pins of that server fill), and only if
``allow_evict_pinned`` (the fewest pins, then the fewest bytes, as in ``load``); it is reloaded as soon as it
fits beside the next stage's model again (``restore_after``), or after the last stage. A model larger than the
budget alone, or one that cannot fit beside pins that may not leave, refuses the whole pipeline at the FIRST
such stage, before anything runs (``--dry-run`` exit 6).

Between two stages the order is: this stage's ``evict_after`` are unloaded and its ``restore_after`` pins come
back (as soon as the stage's work is done), then the next stage's ``expired`` leave (server-side timers), its
``evict`` are unloaded and its model loads. Bytes resident stay within the budget, and models within their
caps, after every step.

Objective of ``lookahead``: the fewest bytes loaded (load time grows with the bytes read from disk or page
cache), then the fewest loads (each has a fixed start-up cost), then the fewest unloads. Pin restores are the
same for every plan, so they never change the choice.

How, and the bound:

- Exact while the pipeline uses at most ``_EXACT_MODELS`` (16) distinct unpinned models and no stage has more
  than ``_EXACT_STATES`` (4096) candidate resident sets; real pipelines (up to 10 tasks, a handful of models,
  repeats expanded) stay far below. A shortest path over the set of resident models between stages, where a
  state keeps only models used again (a model never used again costs nothing to drop, so it stays resident
  while room allows and leaves first). Only demand loads and maximal kept sets are searched: loading early, or
  evicting more than the room needs, never lowers the cost (a plan that keeps a superset of another's models
  can mimic it and never loads more). Within the limit, over all plans that keep the pins as the policy says:
  **bytes loaded equal the optimum**, and **loads are at most the optimum number of loads x (largest model
  size / smallest model size)**, because loads x smallest <= bytes = optimal bytes <= bytes of the
  fewest-loads plan <= its loads x largest. With uniform sizes both are optimal. All of this holds across
  servers too: caps per server, like the budget, only forbid sets, so keeping a superset still never costs more.
  The search runs in ``exact``, which finds the same plan as the plain search while skipping work: cached
  transitions, states dropped when another state provably loads fewer bytes from there on, and repeated blocks
  of stages (``repeat``) run only until the plan over a block reaches its fixed point. 10,000 stages over 12
  models plan in about a second on 2 cores (``benchmarks/planning.py``); the guarantee above is unchanged. The
  limit was 12 models while the search's tables held all 2^models sets up front; they are now filled as the
  search meets sets, so 13 to 16 models are planned exactly too (100 random stages over 14 models: tens of ms).
- Beyond the limit: a beam search over the same graph (the ``_BEAM`` (128) cheapest states per stage; every
  maximal kept set while at most ``_BEAM_EXHAUSTIVE`` (6) models are resident, else the sets four look-ahead
  eviction orders choose: furthest next use (Belady), next use / size, next use x size, cheapest to reload),
  set against the lazy plays of those orders, LRU, Ollama's order (without its timers) and unload-all under the
  same pins and limits; the cheapest of all wins. So it is never worse in bytes than those plays, and it plays
  Belady's rule, optimal on uniform sizes while the pins stay put and one cap counts every model (with a cap per
  server it is not: dropping a model that its full server must drop anyway before its next use can save a
  load, whoever is needed furthest); with mixed sizes there is no constant bound,
  since offline caching with mixed sizes is NP-hard (Chrobak, Woeginger, Makino and Xu, "Caching is hard - even
  in the fault model", ESA 2010). Measured with the exact search off and only the orders' choices in the beam:
  at most 1.375 x the optimal bytes over 40,000 random pipelines of up to 5 models and 8 stages on one server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from sourceprep_models.planning.caps import Caps, MaxModels
from sourceprep_models.planning.pins import PinSchedule, pin_schedule
from sourceprep_models.planning.problem import Problem, Run, build_problem, run_cost, shed
from sourceprep_models.planning.records import PipelineModel, PipelinePlan, PipelineRefusal, StagePlan
from sourceprep_models.planning.search import exact_run, greedy_candidates
from sourceprep_models.planning.strategies import OLLAMA_DEFAULT_KEEP_ALIVE_S, lru_rank, ollama_rank, play_lazy

__all__ = [
    "OLLAMA_DEFAULT_KEEP_ALIVE_S",
    "OLLAMA_DEFAULT_MAX_LOADED",
    "STRATEGIES",
    "PipelineModel",
    "PipelinePlan",
    "PipelineRefusal",
    "StagePlan",
    "plan_pipeline",
]

# The strategy names (``--strategy``); "ollama" plays Ollama's scheduler, it does not name a server here.
LOOKAHEAD, LRU, OLLAMA_SCHEDULER, UNLOAD_ALL = "lookahead", "lru", "ollama", "unload-all"
STRATEGIES = (LOOKAHEAD, LRU, OLLAMA_SCHEDULER, UNLOAD_ALL)

OLLAMA_DEFAULT_MAX_LOADED = 3  # OLLAMA_MAX_LOADED_MODELS auto: 3 x GPUs, at least 3 (ollama.md §4.3)


def plan_pipeline(
    stages: Sequence[tuple[str, str]],
    models: Mapping[str, PipelineModel],
    resident: Sequence[str],
    budget: int,
    *,
    strategy: str = "lookahead",
    allow_evict_pinned: bool = False,
    max_models: MaxModels = None,
    durations_s: Sequence[float] | None = None,
) -> PipelinePlan | PipelineRefusal:
    """Every stage's evictions and loads under ``strategy``, or the first stage that cannot run.

    ``stages`` are (stage name, model key) in run order, repeats already expanded; ``models`` holds every key
    used or initially resident; ``resident`` lists the keys resident before the first stage, least recently used
    first (LRU reads that order). ``max_models`` is a server's cap on loaded models (llama.cpp --models-max): an
    int caps every model, a mapping caps the models of each named group (``PipelineModel.group``); for "ollama", a
    server without a cap gets Ollama's default (with one server and no cap: one cap over every model).
    ``durations_s`` (one per stage, optional) lets "ollama" expire models whose keep_alive runs out; the other
    strategies ignore it.

    >>> m = {k: PipelineModel(k, k, s) for k, s in (("fast", 5), ("big", 30), ("code", 20))}
    >>> stages = [("a", "fast"), ("b", "big"), ("c", "fast"), ("d", "code"), ("e", "fast")]
    >>> [(p.loads, p.bytes_loaded) for p in (plan_pipeline(stages, m, ["big", "code"], 50, strategy=s)
    ...   for s in ("lookahead", "lru", "unload-all")) if isinstance(p, PipelinePlan)]
    [(2, 25), (3, 55), (5, 65)]
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    caps = Caps.of(max_models)
    caps.check()
    for key in [key for _, key in stages] + list(resident):
        if key not in models:
            raise ValueError(f"model key {key!r} is used but missing from models")
    if durations_s is not None and (len(durations_s) != len(stages) or any(d < 0 for d in durations_s)):
        raise ValueError("durations_s needs one non-negative duration per stage")
    if strategy == OLLAMA_SCHEDULER:  # every Ollama server has a cap: its default where none is given
        caps = caps.or_default(OLLAMA_DEFAULT_MAX_LOADED, (model.group for model in models.values()))

    schedule = pin_schedule(stages, models, resident, budget, caps, allow_evict_pinned)
    if isinstance(schedule, PipelineRefusal):
        involved = (schedule.model, *schedule.blocking_pins)
        return replace(schedule, names=tuple((key, models[key].name) for key in involved))
    problem = build_problem(stages, models, resident, budget, caps, schedule, durations_s)

    exact = False
    if strategy == LRU:
        run = play_lazy(problem, lru_rank(problem))
    elif strategy == OLLAMA_SCHEDULER:
        run = play_lazy(problem, ollama_rank(problem), expiry=True)
    elif strategy == UNLOAD_ALL:
        run = play_lazy(problem, lru_rank(problem), reset=True)
    else:
        found = exact_run(problem)
        exact = found is not None
        run = found if found is not None else min(greedy_candidates(problem), key=lambda r: run_cost(problem, r))
    return _assemble(problem, schedule, run, strategy, exact)


def _evictions_for_restores(
    problem: Problem,
    schedule: PinSchedule,
    run: Run,
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
        held = sorted(run.resident[index] | schedule.pins[index] | set(restores[index]))
        taken: list[str] = []
        for source in (expired[index + 1], evict[index + 1]):
            gone = shed(problem, held, list(source), problem.budget, problem.caps.limits)
            source[:] = [key for key in source if key not in gone]
            taken += gone
        after[index] = tuple(taken)
    return after


def _assemble(problem: Problem, schedule: PinSchedule, run: Run, strategy: str, exact: bool) -> PipelinePlan:
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
    prefetch: list[str | None] = [None] * count  # the model of the next stage that loads, after each stage
    for index in range(count - 2, -1, -1):
        prefetch[index] = problem.keys[index + 1] if actions[index + 1] == "load" else prefetch[index + 1]
    stages: list[StagePlan] = []
    for index, key in enumerate(problem.keys):
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
                prefetch=prefetch[index],
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
        max_models=problem.caps.shared,
        caps=tuple(problem.caps.to_dict().items()),
        exact=exact,
        warnings=schedule.warnings,
        names=tuple((key, model.name) for key, model in sorted(problem.models.items())),
    )
