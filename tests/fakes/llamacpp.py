"""A fake llama-server in router mode, for where no real binary is installed (the real one runs in
tests/test_llamacpp_real.py and, when present, in the provider contract test).

Shapes are the ones recorded from a real router in real-engine.md §5 and servers.md §2.2: ``/props``
says ``"role": "router"``, ``GET /models`` lists every model with ``status.value``, ``POST
/models/load`` answers ``{"success": true}`` once the child is spawned (the model is ``loading``
until the next listing), ``POST /models/unload`` frees it at once, and the errors are OpenAI-style.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

ROUTER_PROPS = {
    "role": "router",
    "max_instances": 2,
    "models_autoload": False,
    "model_alias": "llama-server",
    "model_path": "none",
    "default_generation_settings": {"params": None, "n_ctx": 0},
    "build_info": "b1-0c1e570",
}
Reply = tuple[int, Any]


def error_body(code: int, message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "type": kind}}


NOT_RUNNING = error_body(400, "model is not running")


def entry(model_id: str, value: str = "unloaded", **status: Any) -> dict[str, Any]:
    """One item of GET /models as a real router lists it (real-engine.md §5)."""
    item: dict[str, Any] = {
        "id": model_id,
        "aliases": [],
        "tags": [],
        "object": "model",
        "owned_by": "llamacpp",
        "status": {"value": value, "args": ["llama-server", "--model", f"/models/{model_id}.gguf"], **status},
    }
    if value == "loaded":
        item["meta"] = {"n_ctx": 512, "n_ctx_train": 2048, "size": 547072, "ftype": "all F32"}
    return item


@dataclass
class FakeLlamaRouter:
    """The router's models by id with their status, and every request it received."""

    models: dict[str, str] = field(default_factory=lambda: {"tiny-a": "unloaded", "tiny-b": "unloaded"})
    requests: list[tuple[str, str]] = field(default_factory=list)

    def handle(self, method: str, path: str, body: Any) -> Reply:
        self.requests.append((method, path))
        if (method, path) == ("GET", "/props"):
            return 200, ROUTER_PROPS
        if (method, path) == ("GET", "/models"):
            listing = [entry(model_id, value) for model_id, value in self.models.items()]
            # A child reports ready a moment after it was spawned: one listing later here.
            self.models = {model_id: "loaded" if v == "loading" else v for model_id, v in self.models.items()}
            return 200, {"data": listing, "object": "list"}
        model = body.get("model") if isinstance(body, dict) else None
        if (method, path) == ("POST", "/models/load"):
            if model not in self.models:
                return 404, error_body(404, "model not found", "not_found_error")
            if self.models[model] != "unloaded":
                return 400, error_body(400, "model is already running")
            self.models[model] = "loading"
            return 200, {"success": True}
        if (method, path) == ("POST", "/models/unload"):
            if model not in self.models:
                return 400, error_body(400, "model is not found")
            if self.models[model] == "unloaded":
                return 400, NOT_RUNNING
            self.models[model] = "unloaded"
            return 200, {"success": True}
        return 404, error_body(404, "File Not Found", "not_found_error")

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content) if request.content else None
            status, payload = self.handle(request.method, request.url.path, body)
            return httpx.Response(status, json=payload)

        return httpx.MockTransport(handler)
