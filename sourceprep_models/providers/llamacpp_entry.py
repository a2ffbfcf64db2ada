"""One model as a llama.cpp router lists it in ``GET /models`` (real-engine.md §5), and its GGUF header."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sourceprep_models.memory.gguf import GGUFMetadata


@dataclass(frozen=True)
class RouterEntry:
    """One model of the router's listing."""

    id: str
    aliases: tuple[str, ...]
    status: str  # unloaded | loading | loaded | sleeping | downloading
    failed: bool
    exit_code: int | None
    meta: dict[str, Any]
    args: tuple[str, ...] = ()  # the child's command line (status.args)
    preset: str | None = None  # the preset section it was built from (status.preset)

    @property
    def model_path(self) -> str | None:
        """The ``--model`` argument the router passes to the child."""
        return self.arg("--model")

    def number(self, *flags: str) -> int | None:
        """The integer after the last of ``flags`` (None: absent or not a number)."""
        value = self.arg(*flags)
        return int(value) if value is not None and value.strip().lstrip("-").isdigit() else None

    def arg(self, *flags: str) -> str | None:
        """The value after the last of ``flags`` in the child's arguments."""
        found = None
        for index, value in enumerate(self.args[:-1]):
            if value in flags:
                found = self.args[index + 1]
        return found


def read_header(path: str | None) -> GGUFMetadata | None:
    """The GGUF header at ``path`` when it is a readable file here (None otherwise)."""
    if path is None:
        return None
    from sourceprep_models.memory.gguf import read_gguf

    try:
        return read_gguf(Path(path))
    except (OSError, ValueError):
        return None
