"""The whole-pipeline planner's records: the models it is given and the plan or refusal it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PipelineModel:
    key: str  # identity: one resident instance per key
    name: str  # for messages
    size: int  # predicted resident bytes
    pinned: bool = False
    keep_alive_s: float | None = None  # only the "ollama" strategy uses it (None = Ollama's default 5 min)
    group: str = ""  # the server (endpoint) it lives on: caps on loaded models count per group


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
    max_models: int | None = None  # the one cap over every model the plan obeyed (Ollama's default for "ollama")
    caps: tuple[tuple[str, int], ...] = ()  # (group, cap) for each server capped on its own, sorted by group
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
            "caps": dict(self.caps),
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
