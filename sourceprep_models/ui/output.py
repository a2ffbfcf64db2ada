"""The one output layer: data to stdout, everything else (messages, progress, errors) to stderr.

Rules: colour only on a terminal and never with ``NO_COLOR``; no spinners and no wrapping when a
stream is not a terminal (pipes, CI logs); ``--json`` writes plain ``json.dumps`` to stdout and
nothing decorative; verbosity is one number (``-v`` minus ``-q``) that gates stderr chatter.

When the reader of a stream goes away (``status | head -1``), writing to that stream stops
quietly and the command carries on: the exit status is the command's own (0 when its work was
done), not 1 and not 141 (death by SIGPIPE). The reader leaving says nothing about the work, and a
command that changes what a server holds must never stop halfway through a swap because nobody
reads its log. Text with undecodable bytes (a model name or path given as raw bytes) is written
with backslash escapes instead of failing. No API key leaves through here: every message and JSON
document is scrubbed (``providers.secrets``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
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
        self._stdout_gone = False

    # -- consoles are built lazily so `--help` never imports rich's console machinery ----------

    def _console(self, *, stderr: bool) -> Console:
        Console = _console_class()
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
        if self._stdout_gone:
            return
        try:
            sys.stdout.write(json.dumps(scrub_data(data), indent=2, sort_keys=False) + "\n")
            sys.stdout.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self._stdout_gone = True
            _silence(sys.stdout)

    def data(self, renderable: RenderableType) -> None:
        self.out.print(renderable)

    def line(self, text: str = "") -> None:
        self.out.print(printable(scrub(text)))

    # -- messages (stderr) -----------------------------------------------------------------------

    def error(self, message: str) -> None:
        if self.verbosity >= -2:
            self.err.print(f"error: {one_line(scrub(message))}", style="bold red")

    def warn(self, message: str) -> None:
        if self.verbosity >= -1:
            self.err.print(f"warning: {one_line(scrub(message))}", style="yellow")

    def info(self, message: str) -> None:
        if self.verbosity >= 0:
            self.err.print(printable(scrub(message)))

    def success(self, message: str) -> None:
        if self.verbosity >= 0:
            self.err.print(printable(scrub(message)), style="green")

    def debug(self, message: str, level: int = 1) -> None:
        if self.verbosity >= level:
            self.err.print(printable(scrub(message)), style="dim")

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
            self.err.print(printable(scrub(message)))
            yield


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def printable(text: str) -> str:
    """``text`` with every character UTF-8 cannot encode (lone surrogates from undecodable bytes)
    written as a backslash escape: ``a\\xff`` for the byte 0xff of a command-line argument."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def one_line(text: str) -> str:
    """``printable(text)`` with control characters escaped too: an error or warning stays one line
    (a newline inside a quoted value cannot split it) and cannot steer the terminal."""
    return "".join(
        char if char.isprintable() or char == " " else char.encode("unicode_escape").decode("ascii")
        for char in printable(text)
    )


def _silence(stream: Any) -> None:
    """Point the stream's descriptor at /dev/null: its buffered rest, flushed at exit, goes nowhere
    instead of failing again (the recipe of the Python docs' "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real descriptor (a test's captured stream)
        pass


@functools.cache
def _console_class() -> type[Console]:
    """rich's Console, except that a closed pipe silences it instead of exiting with status 1."""
    from rich.console import Console

    class QuietOnBrokenPipe(Console):
        def on_broken_pipe(self) -> None:
            # rich's default raises SystemExit(1) from whatever the command was doing, and silences
            # sys.stdout even when this console writes to stderr.
            self.quiet = True
            _silence(self.file)

    return QuietOnBrokenPipe
