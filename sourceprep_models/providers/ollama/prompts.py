"""Prompts in Ollama's own dialect, so that they hit the instance the executor loaded.

``POST /api/generate`` with ``stream: true`` and the model's exact ``options`` and ``keep_alive``: a
request with another ``num_ctx`` would reload the model (ollama.md §4.7) and a finite keep_alive
would replace a pin's "forever" (§3.2). The answer is NDJSON; the final event carries the server's
own token count (``eval_count``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from sourceprep_models.providers.prompts import PromptProtocol, parse_event


class OllamaGenerate(PromptProtocol):
    def __init__(self, base_url: str) -> None:
        super().__init__(base_url, "/api/generate")

    def body(
        self, model: str, prompt: str, *, max_tokens: int, options: Mapping[str, object], keep_alive: float | None
    ) -> dict[str, Any]:
        merged = dict(options)
        merged["num_predict"] = max_tokens
        body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": True, "options": merged}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        return body

    def events(self, lines: Iterable[str]) -> Iterator[dict[str, Any]]:
        for line in lines:
            line = line.strip()
            if not line:
                continue
            event = parse_event(line)
            if event is not None:
                yield event

    # ollama.md §2.7 (server/routes.go EmbedHandler): the same options and keep_alive as a load, so the
    # call hits the instance the executor loaded instead of reloading it.
    embed_path = "/api/embed"

    def embed_body(
        self, model: str, text: str, *, options: Mapping[str, object], keep_alive: float | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "input": text, "options": dict(options)}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        return body

    def piece(self, event: Mapping[str, Any]) -> tuple[str, int | None]:
        text = event.get("response") or ""
        count = event.get("eval_count") if event.get("done") else None
        return (text if isinstance(text, str) else ""), (count if isinstance(count, int) else None)
