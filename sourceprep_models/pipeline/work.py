"""A pipeline stage's work: prompts the tool sends (streamed, timed) and shell commands it runs.

Prompts go to the server in its own dialect so that they hit the instance the executor loaded: the
provider class of the endpoint's kind says which (``Provider.prompt_protocol``): the OpenAI
``chat/completions`` stream that most servers serve, or a server's native one (Ollama's
``/api/generate`` with the model's exact options and keep-alive, ``providers.ollama.prompts``).

Time to first token is measured to the first chunk that carries text; tokens per second from the
server's own count when it gives one (Ollama ``eval_count``/``eval_duration``, OpenAI ``usage``),
otherwise from the number of streamed chunks (one token each on these servers).

A command runs through the shell with the stage's model and endpoint in its environment; its
output goes to stderr, so the tool's stdout stays reserved for the run's data (tables, JSON).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import httpx

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.constants import CONNECT_TIMEOUT_S
from sourceprep_models.errors import ServerError, SourceprepError
from sourceprep_models.providers import secrets, server_facts
from sourceprep_models.providers._http import error_message, json_body, transport_error


@dataclass(frozen=True)
class PromptResult:
    prompt: str
    output: str
    ttft_s: float | None
    tokens: int
    generation_s: float  # first token to last
    total_s: float

    @property
    def tokens_per_s(self) -> float | None:
        if self.tokens <= 1 or self.generation_s <= 0:
            return None
        return (self.tokens - 1) / self.generation_s

    def to_dict(self) -> dict[str, Any]:
        """The record written to the outputs file and the report; a model that repeats its input (or a
        proxy that quotes the request) could carry the API key, so the texts are scrubbed."""
        return {
            "prompt": secrets.scrub(self.prompt),
            "output": secrets.scrub(self.output),
            "ttft_s": _round(self.ttft_s),
            "tokens": self.tokens,
            "tokens_per_s": _round(self.tokens_per_s),
            "total_s": _round(self.total_s),
        }


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    seconds: float


@dataclass
class WorkResult:
    """What one stage run did: its prompts and its command, with timings."""

    prompts: list[PromptResult] = field(default_factory=list)
    command: CommandResult | None = None
    seconds: float = 0.0
    started: float = 0.0  # time.monotonic() when the work started and ended
    ended: float = 0.0

    @property
    def failed(self) -> bool:
        return self.command is not None and self.command.exit_code != 0

    @property
    def ttft_s(self) -> float | None:
        """The median time to first token over the stage's prompts."""
        values = sorted(result.ttft_s for result in self.prompts if result.ttft_s is not None)
        return values[len(values) // 2] if values else None

    @property
    def tokens_per_s(self) -> float | None:
        tokens = sum(max(result.tokens - 1, 0) for result in self.prompts)
        seconds = sum(result.generation_s for result in self.prompts)
        return tokens / seconds if tokens and seconds > 0 else None


def model_environment(
    endpoint: Endpoint, model_name: str, model_key: str, environ: Mapping[str, str]
) -> dict[str, str]:
    """The variables a stage's command gets: which model to call and where, in the spellings tools read."""
    env = dict(environ)
    server = server_facts(endpoint.kind)
    root = endpoint.url.rstrip("/")
    openai_base = server.api_base_url(endpoint.url)
    env.update(
        {
            "SOURCEPREP_MODEL": model_name,
            "SOURCEPREP_MODEL_KEY": model_key,
            "SOURCEPREP_ENDPOINT": endpoint.name,
            "SOURCEPREP_ENDPOINT_KIND": endpoint.kind,
            "SOURCEPREP_ENDPOINT_URL": root,
            "OPENAI_BASE_URL": openai_base,
            "OPENAI_API_BASE": openai_base,
        }
    )
    if server.client_host_variable:  # the server's own command-line client (Ollama: OLLAMA_HOST)
        env[server.client_host_variable] = root
    if endpoint.api_key_env and environ.get(endpoint.api_key_env):
        env["OPENAI_API_KEY"] = environ[endpoint.api_key_env]  # the child needs it; it is never printed
    return env


def run_command(command: str, env: Mapping[str, str], cwd: str | None = None) -> CommandResult:
    """Run ``command`` through the shell; its stdout and stderr both go to our stderr, line by line.

    The command runs in a process group of its own, and nothing of it outlives its stage: when the
    shell exits, whatever it left running in the group is ended; Ctrl-C or an error ends the whole
    group (SIGTERM, then SIGKILL); and if this process is killed outright (kill -9), a small watcher
    process sees its pipe from us close and ends the group (``_WATCHER``)."""
    started = time.monotonic()
    with _CtrlCHeld() as held:
        gate = os.pipe() if _POSIX else None
        try:
            process = subprocess.Popen(
                _gated(command, gate[0]) if gate is not None else command,
                shell=gate is None,
                env=dict(env),
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(gate[0],) if gate is not None else (),
                start_new_session=_POSIX,  # the terminal's Ctrl-C reaches us only: we end the group ourselves
            )
            watcher = _watch(process.pid) if gate is not None else None
            if gate is not None:
                os.write(gate[1], b"go\n")  # the watcher is in place: the command may start
        finally:
            if gate is not None:
                os.close(gate[0])
                os.close(gate[1])
    assert process.stdout is not None
    # The output is copied by a thread, so that the stage ends when the shell does, even when
    # something it started in the background still holds the pipe (it is ended just below).
    copier = threading.Thread(target=_copy_lines, args=(process.stdout,), daemon=True)
    try:
        held.deliver()  # a Ctrl-C (the command may send one at once) that came while both started
        copier.start()
        code = process.wait()
        if _POSIX:
            # What the command left running in the background. The group's id stays taken while any
            # process is in it, so this cannot reach another group.
            _signal_group(process.pid, signal.SIGTERM)
    except BaseException:
        _end_group(process)
        raise
    finally:
        if watcher is not None:
            _dismiss(watcher)
        if copier.is_alive():
            copier.join(_GRACE_S)
        if not copier.is_alive():
            process.stdout.close()
    return CommandResult(command=command, exit_code=code, seconds=time.monotonic() - started)


class _CtrlCHeld:
    """Holds a Ctrl-C while the command and its watcher start, to deliver it once both are tracked: one that
    lands inside a ``Popen`` constructor would leave a process that nobody waits for or ends. The started
    programs get the default disposition back at exec, so only this process defers the signal, and only
    for the milliseconds the two starts take (outside the main thread, where signals are not handled,
    nothing is held)."""

    def __init__(self) -> None:
        self._caught = False
        self._held = False
        self._previous: Any = signal.default_int_handler

    def __enter__(self) -> _CtrlCHeld:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._catch) or signal.default_int_handler
            self._held = True
        return self

    def __exit__(self, *_: object) -> None:
        if self._held:
            signal.signal(signal.SIGINT, self._previous)

    def _catch(self, *_: object) -> None:
        self._caught = True

    def deliver(self) -> None:
        if self._caught:
            self._caught = False
            raise KeyboardInterrupt


