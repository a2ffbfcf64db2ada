"""A swap's progress on stderr, never on stdout: a live line on a terminal, plain lines in a log.

On a terminal (``Output.interactive``) one transient line shows the running phase, how far it is
(the server's own fraction where it reports one, else how much of the weights is in the page cache)
and the seconds so far. In a pipe or CI log, a line when a phase has lasted ``SHOW_AFTER_S`` and when
it ends, and one every ``HEARTBEAT_S`` in between, so a log shows a slow load is alive (a ten-minute
load used to print nothing). ``-q`` silences it all.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sourceprep_models.units import format_seconds, human_bytes

if TYPE_CHECKING:
    from rich.text import Text

    from sourceprep_models.swap.progress import PhaseEvent, ProgressFn
    from sourceprep_models.ui.output import Output

HEARTBEAT_S = 10.0
# In a log, a phase is written only once it has lasted this long: a quick swap's log stays as it was
# (its figures are in the table), and a failure stays one error line; a slow load is announced at once
# by a person's measure, then every HEARTBEAT_S.
SHOW_AFTER_S = 1.0
TICK_S = 0.1


def describe(event: PhaseEvent, elapsed_s: float) -> str:
    """``load tiny on llama: 45% (text_model), 540 MB of 1.2 GB in page cache, 3.4s``."""
    parts = []
    if event.fraction is not None:
        parts.append(f"{event.fraction:.0%}" + (f" ({event.stage})" if event.stage else ""))
    reading = event.probe() if event.probe is not None and event.fraction is None else None
    if reading is not None:
        parts.append(f"{human_bytes(reading[0])} of {human_bytes(reading[1])} in page cache")
    elif event.total_bytes:
        parts.append(human_bytes(event.total_bytes))
    parts.append(format_seconds(elapsed_s))
    return f"{event.phase} {event.model} on {event.endpoint}: " + ", ".join(parts)


class ProgressView:
    """Receives ``PhaseEvent``s (call it) and renders them; ``close`` stops its timer or live line."""

    def __init__(self, output: Output, heartbeat_s: float = HEARTBEAT_S, show_after_s: float = SHOW_AFTER_S) -> None:
        self._output = output
        self._heartbeat_s = heartbeat_s
        self._show_after_s = show_after_s
        self._lock = threading.Lock()
        self._current: PhaseEvent | None = None
        self._since = 0.0
        self._announced = False  # this phase's "started" line is written (a log only)
        self._last_line = 0.0
        self._stop = threading.Event()
        self._live: contextlib.ExitStack | None = None
        self._ticker: threading.Thread | None = None
        self._interactive: bool | None = None

    @property
    def interactive(self) -> bool:
        """A live line needs a person at a terminal that rich drives as one (``NO_COLOR`` gets lines)."""
        if self._interactive is None:
            self._interactive = self._output.interactive and self._output.err.is_terminal
        return self._interactive

    def __call__(self, event: PhaseEvent) -> None:
        if self._output.verbosity < 0:
            return
        line = None
        with self._lock:  # printed after it is released: the live line's refresh reads under it too
            if event.state == "start":
                self._current, self._since, self._announced = event, time.monotonic(), False
            elif event.state == "progress" and self._current is not None:
                self._current = _with_probe(event, self._current)
            elif event.state in ("end", "failed"):
                if self._announced:
                    verb = "done" if event.state == "end" else "failed"
                    line = f"{_name(event)}: {verb} in {format_seconds(event.elapsed_s)}"
                self._current, self._announced = None, False
        if event.state == "start":
            self._ensure_running()
        if line is not None:
            self._line(line)

    def _line(self, text: str) -> None:
        self._output.info(text)

    def _ensure_running(self) -> None:
        if self.interactive:
            if self._live is None:
                from rich.live import Live

                self._live = contextlib.ExitStack()
                self._live.enter_context(
                    Live(_Line(self), console=self._output.err, transient=True, refresh_per_second=4)
                )
        elif self._ticker is None:
            self._ticker = threading.Thread(target=self._beat, daemon=True)
            self._ticker.start()

    def _beat(self) -> None:
        """A log's lines: "started" once a phase has lasted ``show_after_s``, then one per heartbeat."""
        tick = min(TICK_S, self._heartbeat_s, self._show_after_s or TICK_S)
        while not self._stop.wait(tick):
            line = None
            with self._lock:
                current, now = self._current, time.monotonic()
                if current is not None and not self._announced and now - self._since >= self._show_after_s:
                    self._announced, self._last_line = True, now
                    line = f"{_name(current)}: started"
                elif current is not None and self._announced and now - self._last_line >= self._heartbeat_s:
                    self._last_line = now
                    line = describe(current, now - self._since)
            if line is not None:
                self._line(line)

    def text(self) -> str:
        with self._lock:
            current = self._current
            since = self._since
        return describe(current, time.monotonic() - since) if current is not None else ""

    def close(self) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.close()
            self._live = None
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None


def _name(event: PhaseEvent) -> str:
    return f"{event.phase} {event.model} on {event.endpoint}"


class _Line:
    """The live line's renderable: read afresh at each refresh, so the seconds keep counting."""

    def __init__(self, view: ProgressView) -> None:
        self._view = view

    def __rich__(self) -> Text:
        from rich.text import Text

        return Text(self._view.text(), style="cyan")


def _with_probe(event: PhaseEvent, started: PhaseEvent) -> PhaseEvent:
    import dataclasses

    return dataclasses.replace(event, probe=None, total_bytes=event.total_bytes or started.total_bytes)


@contextlib.contextmanager
def progress(output: Output) -> Iterator[ProgressFn]:
    """A ``ProgressView`` for the duration of a command."""
    view = ProgressView(output)
    try:
        yield view
    finally:
        view.close()
