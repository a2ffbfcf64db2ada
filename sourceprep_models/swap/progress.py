"""What a swap says while it works, and where its seconds went afterwards.

The executor emits a ``PhaseEvent`` when each phase of a swap starts and ends (warm, unload,
release, load, verify) and whenever the server reports how far a load is (llama.cpp's
``/models/sse``); ``ui.progress`` renders them. A load on a server that reports nothing carries a
``probe`` instead: how much of the weights is in the page cache right now, which grows as the
server reads them (``warming.pagecache``'s mincore reader).

``Breakdown`` is the swap's seconds by cause, taken from its timed steps: the load table,
``load --json`` and the pipeline's ``--report`` show the same record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

# (bytes of the weights in the page cache now, their total), or None when that cannot be told.
Probe = Callable[[], tuple[int, int] | None]


@dataclass(frozen=True)
class PhaseEvent:
    phase: str  # warm | unload | release | load | verify
    model: str
    endpoint: str
    state: Literal["start", "progress", "end", "failed"]
    elapsed_s: float = 0.0
    fraction: float | None = None  # the server's own account of the load (0..1), where it gives one
    stage: str = ""  # the server's name for the part being loaded (llama.cpp: text_model, …)
    total_bytes: int | None = None
    probe: Probe | None = field(default=None, compare=False, repr=False)


ProgressFn = Callable[[PhaseEvent], None]


class Timed(Protocol):
    """A timed step of a swap (``executor.Step``)."""

    @property
    def step(self) -> str: ...
    @property
    def wall_s(self) -> float: ...
    @property
    def server_s(self) -> float | None: ...


class Phases:
    """Start and end events around each phase of one swap (nothing at all without a listener)."""

    def __init__(self, listen: ProgressFn | None, clock: Callable[[], float]) -> None:
        self._listen = listen
        self._clock = clock

    @contextlib.contextmanager
    def phase(
        self, name: str, model: str, endpoint: str, *, total_bytes: int | None = None, probe: Probe | None = None
    ) -> Iterator[Callable[[str, float], None]]:
        """Yields a callable for the server's (stage, fraction) reports during the phase."""
        listen = self._listen
        if listen is None:
            yield _ignore
            return
        started = self._clock()

        def event(state: Literal["start", "progress", "end", "failed"], **extra: Any) -> PhaseEvent:
            return PhaseEvent(name, model, endpoint, state, self._clock() - started, total_bytes=total_bytes, **extra)

        listen(event("start", probe=probe))
        try:
            yield lambda stage, fraction: listen(event("progress", stage=stage, fraction=fraction))
        except BaseException:
            listen(event("failed"))
            raise
        listen(event("end"))


def _ignore(_stage: str, _fraction: float) -> None:
    return None


def page_cache_probe(paths: Sequence[Path]) -> tuple[int | None, Probe | None]:
    """The weights' total size and a probe of their page-cache residency (None, None: not on this disk)."""
    from sourceprep_models.warming import pagecache

    files = [path for path in paths if path.is_file()]
    if not files:
        return None, None
    total = sum(path.stat().st_size for path in files)

    def probe() -> tuple[int, int] | None:
        resident = 0
        for path in files:
            part = pagecache.residency(path).resident_bytes
            if part is None:
                return None
            resident += part
        return resident, total

    return total, probe


@dataclass(frozen=True)
class Breakdown:
    """Where one swap's seconds went, by cause (None: not measured for this swap)."""

    busy_wait_s: float | None  # waiting for a model that was loading or serving to be free to evict
    unload_s: float  # the unload requests
    released_s: float  # until the server had freed the memory
    read_s: float | None  # pre-reading the weights (warm step); None when there was none
    read_from: str | None  # where the weights were before the read: "disk", "page cache", None (unknown)
    load_s: float
    server_load_s: float | None  # the server's own account of the load, where it gives one
    verify_s: float
    first_token_s: float | None = None  # where a first token is measured (pipeline stages)

    @classmethod
    def of(cls, steps: Sequence[Timed], read_from: str | None, busy_wait_s: float | None = None) -> Breakdown:
        def total(*names: str) -> float:
            return sum((step.wall_s for step in steps if step.step in names), 0.0)

        loads = [step for step in steps if step.step == "load"]
        served = [step.server_s for step in loads if step.server_s is not None]
        return cls(
            busy_wait_s=busy_wait_s,
            unload_s=total("unload"),
            released_s=total("wait-for-free"),
            read_s=total("warm") if any(step.step == "warm" for step in steps) else None,
            read_from=read_from,
            load_s=total("load"),
            server_load_s=sum(served) if served else None,
            verify_s=total("verify"),
        )

    def to_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return round(value, 4) if value is not None else None

        return {
            "busy_wait_s": rounded(self.busy_wait_s),
            "unload_s": rounded(self.unload_s),
            "released_s": rounded(self.released_s),
            "read_s": rounded(self.read_s),
            "read_from": self.read_from,
            "load_s": rounded(self.load_s),
            "server_load_s": rounded(self.server_load_s),
            "verify_s": rounded(self.verify_s),
            "first_token_s": rounded(self.first_token_s),
        }