def _gated(command: str, gate: int) -> list[str]:
    """``sh -c command`` that first waits at a gate: ``gate`` is the read end of a pipe only this process
    writes to, and "go" is written once the watcher is in place. A tool killed between the two starts
    closes the pipe without "go": the shell exits before running anything, so no stage command ever runs
    unwatched. The command follows on the next line of the same script, so it runs as ``sh -c`` runs it
    ($0, no positional arguments). The gate is read by path and closed where the shell can name it (POSIX
    sh names descriptors 0-9 only)."""
    close = f" exec {gate}<&-;" if gate <= 9 else ""
    return ["/bin/sh", "-c", f"read -r _ </dev/fd/{gate} || exit 129;{close}\n{command}"]


def _copy_lines(stream: IO[bytes]) -> None:
    try:
        for raw in iter(stream.readline, b""):
            sys.stderr.write(raw.decode(errors="replace"))
            sys.stderr.flush()
    except (ValueError, OSError):
        pass  # the pipe was closed under it (a Ctrl-C ended the stage while it read): nothing more to copy


_POSIX = os.name == "posix"
# How long a command's group gets between SIGTERM and SIGKILL.
_GRACE_S = 5.0
# The watcher of one command's process group. Its stdin is a pipe whose write end only the tool
# holds: "done" means the tool ended the command itself; end of file without it means the tool
# died (even by SIGKILL, which no handler sees), so the watcher ends the group. A pipe rather than
# PR_SET_PDEATHSIG: it works on macOS too, and needs no preexec_fn (unsafe beside the prefetch
# threads). Started with -I -S so that it costs milliseconds; in its own session, so that the
# terminal's Ctrl-C leaves it to wait for the pipe.
_WATCHER = """
import os, signal, sys, time
group = int(sys.argv[1])
if sys.stdin.buffer.read() != b"done":
    try:
        os.killpg(group, signal.SIGTERM)
        end = time.monotonic() + float(sys.argv[2])
        while time.monotonic() < end:
            time.sleep(0.05)
            os.killpg(group, 0)
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


def _watch(group: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _WATCHER, str(group), str(_GRACE_S)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def _dismiss(watcher: subprocess.Popen[bytes]) -> None:
    """Tell the watcher the group is taken care of, and let it exit in its own time.

    Not waited for here: a short command ends while its watcher (an interpreter) is still starting,
    and waiting cost every stage of a pipeline tens of milliseconds. It exits as soon as it reads
    "done"; the next dismissal, or the end of this process, reaps it."""
    assert watcher.stdin is not None
    try:
        watcher.stdin.write(b"done")
        watcher.stdin.close()
    except OSError:
        pass  # it is gone already
    with _dismissed_lock:
        _dismissed[:] = [other for other in _dismissed if other.poll() is None]
        _dismissed.append(watcher)


_dismissed: list[subprocess.Popen[bytes]] = []
_dismissed_lock = threading.Lock()


def reap_watchers(patience_s: float = 2.0) -> None:
    """Once a run is over, wait (up to ``patience_s`` in all) for the dismissed watchers: each exits as soon
    as it has read "done" (an interpreter's start-up), so none outlives the run that started it, in-process
    callers included. One still running after that stays listed, and so referenced, until the next reaping."""
    end = time.monotonic() + patience_s
    with _dismissed_lock:
        for watcher in list(_dismissed):
            with contextlib.suppress(subprocess.TimeoutExpired):
                watcher.wait(timeout=max(0.0, end - time.monotonic()))
        _dismissed[:] = [watcher for watcher in _dismissed if watcher.returncode is None]


@atexit.register
def _reap_all() -> None:
    with _dismissed_lock:
        for watcher in _dismissed:
            watcher.wait()


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C or an error: the command's whole group gets SIGTERM, then SIGKILL after a grace period."""
    if not _POSIX:
        process.kill()
        process.wait()
        return
    _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=_GRACE_S)
    _signal_group(process.pid, signal.SIGKILL)  # the leader is gone, but not always all of its group
    process.wait()


