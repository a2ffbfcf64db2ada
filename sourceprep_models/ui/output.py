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

Every ``--json`` document follows one contract (docs/json.md): it starts with ``schema_version``,
every duration in seconds (a key ending in ``_s``) is rounded to 0.1 ms, and a command that fails
still writes one document, with an ``error`` object carrying the message, exit code and kind. The
CLI holds the document (``hold_json``) until the command ends, so a failure after the result is
known is added to that same document: stdout always carries exactly one JSON document.
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
from sourceprep_models.errors import ExitCode
from sourceprep_models.providers.secrets import scrub, scrub_data

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

# The version of the --json contract (docs/json.md): raised when a key is removed or changes meaning;
# new keys may appear within a version.
SCHEMA_VERSION = 1
# Seconds are given to 0.1 ms: finer figures are timer noise, and every command rounds alike.
SECONDS_DIGITS = 4


class Output:
    def __init__(
        self,
        *,
        verbosity: int = 0,
        color: bool | None = None,
        interactive: bool | None = None,
        json_mode: bool = False,
        hold_json: bool = False,
    ) -> None:
        self.verbosity = verbosity
        self.json_mode = json_mode
        self.hold_json = hold_json
        self._held: dict[str, Any] | None = None
        self._last_error: str | None = None
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
        if self.hold_json:
            self._held = data  # written by finish_json, with the error if the command then fails
            return
        self._write_json(json_document(data))

    def finish_json(self, exit_code: int) -> None:
        """The held document (or none) as the command ends: with ``error`` added when it failed."""
        document, self._held = self._held, None
        if exit_code == 0 and document is None:
            return
        document = json_document(document or {})
        if exit_code != 0 and "error" not in document:
            document["error"] = error_object(self._last_error or f"failed with exit code {exit_code}", exit_code)
        self._write_json(document)

    def _write_json(self, document: dict[str, Any]) -> None:
        if self._stdout_gone:
            return
        try:
            sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
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
        self._last_error = message
        if self.verbosity >= -2:
            self.err.print(f"error: {one_line(scrub(message))}", style="bold red")

    def failure(self, message: str) -> None:
        """Why the command is about to fail, for the ``error`` of its JSON document, when the message
        already went to stderr some other way (doctor's summary line)."""
        self._last_error = message

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


def json_document(data: Any) -> dict[str, Any]:
    """``data`` as a --json document: ``schema_version`` first, seconds rounded, secrets scrubbed."""
    body = data if isinstance(data, dict) else {"result": data}
    rounded: dict[str, Any] = _rounded(scrub_data(body))
    rounded.pop("schema_version", None)
    return {"schema_version": SCHEMA_VERSION, **rounded}


def error_object(message: str, exit_code: int) -> dict[str, Any]:
    """The ``error`` of a failed command's document; ``kind`` names the exit code (docs/json.md)."""
    try:
        kind = ExitCode(exit_code).name.lower()
    except ValueError:
        kind = "error"
    return {"message": one_line(scrub(message)), "exit_code": exit_code, "kind": kind}


def _rounded(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {name: _rounded(item, str(name)) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item, key) for item in value]
    # A duration in seconds ends in "_s"; a rate ("tokens_per_s") is not one.
    if isinstance(value, float) and key.endswith("_s") and not key.endswith("_per_s"):
        return round(value, SECONDS_DIGITS)
    return value


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
