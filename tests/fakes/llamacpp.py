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
from urllib.parse import parse_qs, urlsplit

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


def entry(model_id: str, value: str = "unloaded", size: int = 547072, **status: Any) -> dict[str, Any]:
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
        item["meta"] = {"n_ctx": 512, "n_ctx_train": 2048, "size": size, "ftype": "all F32"}
    return item


@dataclass
class FakeLlamaRouter:
    """The router's models by id with their status, and every request it received."""

    models: dict[str, str] = field(default_factory=lambda: {"tiny-a": "unloaded", "tiny-b": "unloaded"})
    requests: list[tuple[str, str]] = field(default_factory=list)
    # Requests in flight per model (one slot each, ``is_processing`` true); each ends after one GET /slots.
    busy: dict[str, int] = field(default_factory=dict)
    # Extra listings a model stays "loading" for (another client's slow load).
    loading_for: dict[str, int] = field(default_factory=dict)
    max_instances: int = 2  # --models-max
    sizes: dict[str, int] = field(default_factory=dict)  # the listing's meta.size of a loaded model (bytes)
    # Models unloaded while still loading (the router kills the child) or while serving (the request dies).
    cut_off: list[str] = field(default_factory=list)

    def handle(self, method: str, path: str, body: Any) -> Reply:
        self.requests.append((method, path))
        url = urlsplit(path)
        path = url.path
        if (method, path) == ("GET", "/slots"):
            # Proxied to the model's child (server.cpp: routes.get_slots = proxy_get); 400 when not running.
            [child] = parse_qs(url.query).get("model", [""])
            if self.models.get(child) != "loaded":
                return 400, error_body(400, "model is not loaded")
            running = self.busy.get(child, 0)
            self.busy[child] = max(0, running - 1)
            return 200, [{"id": 0, "n_ctx": 512, "speculative": False, "is_processing": running > 0}]
        if (method, path) == ("GET", "/props"):
            return 200, {**ROUTER_PROPS, "max_instances": self.max_instances}
        if (method, path) == ("GET", "/models"):
            listing = [entry(m, value, self.sizes.get(m, 547072)) for m, value in self.models.items()]
            # A child reports ready a moment after it was spawned: one listing later here.
            for model_id, value in self.models.items():
                if value == "loading" and self.loading_for.get(model_id, 0) > 0:
                    self.loading_for[model_id] -= 1
                elif value == "loading":
                    self.models[model_id] = "loaded"
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
            if self.models[model] == "loading" or self.busy.get(model, 0) > 0:
                self.cut_off.append(model)
            self.models[model] = "unloaded"
            return 200, {"success": True}
        return 404, error_body(404, "File Not Found", "not_found_error")

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content) if request.content else None
            status, payload = self.handle(request.method, request.url.raw_path.decode(), body)
            return httpx.Response(status, json=payload)

        return httpx.MockTransport(handler)
