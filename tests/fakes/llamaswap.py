"""A fake llama-swap for the provider tests: its config's models, the processes it runs, old builds.

Routes and bodies as servers.md §3.3 records them from llama-swap's source: ``/running`` entries
``{model, state, cmd, …}``, the UI's ``/api/events`` stream whose ``modelStatus`` event carries the
config's models, JSON errors ``{"src": "llama-swap", "error": …}``, plain-text ``OK`` from the
unloads, and a bare 404 for a route a build does not have.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

QWEN = "qwen3-8b"
GEMMA = "google/gemma-3-4b"  # a slash in the id, as llama-swap allows (findModelInPath)
EMBED = "nomic-embed"
DRAFT = "qwen3-0.6b-draft"  # unlisted: hidden from /v1/models, still loadable
BROKEN = "llama-70b"  # its cmd exits at once
PEER = "remote-70b"  # served by a peer llama-swap on another host

Reply = tuple[int, Any]


def _models() -> dict[str, dict[str, Any]]:
    return {
        QWEN: {"aliases": ["gpt-4o-mini"], "cmd": "llama-server --port 5801 -m /m/qwen3-8b.gguf --ctx-size 16384"},
        GEMMA: {"cmd": "llama-server --port 5802 -m /m/gemma-3-4b.gguf -c 8192", "health": "missing"},
        EMBED: {"aliases": ["embedder"], "cmd": "llama-server --port 5803 -m /m/nomic.gguf --embedding"},
        DRAFT: {"unlisted": True, "cmd": "vllm serve Qwen/Qwen3-0.6B --port 5804 --max-model-len 4096"},
        BROKEN: {"cmd": "llama-server --port 5805 -m /m/missing.gguf", "health": "fails"},
    }


@dataclass
class FakeLlamaSwap:
    """A tiny llama-swap: the models of its config.yaml, the processes it runs, the requests it received."""

    models: dict[str, dict[str, Any]] = field(default_factory=_models)
    peers: dict[str, list[str]] = field(default_factory=lambda: {"cloud": [PEER]})
    # A persistent group (servers.md §3.2): a swap never stops its members, and no API says so.
    persistent: set[str] = field(default_factory=lambda: {EMBED})
    running: dict[str, str] = field(default_factory=dict)  # id -> starting | ready | stopping
    events: bool = True  # GET /api/events (the web UI's stream)
    event_aliases: bool = True  # its modelStatus entries list "aliases" (newer builds)
    aliases_in_list: bool = False  # includeAliasesInList: /v1/models lists aliases as models
    unload_one: bool = True  # POST /api/models/unload/<model> (v161+)
    api_group: bool = True  # /api/* at all (builds before the React UI have only GET /unload)
    api_key: str | None = None
    # Requests in flight per model (one each), for this many more reads of /api/events.
    in_flight: dict[str, int] = field(default_factory=dict)
    # The inflight event: "snapshot" per request (since #790), "total" over all models (#516), "none" (older).
    inflight_event: str = "snapshot"
    # Models stopped while starting or serving (llama-swap's explicit unload does not wait: fifo.go OnUnload).
    cut_off: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    read_timeouts: dict[str, float | None] = field(default_factory=dict)
    overrides: dict[tuple[str, str], Reply] = field(default_factory=dict)

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str]) -> Reply:
        path = unquote(raw_path.split("?", 1)[0])
        self.requests.append((method, path))
        if (method, path) in self.overrides:
            return self.overrides[(method, path)]
        if self.api_key and path != "/health" and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, error_body("unauthorized: invalid or missing API key")
        if path.startswith("/api/") and not self.api_group:
            return 404, None
        if (method, path) == ("GET", "/running"):
            running = [
                {"model": m, "state": s, "cmd": self.models[m]["cmd"], "proxy": "http://127.0.0.1:5800", "ttl": 0,
                 "name": "", "description": ""}
                for m, s in sorted(self.running.items())
            ]  # fmt: skip
            return 200, {"running": running}
        if (method, path) == ("GET", "/v1/models"):
            return 200, {"object": "list", "data": self._listing()}
        if (method, path) == ("GET", "/api/events"):
            if not self.events:
                return 404, None
            logs = {"type": "logData", "data": json.dumps({"source": "proxy", "data": "[INFO] listening on :8080\n"})}
            table = {"type": "modelStatus", "data": json.dumps(self._table())}
            events = [logs, table] + ([] if self.inflight_event == "none" else [self._inflight()])
            return 200, "".join(f"event:message\ndata:{json.dumps(event)}\n\n" for event in events)
        if method == "GET" and path.startswith("/upstream/"):
            return self._upstream(path.removeprefix("/upstream/"))
        if (method, path) == ("POST", "/api/models/unload"):
            self.running.clear()
            return 200, {"msg": "ok"}
        if method == "POST" and path.startswith("/api/models/unload/"):
            if not self.unload_one:
                return 404, None  # gin's NoRoute on builds before v161
            model = self._real(path.removeprefix("/api/models/unload/"))
            if model is None:
                return 404, error_body("model not found")
            if self.running.get(model) == "starting" or self.in_flight.get(model, 0) > 0:
                self.cut_off.append(model)
            self.running.pop(model, None)
            return 200, "OK"
        if (method, path) == ("GET", "/unload"):
            self.running.clear()
            return 200, "OK"
        return 404, None

    def _inflight(self) -> dict[str, str]:
        """The inflight event sent at connect (apigroup.go handleAPIEvents); a request ends after it."""
        requests = [model for model, left in sorted(self.in_flight.items()) if left > 0]
        self.in_flight = {model: max(0, left - 1) for model, left in self.in_flight.items()}
        if self.inflight_event == "total":
            return {"type": "inflight", "data": json.dumps({"total": len(requests)})}
        entries = [{"id": str(i), "model": model, "req_path": "/v1/chat/completions", "method": "POST",
                    "resp_bytes": 0, "elapsed_ms": 10} for i, model in enumerate(requests, 1)]  # fmt: skip
        return {"type": "inflight", "data": json.dumps({"operation": "snapshot", "requests": entries})}

    def _upstream(self, rest: str) -> Reply:
        parts = rest.split("/")
        # The shortest run of leading segments that names a model (llama-swap's findModelInPath).
        found = next(
            ((model, i) for i in range(1, len(parts) + 1) if (model := self._real("/".join(parts[:i]))) is not None),
            None,
        )
        if found is None:
            return 404, error_body("model not found")
        model, used = found
        upstream_path = "/" + "/".join(parts[used:])
        spec = self.models[model]
        if spec.get("health") == "fails":
            return 502, "unable to start process: upstream command exited prematurely but successfully"
        for other in list(self.running):  # the default group: one model at a time, persistent ones stay
            if other != model and other not in self.persistent:
                del self.running[other]
        self.running[model] = "ready"
        if upstream_path != "/health" or spec.get("health") == "missing":
            return 404, "Not Found"  # the model server's own answer, proxied
        return 200, {"status": "ok"}

    def _real(self, name: str) -> str | None:
        if name in self.models:
            return name
        return next((m for m, spec in self.models.items() if name in spec.get("aliases", [])), None)

    def _table(self) -> list[dict[str, Any]]:
        table = []
        for model, spec in sorted(self.models.items()):
            entry = {"id": model, "name": "", "description": "", "state": self.running.get(model, "stopped"),
                     "unlisted": bool(spec.get("unlisted")), "peerID": ""}  # fmt: skip
            if self.event_aliases:
                entry["aliases"] = spec.get("aliases", [])
            table.append(entry)
        table += [{"id": m, "peerID": peer} for peer, models in self.peers.items() for m in models]
        return table

    def _listing(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = []
        for model, spec in sorted(self.models.items()):
            if spec.get("unlisted"):
                continue
            ids = [model] + (spec.get("aliases", []) if self.aliases_in_list else [])
            data += [{"id": i, "object": "model", "created": 1760000000, "owned_by": "llama-swap"} for i in ids]
        for peer, models in self.peers.items():
            data += [
                {"id": m, "object": "model", "created": 1760000000, "owned_by": "llama-swap", "name": f"{peer}: {m}",
                 "meta": {"llamaswap": {"peerID": peer}}}
                for m in models
            ]  # fmt: skip
        return data

    def sent(self, method: str, prefix: str) -> list[str]:
        return [path for m, path in self.requests if m == method and path.startswith(prefix)]

    # -- as an httpx transport -------------------------------------------------------------------

    def transport(self, fail: Mapping[str, Exception] | None = None) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            path = request.url.raw_path.decode()
            self.read_timeouts[unquote(path)] = request.extensions.get("timeout", {}).get("read")
            if fail and unquote(path) in fail:
                self.requests.append((request.method, unquote(path)))
                raise fail[unquote(path)]
            status, payload = self.handle(request.method, path, {k.lower(): v for k, v in request.headers.items()})
            if payload is None:
                return httpx.Response(status)
            if isinstance(payload, str):
                return httpx.Response(status, text=payload)
            return httpx.Response(status, json=payload)

        return httpx.MockTransport(handler)


def error_body(message: str) -> dict[str, str]:
    return {"src": "llama-swap", "error": message}
