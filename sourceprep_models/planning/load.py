"""Decide what must leave memory before a model can come in. Pure: plain records in, a plan out.

No I/O happens here, so every eviction decision can be tested with literal data and ``--dry-run``
is simply "plan, render, don't execute". The rules, in order:

1. the same model already resident with the same runner options → nothing to do;
2. larger than the whole budget even on an empty machine → refused before anything is evicted;
3. single-model mode → every non-pinned model leaves;
4. otherwise, if it does not fit in what is free, evict the fewest non-pinned models, and among
   equally few the ones cheapest to bring back (fewest bytes to reload);
5. pinned models leave only when nothing else frees enough room AND the policy allows it; they
   are then scheduled to come back after the heavy work, and the plan carries a warning;
6. where the server caps the number of loaded models (llama.cpp ``--models-max``), the smallest
   non-pinned models leave so the cap holds, instead of the server evicting by LRU, pins included.

Memory belongs to the machine, so the resident models may live on several servers (endpoints) of it, each
model tagged with its ``group`` (the server's name; keys are unique across servers). The budget, single-model
mode ("one non-pinned model on this machine") and the pin rules look at every group together: the victims for
memory come from any group. A cap on loaded models is a server's own (see ``caps``): an int caps every model
(one server), a mapping caps the named groups; the victims for a cap come from the incoming model's group only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from sourceprep_models.planning.caps import Caps, MaxModels
from sourceprep_models.units import human_bytes

# Above this many candidates, an exhaustive search over victim sets is replaced by a greedy one.
_EXHAUSTIVE_LIMIT = 16


@dataclass(frozen=True)
class Resident:
    """A model occupying memory now."""

    key: str  # identity: two names with the same key are one loaded instance
    name: str
    size: int
    pinned: bool = False
    options_key: str = ""  # runner options it was loaded with; a different value forces a reload
    group: str = ""  # the server (endpoint) it is loaded on; caps count per group


@dataclass(frozen=True)
class Demand:
    """The model the caller wants resident next."""

    key: str
    name: str
    size: int  # predicted resident size (weights + KV + compute)
    pinned: bool = False
    options_key: str = ""
    group: str = ""  # the server (endpoint) it will load on


@dataclass(frozen=True)
class Policy:
    budget: int  # bytes models may occupy, headroom already taken off
    single_model: bool = False
    allow_evict_pinned: bool = False
    # The server's cap on loaded models (llama.cpp --models-max): an int over every model (one server), or a
    # cap per group (server). Over it the server evicts its least recently used model, pinned or not
    # (servers.md §2.3), so the plan evicts one itself first.
    max_models: MaxModels = None


@dataclass(frozen=True)
class Plan:
    incoming: Demand
    budget: int
    noop: bool = False
    reload: bool = False  # the incoming model is resident with other options and will be replaced
    evict: tuple[Resident, ...] = ()
    restore_after: tuple[Resident, ...] = ()  # evicted pins to bring back when the heavy work is done
    resident_after: int = 0  # predicted bytes in use once the plan has run
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.incoming.name,
            "noop": self.noop,
            "reload": self.reload,
            "predicted_size": self.incoming.size,
            "budget": self.budget,
            "resident_after": self.resident_after,
            "evict": [victim.name for victim in self.evict],
            "restore_after": [pin.name for pin in self.restore_after],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Refusal:
    """The model cannot be made resident under this budget and policy; nothing was touched."""

    incoming: Demand
    budget: int
    reason: str
    blocking_pins: tuple[Resident, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.incoming.name,
            "refused": True,
            "predicted_size": self.incoming.size,
            "budget": self.budget,
            "reason": self.reason,
            "blocking_pins": [pin.name for pin in self.blocking_pins],
        }


def plan_load(resident: Sequence[Resident], incoming: Demand, policy: Policy) -> Plan | Refusal:
    """What to evict so ``incoming`` fits in ``policy.budget``, or why it cannot."""
    same = [model for model in resident if model.key == incoming.key]
    if same and all(model.options_key == incoming.options_key for model in same):
        return Plan(incoming=incoming, budget=policy.budget, noop=True, resident_after=_total(resident))

    if incoming.size > policy.budget:
        return Refusal(
            incoming,
            policy.budget,
            f"{incoming.name} needs about {human_bytes(incoming.size)} but the budget is "
            f"{human_bytes(policy.budget)} even with nothing else loaded; use a smaller context or quantization, "
            "or raise memory.budget",
        )

    # A resident copy with other options is replaced by the load itself (ollama.md §4.7): its
    # memory is freed as part of the load, so count it as leaving.
    others = [model for model in resident if model.key != incoming.key]
    forced: list[Resident] = list(same)
    warnings: list[str] = []

    if policy.single_model:
        forced += [model for model in others if not model.pinned]
        others = [model for model in others if model.pinned]

    need = incoming.size - (policy.budget - _total(others))
    victims: list[Resident] = []
    if need > 0:
        unpinned = [model for model in others if not model.pinned]
        victims = _cheapest_cover(unpinned, need)
        if not victims and need > 0:
            freed_all = sum(model.size for model in unpinned)
            pins = [model for model in others if model.pinned]
            remaining = need - freed_all
            pin_victims = _cheapest_cover(pins, remaining)
            if not pin_victims:  # cannot happen when incoming.size <= budget; kept for safety
                return Refusal(incoming, policy.budget, f"{incoming.name} cannot fit even with everything evicted")
            if not policy.allow_evict_pinned:
                names = ", ".join(pin.name for pin in pin_victims)
                return Refusal(
                    incoming,
                    policy.budget,
                    f"{incoming.name} ({human_bytes(incoming.size)}) fits only if pinned {names} leave(s); "
                    "set memory.allow_evict_pinned = true to allow it (pins are reloaded afterwards), "
                    "or unpin with `sourceprep-models pin --remove`",
                    blocking_pins=tuple(pin_victims),
                )
            # With the pins' room freed, keep every unpinned model that no longer has to leave.
            victims = _cheapest_cover(unpinned, need - sum(pin.size for pin in pin_victims)) + pin_victims
            names = ", ".join(pin.name for pin in pin_victims)
            warnings.append(
                f"evicting pinned {names} to fit {incoming.name}; it will be reloaded when the heavy work is done"
            )

    caps = Caps.of(policy.max_models)
    scope = caps.scope(incoming.group)
    if scope is not None:
        chosen = {id(model) for model in victims}
        # Only the incoming model's server counts toward its cap, and only its models can make room under it.
        staying_now = [model for model in others if id(model) not in chosen and caps.scope(model.group) == scope]
        over = len({model.key for model in staying_now}) + 1 - caps.limits[scope]
        if over > 0:
            extra = _count_cover([model for model in staying_now if not model.pinned], over)
            if extra is None:
                pins = [model for model in staying_now if model.pinned]
                unpinned = [model for model in staying_now if not model.pinned]
                pin_victims = sorted(pins, key=lambda model: (model.size, model.name))[: over - len(unpinned)]
                if not policy.allow_evict_pinned:
                    names = ", ".join(pin.name for pin in pin_victims)
                    return Refusal(
                        incoming,
                        policy.budget,
                        f"{caps.says(incoming.group)} and pinned {names} would have to leave; raise its "
                        "--models-max, set memory.allow_evict_pinned = true, or unpin with "
                        "`sourceprep-models pin --remove`",
                        blocking_pins=tuple(pin_victims),
                    )
                extra = unpinned + pin_victims
                warnings.append(
                    f"evicting pinned {', '.join(pin.name for pin in pin_victims)}: {caps.says(incoming.group)}; "
                    "it will be reloaded when the heavy work is done"
                )
            victims += extra

    evict = tuple(forced + victims)
    leaving = {model.key + "\0" + model.name for model in evict}
    staying = [model for model in resident if model.key + "\0" + model.name not in leaving]
    return Plan(
        incoming=incoming,
        budget=policy.budget,
        reload=bool(same),
        evict=evict,
        restore_after=tuple(model for model in evict if model.pinned and model.key != incoming.key),
        resident_after=_total(staying) + incoming.size,
        warnings=tuple(warnings),
    )


def _count_cover(candidates: Sequence[Resident], count: int) -> list[Resident] | None:
    """``count`` models to leave so the server's model cap holds: the smallest (cheapest to reload)."""
    if len(candidates) < count:
        return None
    return sorted(candidates, key=lambda model: (model.size, model.name))[:count]


def _total(models: Sequence[Resident]) -> int:
    return sum(model.size for model in models)


def _cheapest_cover(candidates: Sequence[Resident], need: int) -> list[Resident]:
    """The fewest models whose sizes add up to at least ``need``; among those, the fewest bytes.

    Fewest first because every eviction is a reload someone may pay for later; fewest bytes next
    because reload time grows with size. Returns [] when even all candidates are not enough.
    """
    if need <= 0:
        return []
    if sum(model.size for model in candidates) < need:
        return []
    ordered = sorted(candidates, key=lambda model: (model.size, model.name))
    if len(ordered) > _EXHAUSTIVE_LIMIT:
        # Greedy: largest first reaches the target in the fewest evictions.
        chosen: list[Resident] = []
        for model in reversed(ordered):
            chosen.append(model)
            if sum(item.size for item in chosen) >= need:
                return chosen
        return []
    for count in range(1, len(ordered) + 1):
        best: tuple[Resident, ...] | None = None
        for combo in combinations(ordered, count):
            freed = sum(model.size for model in combo)
            if freed >= need and (best is None or freed < sum(model.size for model in best)):
                best = combo
        if best is not None:
            return list(best)
    return []