def _signal_group(group: int, signum: int) -> None:
    # Nothing left in it: ProcessLookupError (PermissionError on macOS for a group of zombies).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


class PromptClient:
    """Sends prompts to one endpoint in its dialect (see the module docstring)."""

    def __init__(
        self,
        endpoint: Endpoint,
        environ: Mapping[str, str],
        client: httpx.Client | None = None,
        *,
        autoload: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self._environ = environ
        # ``autoload``: the request may load the model itself, as an ordinary client's would.
        self._protocol = server_facts(endpoint.kind).prompt_protocol(endpoint, autoload=autoload)
        self._client = client or httpx.Client(
            base_url=self._protocol.base_url, timeout=httpx.Timeout(600.0, connect=CONNECT_TIMEOUT_S)
        )

    def close(self) -> None:
        self._client.close()

    def send(
        self,
        model: str,
        prompt: str,
        *,
        max_tokens: int,
        options: Mapping[str, object] | None = None,
        keep_alive: float | None = None,
    ) -> PromptResult:
        protocol = self._protocol
        body = protocol.body(model, prompt, max_tokens=max_tokens, options=options or {}, keep_alive=keep_alive)
        headers = secrets.auth_headers(self.endpoint, self._environ)
        where = f"{self.endpoint.kind} endpoint {self.endpoint.name!r} at {self.endpoint.url}"
        started = time.monotonic()
        first: float | None = None
        pieces: list[str] = []
        chunks = 0
        counted: int | None = None
        try:
            with self._client.stream("POST", protocol.path, json=body, headers=headers) as response:
                if not response.is_success:
                    response.read()
                    message = error_message(json_body(response)) or secrets.scrub(response.text.strip())[:200]
                    raise ServerError(
                        f"{where} answered {response.status_code} to a prompt for {model}: {secrets.scrub(message)}",
                        response.status_code,
                    )
                for event in protocol.events(response.iter_lines()):
                    if protocol.reports_error(event):
                        reported = secrets.scrub(str(error_message(event)))
                        raise SourceprepError(f"the server reported an error mid-answer: {reported}")
                    text, done_count = protocol.piece(event)
                    if done_count is not None:
                        counted = done_count
                    if text:
                        if first is None:
                            first = time.monotonic()
                        pieces.append(text)
                        chunks += 1
        except httpx.TransportError as exc:
            raise transport_error(
                exc, where=where, unreachable_fix="start the server, or check the endpoint's url", what="a prompt"
            ) from None
        finished = time.monotonic()
        return PromptResult(
            prompt=prompt,
            output="".join(pieces),
            ttft_s=(first - started) if first is not None else None,
            tokens=counted if counted is not None else chunks,
            generation_s=(finished - first) if first is not None else 0.0,
            total_s=finished - started,
        )

    def embed(
        self, model: str, text: str, *, options: Mapping[str, object] | None = None, keep_alive: float | None = None
    ) -> PromptResult:
        """One embedding call (the only inference an embedding model answers); its whole answer comes at
        once, so the time to it is both ``ttft_s`` and ``total_s``."""
        protocol = self._protocol
        body = protocol.embed_body(model, text, options=options or {}, keep_alive=keep_alive)
        where = f"{self.endpoint.kind} endpoint {self.endpoint.name!r} at {self.endpoint.url}"
        started = time.monotonic()
        try:
            response = self._client.post(
                protocol.embed_path, json=body, headers=secrets.auth_headers(self.endpoint, self._environ)
            )
        except httpx.TransportError as exc:
            raise transport_error(
                exc, where=where, unreachable_fix="start the server, or check the endpoint's url", what="an embedding"
            ) from None
        elapsed = time.monotonic() - started
        if not response.is_success:
            message = error_message(json_body(response)) or secrets.scrub(response.text.strip())[:200]
            raise ServerError(
                f"{where} answered {response.status_code} to an embedding for {model}: {secrets.scrub(message)}",
                response.status_code,
            )
        return PromptResult(prompt=text, output="", ttft_s=elapsed, tokens=0, generation_s=0.0, total_s=elapsed)


def read_prompts_file(path: str, base: str | None) -> list[str]:
    """Prompts from a file: JSONL (``{"prompt": …}`` or a JSON string per line) or plain lines."""
    resolved = path if os.path.isabs(path) or base is None else os.path.join(base, path)
    try:
        with open(resolved, encoding="utf-8") as handle:
            lines = [line.rstrip("\n") for line in handle]
    except OSError as exc:
        raise SourceprepError(f"cannot read prompts file {resolved}: {exc.strerror or exc}") from None
    prompts = []
    for line in lines:
        if not line.strip():
            continue
        if resolved.endswith(".jsonl"):
            try:
                value = json.loads(line)
            except ValueError:
                raise SourceprepError(f"{resolved}: a line is not JSON: {line[:60]!r}") from None
            if isinstance(value, dict) and isinstance(value.get("prompt"), str):
                prompts.append(value["prompt"])
            elif isinstance(value, str):
                prompts.append(value)
            else:
                raise SourceprepError(f'{resolved}: each line must be {{"prompt": "..."}} or a JSON string')
        else:
            prompts.append(line)
    return prompts


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None
