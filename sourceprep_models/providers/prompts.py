"""How a prompt goes over the wire to a server and how its streamed answer comes back.

Most servers (LM Studio, llama-server, llama-swap, vLLM, oMLX and cloud APIs) serve the OpenAI
``POST {base}/chat/completions`` stream (server-sent ``data:`` lines ending in ``[DONE]``, the token
count in the final ``usage``); a server with a dialect of its own subclasses ``PromptProtocol``
(Ollama: ``providers.ollama.prompts``). The pipeline's prompt client owns the HTTP client, the
timing and the errors; a protocol only builds bodies and reads events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any


class PromptProtocol:
    """One dialect: where prompts go (``base_url`` + ``path``), their bodies, and the streamed events."""

    def __init__(self, base_url: str, path: str) -> None:
        self.base_url = base_url
        self.path = path

    def body(
        self, model: str, prompt: str, *, max_tokens: int, options: Mapping[str, object], keep_alive: float | None
    ) -> dict[str, Any]:
        raise NotImplementedError

    def events(self, lines: Iterable[str]) -> Iterator[dict[str, Any]]:
        """The stream's JSON events, in order (the caller checks each for an error reported mid-answer)."""
        raise NotImplementedError

    def piece(self, event: Mapping[str, Any]) -> tuple[str, int | None]:
        """The text an event carries, and the server's token count when it is the final event."""
        raise NotImplementedError

    def reports_error(self, event: Mapping[str, Any]) -> bool:
        """An event that reports an error instead of carrying any part of the answer."""
        return "error" in event and not event.get("choices") and "response" not in event

    # An embedding-only model has no generate or chat route: it answers the embedding call, relative to
    # ``base_url`` (OpenAI ``POST /v1/embeddings``, one JSON answer, no stream).
    embed_path = "/embeddings"

    def embed_body(
        self, model: str, text: str, *, options: Mapping[str, object], keep_alive: float | None
    ) -> dict[str, Any]:
        return {"model": model, "input": [text]}


def parse_event(line: str) -> dict[str, Any] | None:
    """One JSON event of a stream (None when the line is not a JSON object)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class ChatCompletions(PromptProtocol):
    """The OpenAI chat/completions stream."""

    def __init__(self, base_url: str, path: str = "/chat/completions") -> None:
        super().__init__(base_url, path)

    def body(
        self, model: str, prompt: str, *, max_tokens: int, options: Mapping[str, object], keep_alive: float | None
    ) -> dict[str, Any]:
        # The OpenAI protocol has no runner options or keep-alive: the server's own settings apply.
        return {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "max_tokens": max_tokens,
            "stream_options": {"include_usage": True},
        }

    def events(self, lines: Iterable[str]) -> Iterator[dict[str, Any]]:
        for line in lines:
            line = line.strip()
            if not line.startswith("data:"):
                continue
            line = line[len("data:") :].strip()
            if line == "[DONE]":
                return
            event = parse_event(line)
            if event is not None:
                yield event

    def piece(self, event: Mapping[str, Any]) -> tuple[str, int | None]:
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
