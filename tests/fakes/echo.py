"""A server that repeats the request it was sent (headers and body, so the API key too) in its replies:
what an authenticating proxy in front of a model server does when it quotes the failed request in its
error bodies, and what a misbehaving model does when it repeats its input.

Served through ``tests.loopback.serve`` (``EchoServer.handle``), on a real socket, so every provider
kind can be pointed at it by url. Two modes:

- alone (``upstream=None``): every request is answered with an error quoting it, in one wire shape
  (``SHAPES``): Ollama's ``{"error": "…"}`` (ollama.md §2.10), the OpenAI error object
  ``{"error": {"message", "type", "code"}}`` that LM Studio, llama-server, vLLM, llama-swap and oMLX
  answer in, a proxy's text/plain page, or a 200 whose JSON is not the server's shape at all;
- in front of a working fake (``upstream``): requests go through to it (without the key), its errors
  come back quoting the request in the same shapes, and a streamed prompt is answered by the proxy
  itself with the quoted request as the model's text (Ollama NDJSON for ``/api/generate``, OpenAI
  server-sent events for ``…/chat/completions``), so the quote reaches the prompt outputs file; or,
  with ``answer_prompts=False``, refused with the quote, so a run stops mid-stage and saves the error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from tests.loopback import Handle, Reply, Request

SHAPES = ("ollama", "openai", "plain", "unexpected")


def quote(request: Request) -> str:
    """The request as the proxy quotes it: the headers first, so a cut after 80 characters still holds the key."""
    auth = request.headers.get("authorization", "")
    others = {name: value for name, value in request.headers.items() if name != "authorization"}
    return f"authorization: {auth}; {request.method} {request.path}; headers {others}; body {request.body!r}"


def error_reply(shape: str, message: str) -> Reply:
    if shape == "ollama":
        return 400, {"error": message}
    if shape == "openai":
        return 401, {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}
    if shape == "plain":
        return 502, f"proxy error: {message}"
    if shape == "unexpected":
        return 200, {"echo": message}
    raise ValueError(f"unknown echo shape {shape!r}")


def streamed_answer(request: Request, text: str) -> Reply:
    """A successful streamed answer whose text is ``text``, in the dialect of the prompt's path."""
    if request.path.endswith("/api/generate"):
        events = [{"response": text, "done": False}, {"response": "", "done": True, "eval_count": 1}]
        return 200, "".join(json.dumps(event) + "\n" for event in events)
    chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
    usage = {"choices": [], "usage": {"completion_tokens": 1}}
    return 200, f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n"


def is_prompt(request: Request) -> bool:
    body = request.body
    return (
        request.method == "POST"
        and isinstance(body, dict)
        and body.get("stream") is True
        and (bool(body.get("prompt")) or bool(body.get("messages")))
    )


@dataclass
class EchoServer:
    shape: str
    upstream: Handle | None = None
    answer_prompts: bool = True  # False: a prompt is refused with the quote, after the load went through

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown echo shape {self.shape!r}; one of {SHAPES}")
        self.requests: list[Request] = []

    def handle(self, request: Request) -> Reply:
        self.requests.append(request)
        if self.upstream is None:
            return error_reply(self.shape, quote(request))
        if is_prompt(request):
            return (
                streamed_answer(request, quote(request))
                if self.answer_prompts
                else error_reply(self.shape, quote(request))
            )
        headers = {name: value for name, value in request.headers.items() if name != "authorization"}
        status, payload = self.upstream(Request(request.method, request.path, headers, request.body))
        if status >= 400:
            return error_reply(self.shape, f"upstream said {payload!r} to {quote(request)}")
        return status, payload


def forward(url: str) -> Handle:
    """A ``Handle`` that passes requests on to a server at ``url`` (the Ollama emulator runs its own socket)."""

    def handle(request: Request) -> Reply:
        body = None if request.body is None else json.dumps(request.body)
        reply = httpx.request(request.method, url + request.path, content=body, timeout=30.0)
        if reply.headers.get("content-type", "").startswith("application/json"):
            return reply.status_code, reply.json()
        return reply.status_code, reply.text

    return handle
