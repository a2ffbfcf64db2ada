"""A server's cap on the number of models it keeps loaded, in a plan that may cover several servers.

Memory belongs to the machine, so one plan holds the models of every server (endpoint) of a machine against the
machine's one budget; each model carries its ``group``, the name of the server it lives on. A cap on loaded models
belongs to one server (llama.cpp router ``--models-max``, Ollama's ``OLLAMA_MAX_LOADED_MODELS``), so it counts only
that server's models. Callers give caps as ``max_models``:

- ``None``: no cap;
- an int: one cap over every model, whatever its group (the single-server case);
- a mapping from group to cap: the models of each named group are capped by its number; other groups are not.

>>> caps = Caps.of({"router": 2})
>>> caps.scope("router"), caps.scope("ollama"), caps.excess(["router", "router", "router", "ollama"])
('router', None, {'router': 1})
>>> Caps.of(2).excess(["router", "ollama", "ollama"]), caps.says("router")
({'': 1}, "the server 'router' keeps at most 2 models loaded")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MaxModels = int | Mapping[str, int] | None

# The scope every model counts toward under one shared cap. Never confused with a group's name: the two kinds of
# cap never meet in one ``Caps``.
SHARED = ""


@dataclass(frozen=True)
class Caps:
    """Which cap each model counts toward (its scope) and how many models each scope may hold."""

    shared: int | None = None  # one cap over every model (an int ``max_models``)
    per_group: Mapping[str, int] = field(default_factory=dict)  # group -> cap (a mapping ``max_models``)

    @classmethod
    def of(cls, max_models: MaxModels) -> Caps:
        if max_models is None:
            return cls()
        if isinstance(max_models, int):
            return cls(shared=max_models)
        return cls(per_group=dict(max_models))

    def check(self) -> None:
        """Raise ValueError on a cap below one (a caller's mistake: no server can hold fewer than one model)."""
        if self.shared is not None and self.shared < 1:
            raise ValueError("max_models must be at least 1")
        for group, cap in sorted(self.per_group.items()):
            if cap < 1:
                raise ValueError(f"max_models must be at least 1 (group {group!r} has {cap})")

    def or_default(self, default: int, groups: Iterable[str]) -> Caps:
        """Every group capped: those without a cap get ``default`` (a server that always has one, as Ollama).

        With one group and no caps given, that is one cap over every model, the single-server case.
        """
        if self.shared is not None:
            return self
        named = set(groups)
        if not self.per_group and len(named) <= 1:
            return Caps(shared=default)
        return Caps(per_group={group: self.per_group.get(group, default) for group in named} | dict(self.per_group))

    @property
    def limits(self) -> dict[str, int]:
        """Each scope's cap."""
        return {SHARED: self.shared} if self.shared is not None else dict(self.per_group)

    def scope(self, group: str) -> str | None:
        """The cap a model of ``group`` counts toward, or None when no cap applies to it."""
        if self.shared is not None:
            return SHARED
        return group if group in self.per_group else None

    def excess(self, groups: Iterable[str]) -> dict[str, int]:
        """How many models over its cap each scope would be, for models of these groups (only the scopes over)."""
        counts: dict[str, int] = {}
        for group in groups:
            scope = self.scope(group)
            if scope is not None:
                counts[scope] = counts.get(scope, 0) + 1
        limits = self.limits
        return {scope: count - limits[scope] for scope, count in counts.items() if count > limits[scope]}

    def says(self, group: str) -> str:
        """The cap on ``group``'s server, in words: "the server 'router' keeps at most 2 models loaded"."""
        scope = self.scope(group)
        if scope is None:
            raise ValueError(f"no cap applies to group {group!r}")
        server = f"the server {group!r}" if group else "the server"
        return f"{server} keeps at most {self.limits[scope]} models loaded"

    def to_dict(self) -> dict[str, int]:
        """The per-group caps, for a plan's JSON (the shared cap is reported as ``max_models``)."""
        return dict(sorted(self.per_group.items()))
