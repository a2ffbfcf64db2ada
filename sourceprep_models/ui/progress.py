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
from dataclasses import dataclass
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


@dataclass
class _Running:
    """One phase under way: its latest event, when it started, and what a log has said of it."""

    event: PhaseEvent
    since: float
    announced: bool = False  # its "started" line is written (a log only)
    last_line: float = 0.0


class ProgressView:
    """Receives ``PhaseEvent``s (call it) and renders them; ``close`` stops its timer or live line.

    Several phases can run at once (a pipeline's background preload or prefetch beside a stage's own
    swap): each is tracked by (phase, model, endpoint), gets its own lines in a log and its own row
    of the live display."""

    def __init__(self, output: Output, heartbeat_s: float = HEARTBEAT_S, show_after_s: float = SHOW_AFTER_S) -> None:
        self._output = output
        self._heartbeat_s = heartbeat_s
        self._show_after_s = show_after_s
        self._lock = threading.Lock()
        # Starting and stopping the display: apart from ``_lock``, which the live line's first render takes.
        self._control = threading.Lock()
        self._running: dict[tuple[str, str, str], _Running] = {}
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
        key = (event.phase, event.model, event.endpoint)
        with self._lock:  # printed after it is released: the live line's refresh reads under it too
            running = self._running.get(key)
            if event.state == "start":
                self._running[key] = _Running(event, time.monotonic())
            elif event.state == "progress" and running is not None:
                running.event = _with_probe(event, running.event)
            elif event.state in ("end", "failed") and running is not None:
                del self._running[key]
                if running.announced:
                    verb = "done" if event.state == "end" else "failed"
                    line = f"{_name(event)}: {verb} in {format_seconds(event.elapsed_s)}"
        if event.state == "start":
            self._ensure_running()
        if line is not None:
            self._line(line)

    def _line(self, text: str) -> None:
        self._output.info(text)

    def _ensure_running(self) -> None:
        # Under the lock: a background thread's first phase and the main thread's can start together.
        with self._control:
            if self._stop.is_set():
                return
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
            lines = []
            with self._lock:
                now = time.monotonic()
                for running in self._running.values():
                    if not running.announced and now - running.since >= self._show_after_s:
                        running.announced, running.last_line = True, now
                        lines.append(f"{_name(running.event)}: started")
                    elif running.announced and now - running.last_line >= self._heartbeat_s:
                        running.last_line = now
                        lines.append(describe(running.event, now - running.since))
            for line in lines:
                self._line(line)

    def text(self) -> str:
        """The live display: one line per phase under way, oldest first."""
        with self._lock:
            running = [(item.event, item.since) for item in self._running.values()]
        now = time.monotonic()
        return "\n".join(describe(event, now - since) for event, since in running)

    def close(self) -> None:
        with self._control:
            self._stop.set()
            live, self._live = self._live, None
            ticker, self._ticker = self._ticker, None
        if live is not None:
            live.close()
        if ticker is not None:
            ticker.join()


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
