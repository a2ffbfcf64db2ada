"""A pipeline stage's work: prompts the tool sends (streamed, timed) and shell commands it runs.

Prompts go to the server in its own dialect so that they hit the instance the executor loaded:
- Ollama: ``POST /api/generate`` with ``stream: true`` and the model's exact ``options`` and
  ``keep_alive`` — a request with another ``num_ctx`` would reload the model (ollama.md §4.7) and a
  finite keep_alive would replace a pin's "forever" (§3.2).
- Every other kind: OpenAI ``POST {base}/chat/completions`` with ``stream: true`` (LM Studio,
  llama-server, llama-swap, vLLM, oMLX and cloud APIs all serve it).

Time to first token is measured to the first chunk that carries text; tokens per second from the
server's own count when it gives one (Ollama ``eval_count``/``eval_duration``, OpenAI ``usage``),
otherwise from the number of streamed chunks (one token each on these servers).

A command runs through the shell with the stage's model and endpoint in its environment; its
output goes to stderr, so the tool's stdout stays reserved for the run's data (tables, JSON).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.constants import CONNECT_TIMEOUT_S
from sourceprep_models.errors import ServerError, SourceprepError
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
        return {
            "prompt": self.prompt,
            "output": self.output,
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
    root = endpoint.url.rstrip("/")
    openai_base = root if endpoint.kind == "openai" or root.endswith("/v1") else f"{root}/v1"
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
    if endpoint.kind == "ollama":
        env["OLLAMA_HOST"] = root
    if endpoint.api_key_env and environ.get(endpoint.api_key_env):
        env["OPENAI_API_KEY"] = environ[endpoint.api_key_env]  # the child needs it; it is never printed
    return env


def run_command(command: str, env: Mapping[str, str], cwd: str | None = None) -> CommandResult:
    """Run ``command`` through the shell; its stdout and stderr both go to our stderr, line by line.

    Ctrl-C stops the command too (it shares the terminal's process group; otherwise it is killed)."""
    started = time.monotonic()
    process = subprocess.Popen(
        command, shell=True, env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            sys.stderr.write(raw.decode(errors="replace"))
            sys.stderr.flush()
        code = process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        if process.stdout is not None:
            process.stdout.close()
    return CommandResult(command=command, exit_code=code, seconds=time.monotonic() - started)


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
        root = endpoint.url.rstrip("/")
        if endpoint.kind == "ollama":
            self._base, self._path = root, "/api/generate"
        else:
            base = root if endpoint.kind == "openai" or root.endswith("/v1") else f"{root}/v1"
            self._base, self._path = base, "/chat/completions"
        if autoload and endpoint.kind == "llamacpp":
            # Load on demand even when the router runs with --no-models-autoload (real-engine.md §5).
            self._path += "?autoload=true"
        self._client = client or httpx.Client(
            base_url=self._base, timeout=httpx.Timeout(600.0, connect=CONNECT_TIMEOUT_S)
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
        body: dict[str, Any]
        if self.endpoint.kind == "ollama":
            merged = dict(options or {})
            merged["num_predict"] = max_tokens
            body = {"model": model, "prompt": prompt, "stream": True, "options": merged}
            if keep_alive is not None:
                body["keep_alive"] = keep_alive
        else:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "stream": True,
                "max_tokens": max_tokens,
                "stream_options": {"include_usage": True},
            }
        headers = {}
        variable = self.endpoint.api_key_env
        if variable and self._environ.get(variable):
            headers["Authorization"] = f"Bearer {self._environ[variable]}"
        where = f"{self.endpoint.kind} endpoint {self.endpoint.name!r} at {self.endpoint.url}"
        started = time.monotonic()
        first: float | None = None
        pieces: list[str] = []
        chunks = 0
        counted: int | None = None
        try:
            with self._client.stream("POST", self._path, json=body, headers=headers) as response:
                if not response.is_success:
                    response.read()
                    message = error_message(json_body(response)) or response.text.strip()[:200]
                    raise ServerError(
                        f"{where} answered {response.status_code} to a prompt for {model}: {message}",
                        response.status_code,
                    )
                for event in _events(response, ollama=self.endpoint.kind == "ollama"):
                    text, done_count = _piece(event, ollama=self.endpoint.kind == "ollama")
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


def _events(response: httpx.Response, *, ollama: bool) -> Iterator[dict[str, Any]]:
    """NDJSON lines (Ollama) or SSE ``data:`` lines (OpenAI), parsed; ``[DONE]`` ends the stream."""
    for line in response.iter_lines():
        line = line.strip()
        if not line:
            continue
        if not ollama:
            if not line.startswith("data:"):
                continue
            line = line[len("data:") :].strip()
            if line == "[DONE]":
                return
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            if "error" in event and not event.get("choices") and "response" not in event:
                raise SourceprepError(f"the server reported an error mid-answer: {error_message(event)}")
            yield event


def _piece(event: dict[str, Any], *, ollama: bool) -> tuple[str, int | None]:
    """The text an event carries, and the server's token count when it is the final event."""
    if ollama:
        text = event.get("response") or ""
        count = event.get("eval_count") if event.get("done") else None
        return (text if isinstance(text, str) else ""), (count if isinstance(count, int) else None)
    text = ""
    choices = event.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta") or {}
        if isinstance(delta, dict):
            content = delta.get("content") or delta.get("reasoning_content") or ""
            text = content if isinstance(content, str) else ""
    usage = event.get("usage")
    count = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return text, (count if isinstance(count, int) else None)


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
