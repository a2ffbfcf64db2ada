"""Which pins stay for each stage of a pipeline: decided by policy before any strategy runs, common to all.

A pin leaves only when the stage's model cannot fit beside the pins: in the machine's budget (pins of any server
may leave, the fewest, then the fewest bytes) or under a server's cap on loaded models (pins of that server).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from sourceprep_models.planning.caps import Caps
from sourceprep_models.planning.records import PipelineModel, PipelineRefusal
from sourceprep_models.units import human_bytes

# Above this many pins, choosing which pins leave is greedy (largest first) instead of exhaustive.
_PIN_COVER_LIMIT = 16


@dataclass(frozen=True)
class PinSchedule:
    pins: tuple[frozenset[str], ...]  # pins resident during each stage (the stage's own model included)
    initial: frozenset[str]  # pins resident before the first stage
    end: frozenset[str]  # pins resident once the pipeline is done
    warnings: tuple[str, ...]


def pin_schedule(
    stages: Sequence[tuple[str, str]],
    models: Mapping[str, PipelineModel],
    resident: Sequence[str],
    budget: int,
    caps: Caps,
    allow_evict_pinned: bool,
) -> PinSchedule | PipelineRefusal:
    """Which pins stay for each stage; the first stage that cannot run at all is the refusal."""
    wanted = list(dict.fromkeys(key for key in resident if models[key].pinned))  # pins stay wanted once loaded
    initial = here = frozenset(wanted)
    per_stage: list[frozenset[str]] = []
    warnings: list[str] = []
    total = len(stages)
    for index, (stage, key) in enumerate(stages):
        model = models[key]
        if model.size <= budget and not model.pinned and not wanted:  # no pins anywhere: nothing to decide
            per_stage.append(here)
            continue
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
        # Per cap, how many pins must leave: the stage model's server, and any server whose pins alone are over.
        need_counts = caps.excess(m.group for m in [model, *present])
        leaving = _pin_cover(present, need_bytes, need_counts, caps)  # none when all fit
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
                    full = next(m.group for m in [model, *present] if caps.scope(m.group) in need_counts)
                    reason = (
                        f"{where}: {caps.says(full)} and pinned {pin_names} would have to leave for {model.name}; "
                        "raise its --models-max, set memory.allow_evict_pinned = true, or unpin with "
                        "`sourceprep-models pin --remove`"
                    )
                return PipelineRefusal(index, stage, reason, model=key, blocking_pins=tuple(p.key for p in leaving))
            warnings.append(f"{where}: evicting pinned {pin_names} to fit {model.name}; reloaded when it fits again")
        gone = {pin.key for pin in leaving}
        staying = [pin for pin in present if pin.key not in gone] + ([model] if model.pinned else [])
        out = [models[pin] for pin in wanted if pin != key and pin not in here]
        here = _restore(staying, out, budget, caps, model)
        per_stage.append(here)
    end = _restore([models[pin] for pin in here], [models[pin] for pin in wanted if pin not in here], budget, caps)
    return PinSchedule(tuple(per_stage), initial, end, tuple(warnings))


def _restore(
    staying: Sequence[PipelineModel],
    out: Sequence[PipelineModel],
    budget: int,
    caps: Caps,
    stage_model: PipelineModel | None = None,
) -> frozenset[str]:
    """The pins resident for a stage: those staying, plus every pin that was out and fits again (pin order)."""
    held = list(staying)
    beside = [] if stage_model is None or stage_model.pinned else [stage_model]
    for pin in out:
        trial = [*held, pin, *beside]
        if sum(m.size for m in trial) <= budget and not caps.excess(m.group for m in trial):
            held.append(pin)
    return frozenset(pin.key for pin in held)


def _pin_cover(
    pins: Sequence[PipelineModel], need_bytes: int, need_counts: Mapping[str, int], caps: Caps
) -> list[PipelineModel]:
    """The fewest pins freeing ``need_bytes`` and, under each cap, ``need_counts`` slots; then the fewest bytes."""
    ordered = sorted(pins, key=lambda pin: (pin.size, pin.key))

    def short(chosen: Sequence[PipelineModel]) -> tuple[int, dict[str, int]]:
        """What is still missing: bytes, and slots per cap."""
        counts = dict(need_counts)
        for pin in chosen:
            scope = caps.scope(pin.group)
            if scope is not None and scope in counts:
                counts[scope] -= 1
        return need_bytes - sum(pin.size for pin in chosen), {scope: n for scope, n in counts.items() if n > 0}

    def enough(chosen: Sequence[PipelineModel]) -> bool:
        bytes_short, slots_short = short(chosen)
        return bytes_short <= 0 and not slots_short

    if len(ordered) <= _PIN_COVER_LIMIT:
        for count in range(sum(need_counts.values()), len(ordered) + 1):
            fitting = [combo for combo in combinations(ordered, count) if enough(combo)]
            if fitting:
                return list(min(fitting, key=lambda combo: sum(pin.size for pin in combo)))
    chosen: list[PipelineModel] = []
    for pin in reversed(ordered):  # largest first reaches the target in the fewest evictions
        bytes_short, slots_short = short(chosen)
        if bytes_short <= 0 and not slots_short:
            break
        scope = caps.scope(pin.group)
        if bytes_short > 0 or (scope is not None and scope in slots_short):  # one that frees nothing missing stays
            chosen.append(pin)
    return chosen
