"""A fake oMLX for the provider tests: models with their load state, a memory ceiling, pins and the
admin session.

Shapes of servers.md §5, checked against the server's source (``omlx/server.py``:
``/v1/models/status``, ``/v1/models/{id}/load|unload`` and OpenAI-style error bodies;
``omlx/admin/routes.py``: ``/admin/api/login`` and ``/admin/api/models/{id}/settings`` behind the
session cookie, FastAPI ``{"detail": …}`` errors; ``omlx/engine_pool.py``: ``get_status``).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

QWEN = "Qwen3-8B-MLX-4bit"
GEMMA = "gemma-3-12b-it-4bit"
EMBED = "bge-m3-mlx-fp16"
PROFILE = "qwen3-8b-fast"  # an exposed settings profile of QWEN
MARKITDOWN = "markitdown"
GB = 1_000_000_000

Reply = tuple[int, Any, dict[str, str]]
_MODEL_ROUTE = re.compile(r"^/(v1|admin/api)/models/([^/]+)/(load|unload|settings)$")


def error_body(message: str, kind: str, **extra: Any) -> dict[str, Any]:
    """What /v1 routes answer on an error (omlx/server.py ``_openai_error_body``)."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None, **extra}}


@dataclass
class FakeOMLX:
    """A tiny oMLX: models with their load state, a memory ceiling, the admin session, and the requests.

    ``load_route=False`` is a server from before PR #998 (no ``/v1/models/{id}/load``: FastAPI's
    generic 404); ``memory_guard=False`` reports the older pool shape (``max_model_memory``, no
    ``final_ceiling`` / ``actual_size`` / ``max_context_window``), servers.md §5.
    """

    loaded: set[str] = field(default_factory=set)
    loading: set[str] = field(default_factory=set)
    pinned: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)  # serving requests: unload refused (409 model_busy)
    # Requests in flight per model, for this many more reads of /api/status (which sums them over the server).
    in_flight: dict[str, int] = field(default_factory=dict)
    status_summary: bool = True  # GET /api/status
    context: dict[str, int] = field(default_factory=dict)  # per-model max_context_window settings
    ceiling: int = 20 * GB
    load_route: bool = True
    memory_guard: bool = True
    api_key: str | None = None  # the server's main key
    sub_keys: tuple[str, ...] = ()  # accepted by /v1 routes, refused by the admin login
    admin_open: bool = False  # skip_api_key_verification: admin routes need no session
    extras: bool = False  # list the built-in MarkItDown and an exposed profile too
    sessions: set[str] = field(default_factory=set)
    overrides: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any, dict[str, str]]] = field(default_factory=list)

    catalogue: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            QWEN: {"size": 4_600_000_000, "model_type": "llm", "config_model_type": "qwen3", "native": 40960},
            GEMMA: {"size": 7_800_000_000, "model_type": "vlm", "config_model_type": "gemma3", "native": 131072},
            EMBED: {"size": 1_200_000_000, "model_type": "embedding", "config_model_type": "xlm-roberta"},
        }
    )

    def actual(self, model_id: str) -> int:
        return int(self.catalogue[model_id]["size"] * 1.04)

    def status(self) -> dict[str, Any]:
        models = []
        for model_id, spec in sorted(self.catalogue.items()):
            loaded = model_id in self.loaded
            item: dict[str, Any] = {
                "id": model_id,
                "model_path": f"/Users/me/.omlx/models/{model_id}",
                "loaded": loaded,
                "is_loading": model_id in self.loading,
                "estimated_size": spec["size"],
                "pinned": model_id in self.pinned,
                "engine_type": "embedding" if spec["model_type"] == "embedding" else "batched",
                "model_type": spec["model_type"],
                "config_model_type": spec["config_model_type"],
                "last_access": 1_780_000_000.5 if loaded else None,
            }
            if self.memory_guard:
                item["actual_size"] = self.actual(model_id) if loaded else None
                item["loading_started_at"] = None
                item["model_context_length"] = spec.get("native")
                item["max_context_window"] = self.context.get(model_id, 32768)
                item["max_tokens"] = 32768
            models.append(item)
        if self.extras:
            source = next(m for m in models if m["id"] == QWEN)
            models.append({**source, "id": PROFILE, "source_model_id": QWEN, "profile_name": "fast"})
            models.append(
                {"id": MARKITDOWN, "model_path": "builtin://markitdown", "loaded": True, "is_loading": False,
                 "estimated_size": 0, "actual_size": 0, "pinned": False, "engine_type": "markitdown",
                 "model_type": "markitdown", "max_context_window": None, "max_tokens": None}
            )  # fmt: skip
        used = sum(self.actual(m) for m in self.loaded)
        pool: dict[str, Any] = {"current_model_memory": used, "model_count": len(models)}
        pool["loaded_count"] = len(self.loaded)
        if self.memory_guard:
            pool["final_ceiling"] = self.ceiling
        else:
            pool["max_model_memory"] = self.ceiling
        return {**pool, "models": models}

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Reply:
        self.requests.append((method, path, body, headers))
        if (method, path) in self.overrides:
            status, payload = self.overrides[(method, path)]
            return status, payload, {}
        if path.startswith("/v1/") and self.api_key:  # verify_api_key
            given = headers.get("authorization", "")
            if not given:
                return 401, error_body("API key required", "authentication_error"), {}
            if given not in {f"Bearer {key}" for key in (self.api_key, *self.sub_keys)}:
                return 401, error_body("Invalid API key", "authentication_error"), {}
        if (method, path) == ("GET", "/v1/models/status"):
            return 200, self.status(), {}
        if (method, path) == ("GET", "/api/status") and self.status_summary:
            return 200, self.summary(), {}
        if (method, path) == ("POST", "/admin/api/login"):
            return self.login(body)
        route = _MODEL_ROUTE.match(path)
        if route is None:
            return 404, {"detail": "Not Found"}, {}  # FastAPI's answer for a route it does not have
        prefix, model_id, action = route.group(1), unquote(route.group(2)), route.group(3)
        if (prefix, action, method) == ("v1", "load", "POST") and self.load_route:
            return self.load(model_id)
        if (prefix, action, method) == ("v1", "unload", "POST"):
            return self.unload(model_id)
        if (prefix, action, method) == ("admin/api", "settings", "PUT"):
            return self.settings(model_id, headers, body)
        return 404, {"detail": "Not Found"}, {}

    def load(self, model_id: str) -> Reply:
        if model_id not in self.catalogue:
            return 404, error_body(f"Model not found: {model_id}", "not_found_error"), {}
        if model_id in self.loaded:
            return 200, {"status": "ok", "model_id": model_id, "message": f"Already loaded: {model_id}"}, {}
        if model_id in self.loading:
            return 409, error_body(f"Model '{model_id}' is already being loaded", "invalid_request_error"), {}
        used = sum(self.actual(m) for m in self.loaded)
        size = self.catalogue[model_id]["size"]
        if used + size > self.ceiling:
            text = (
                f"Model '{model_id}' ({size / GB:.2f}GB) does not fit under the memory ceiling "
                f"({self.ceiling / GB:.2f}GB). Free system memory or raise memory_guard_tier "
                "(safe → balanced → aggressive)."
            )
            return 507, error_body(text, "server_error"), {}
        self.loaded.add(model_id)
        return 200, {"status": "ok", "model_id": model_id, "message": f"Loaded {model_id}"}, {}

    def unload(self, model_id: str) -> Reply:
        if model_id not in self.catalogue:
            return 404, error_body(f"Model not found: {model_id}", "not_found_error"), {}
        if model_id not in self.loaded:
            return 400, error_body(f"Model not loaded: {model_id}", "invalid_request_error"), {}
        if model_id in self.busy or self.in_flight.get(model_id, 0) > 0:
            text = f"Model '{model_id}' is busy; cannot unload until active requests finish or are aborted"
            return 409, error_body(text, "model_busy", model_id=model_id), {}
        self.loaded.discard(model_id)
        return 200, {"status": "ok", "model_id": model_id}, {}

    def summary(self) -> dict[str, Any]:
        """``GET /api/status`` (omlx/server.py ``server_status``): requests summed over every loaded engine."""
        active = sum(1 for model, left in self.in_flight.items() if left > 0 and model in self.loaded)
        self.in_flight = {model: max(0, left - 1) for model, left in self.in_flight.items()}
        return {"status": "ok", "version": "0.4.5", "models_loaded": len(self.loaded),
                "models_loading": len(self.loading), "active_requests": active, "waiting_requests": 0}  # fmt: skip

    def login(self, body: Any) -> Reply:
        if not self.api_key:
            return 400, {"detail": "No API key configured. Please set up an API key first."}, {}
        if not isinstance(body, dict) or body.get("api_key") != self.api_key:
            return 401, {"detail": "Invalid API key"}, {}
        token = secrets.token_urlsafe(16)
        self.sessions.add(token)
        cookie = f"omlx_admin_session={token}; HttpOnly; Max-Age=86400; Path=/; SameSite=lax"
        return 200, {"success": True}, {"set-cookie": cookie}

    def settings(self, model_id: str, headers: dict[str, str], body: Any) -> Reply:
        cookie = headers.get("cookie", "")
        token = cookie.split("omlx_admin_session=", 1)[1].split(";")[0] if "omlx_admin_session=" in cookie else ""
        if not self.admin_open and token not in self.sessions:  # require_admin: the session cookie only
            return 401, {"detail": "Admin authentication required"}, {"www-authenticate": "Cookie"}
        if model_id not in self.catalogue:
            return 404, {"detail": f"Model not found: {model_id}"}, {}
        if "is_pinned" in body:
            (self.pinned.add if body["is_pinned"] else self.pinned.discard)(model_id)
        if "max_context_window" in body:
            self.context[model_id] = body["max_context_window"]
        settings = {"is_pinned": model_id in self.pinned, "max_context_window": self.context.get(model_id)}
        reply = {"success": True, "model_id": model_id, "settings": settings, "model_type": "llm",
                 "engine_type": "batched", "requires_reload": False, "auto_unloaded": False,
                 "auto_reloaded": False}  # fmt: skip
        return 200, reply, {}

    def sent(self, method: str, path: str) -> list[Any]:
        return [body for m, p, body, _ in self.requests if (m, p) == (method, path)]

    def paths(self, method: str) -> list[str]:
        return [p for m, p, _, _ in self.requests if m == method]

    # -- as an httpx transport and as a loopback handler ---------------------------------------------

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content) if request.content else None
            headers = {k.lower(): v for k, v in request.headers.items()}
            status, payload, extra = self.handle(request.method, request.url.path, headers, body)
            if isinstance(payload, str):
                return httpx.Response(status, text=payload, headers=extra)
            return httpx.Response(status, json=payload, headers=extra)

        return httpx.MockTransport(handler)

    def loopback(self, request: Any) -> tuple[int, Any]:
        status, payload, _ = self.handle(request.method, request.path, request.headers, request.body)
        return status, payload
