"""The one output layer: data to stdout, everything else (messages, progress, errors) to stderr.

Rules: colour only on a terminal and never with ``NO_COLOR``; no spinners and no wrapping when a
stream is not a terminal (pipes, CI logs); ``--json`` writes plain ``json.dumps`` to stdout and
nothing decorative; verbosity is one number (``-v`` minus ``-q``) that gates stderr chatter. No API
key leaves through here: every message and JSON document is scrubbed (``providers.secrets``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sourceprep_models.constants import ENV_CI, ENV_FORCE_COLOR, ENV_NO_COLOR
from sourceprep_models.providers.secrets import scrub, scrub_data

if TYPE_CHECKING:
    from rich.console import Console, RenderableType


class Output:
    def __init__(
        self,
        *,
        verbosity: int = 0,
        color: bool | None = None,
        interactive: bool | None = None,
        json_mode: bool = False,
    ) -> None:
        self.verbosity = verbosity
        self.json_mode = json_mode
        self._color = color
        self._interactive = interactive
        self._out: Console | None = None
        self._err: Console | None = None

    # -- consoles are built lazily so `--help` never imports rich's console machinery ----------

    def _console(self, *, stderr: bool) -> Console:
        from rich.console import Console

        stream = sys.stderr if stderr else sys.stdout
        tty = _isatty(stream)
        no_color = bool(os.environ.get(ENV_NO_COLOR))
        force = bool(os.environ.get(ENV_FORCE_COLOR)) and not no_color
        color = self._color if self._color is not None else (tty or force) and not no_color
        return Console(
            file=stream,
            stderr=False,
            force_terminal=color,
            no_color=not color,
            highlight=False,
            markup=False,
            emoji=False,
            soft_wrap=not tty,
            # In a pipe, never fold lines: a script reads whole rows.
            width=None if tty else 10_000,
        )

    @property
    def out(self) -> Console:
        if self._out is None:
            self._out = self._console(stderr=False)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = self._console(stderr=True)
        return self._err

    @property
    def interactive(self) -> bool:
        """Spinners and live tables only for a person at a terminal, never in CI."""
        if self._interactive is not None:
            return self._interactive
        return _isatty(sys.stderr) and not os.environ.get(ENV_CI) and os.environ.get("TERM") != "dumb"

    # -- data (stdout) ---------------------------------------------------------------------------

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(scrub_data(data), indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()

    def data(self, renderable: RenderableType) -> None:
        self.out.print(renderable)

    def line(self, text: str = "") -> None:
        self.out.print(scrub(text))

    # -- messages (stderr) -----------------------------------------------------------------------

    def error(self, message: str) -> None:
        if self.verbosity >= -2:
            self.err.print(f"error: {scrub(message)}", style="bold red")

    def warn(self, message: str) -> None:
        if self.verbosity >= -1:
            self.err.print(f"warning: {scrub(message)}", style="yellow")

    def info(self, message: str) -> None:
        if self.verbosity >= 0:
            self.err.print(scrub(message))

    def success(self, message: str) -> None:
        if self.verbosity >= 0:
            self.err.print(scrub(message), style="green")

    def debug(self, message: str, level: int = 1) -> None:
        if self.verbosity >= level:
            self.err.print(scrub(message), style="dim")

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        """A spinner on a terminal; one plain stderr line otherwise."""
        if self.verbosity < 0:
            yield
            return
        if self.interactive:
            with self.err.status(message):
                yield
        else:
            self.err.print(scrub(message))
            yield


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
