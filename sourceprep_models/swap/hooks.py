"""How an operation talks while it works: the callbacks the CLI hands to ``swap``'s functions.

Its own module so that the CLI (which may not import the planner or the executor) and a plain `status`
(which starts faster without them) get it without importing what an operation does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sourceprep_models.swap.progress import ProgressFn


def _ignore(_: str) -> None:
    return None


@dataclass(frozen=True)
class Hooks:
    """How an operation talks while it works; the CLI passes its output layer's methods."""

    info: Callable[[str], None] = _ignore
    warn: Callable[[str], None] = _ignore
    debug: Callable[[str], None] = _ignore
    # Each phase of a swap as it starts and ends (``swap.progress``); ui/progress.py renders them.
    progress: ProgressFn | None = None

    def waiting(self, endpoint: str) -> None:
        self.info(f"waiting for another sourceprep-models to finish on {endpoint}…")
