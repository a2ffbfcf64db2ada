"""A fake LM Studio for the provider tests: REST v1 and v0 listings, load and unload by instance id.

It answers with the JSON shapes documented for LM Studio's REST API (servers.md §1.2 for v0, §1.3 for
v1); like the real server it answers unknown routes with 200 and an error body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

QWEN = "qwen/qwen3-8b"
GEMMA = "google/gemma-3-4b"
EMBED = "text-embedding-nomic-embed-text-v1.5"

Reply = tuple[int, Any]


@dataclass
class FakeLMStudio:
    """A tiny LM Studio: a model catalogue, loaded instances, and the requests it received."""

    v1: bool = True  # False = a 0.3.x server: v0 only, v1 routes are "unexpected" (200 anyway)
    v1_missing_status: int = 200  # what an old server answers to /api/v1/*: 200 (+ error body) or 404
    instances: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # key -> [(id, ctx)]
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    overrides: dict[tuple[str, str], Reply] = field(default_factory=dict)
    next_ids: dict[str, int] = field(default_factory=dict)

    catalogue: tuple[dict[str, Any], ...] = (
        {"type": "llm", "publisher": "qwen", "key": QWEN, "display_name": "Qwen3 8B", "architecture": "qwen3",
         "quantization": {"name": "Q4_K_M", "bits_per_weight": 4.5}, "size_bytes": 5_027_784_224,
         "params_string": "8B", "max_context_length": 40960, "format": "gguf",
         "capabilities": {"vision": False, "trained_for_tool_use": True}},
        {"type": "llm", "publisher": "google", "key": GEMMA, "display_name": "Gemma 3 4B", "architecture": "gemma3",
         "quantization": {"name": "Q4_K_M", "bits_per_weight": 4.5}, "size_bytes": 3_340_000_000,
         "params_string": "4B", "max_context_length": 131072, "format": "gguf",
         "capabilities": {"vision": True, "trained_for_tool_use": False}},
        {"type": "embedding", "publisher": "nomic-ai", "key": EMBED, "display_name": "Nomic Embed Text v1.5",
         "architecture": "nomic-bert", "quantization": {"name": "Q4_K_M", "bits_per_weight": 4.5},
         "size_bytes": 84_106_624, "params_string": None, "max_context_length": 2048, "format": "gguf"},
    )  # fmt: skip

    def handle(self, method: str, path: str, body: Any) -> Reply:
        self.requests.append((method, path, body))
        if (method, path) in self.overrides:
            return self.overrides[(method, path)]
        if path.startswith("/api/v1/") and not self.v1:
            # What a server without the route does (servers.md §1.3: "Returning 200 anyway").
            return self.v1_missing_status, {"error": f"Unexpected endpoint or method. ({method} {path})"}
        if (method, path) == ("GET", "/api/v1/models"):
            models = []
            for entry in self.catalogue:
                loaded = [
                    {"id": iid, "config": {"context_length": ctx, "eval_batch_size": 512, "parallel": 4,
                                           "flash_attention": True, "num_experts": 0,
                                           "offload_kv_cache_to_gpu": True}}
                    for iid, ctx in self.instances.get(entry["key"], [])
                ]  # fmt: skip
                models.append({**entry, "loaded_instances": loaded, "variants": [], "selected_variant": None})
            return 200, {"models": models}
        if (method, path) == ("GET", "/api/v0/models"):
            data = [
                {"id": e["key"], "object": "model", "type": "embeddings" if e["type"] == "embedding" else "llm",
                 "publisher": e["publisher"], "arch": e["architecture"], "compatibility_type": "gguf",
                 "quantization": e["quantization"]["name"],
                 "state": "loaded" if self.instances.get(e["key"]) else "not-loaded",
                 "max_context_length": e["max_context_length"]}
                for e in self.catalogue
            ]  # fmt: skip
            return 200, {"object": "list", "data": data}
        if (method, path) == ("POST", "/api/v1/models/load"):
            key = body["model"]
            found = next((e for e in self.catalogue if e["key"] == key), None)
            if found is None:
                return 404, {"error": {"type": "model_not_found", "message": f"Model '{key}' not found"}}
            n = self.next_ids.get(key, 0)
            self.next_ids[key] = n + 1
            instance_id = key if n == 0 else f"{key}:{n + 1}"
            self.instances.setdefault(key, []).append((instance_id, body.get("context_length", 4096)))
            return 200, {
                "type": found["type"],
                "instance_id": instance_id,
                "load_time_seconds": 2.5,
                "status": "loaded",
            }
        if (method, path) == ("POST", "/api/v1/models/unload"):
            wanted = body["instance_id"]
            for key, instances in self.instances.items():
                if any(iid == wanted for iid, _ in instances):
                    self.instances[key] = [item for item in instances if item[0] != wanted]
                    return 200, {"instance_id": wanted}
            return 404, {"error": f"No model instance with id '{wanted}'"}
        return 200, {"error": f"Unexpected endpoint or method. ({method} {path})"}

    def posted(self, path: str) -> list[Any]:
        return [body for method, p, body in self.requests if method == "POST" and p == path]

    # -- as an httpx transport -------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content) if request.content else None
            status, payload = self.handle(request.method, request.url.path, body)
            if isinstance(payload, str):
                return httpx.Response(status, text=payload)
            return httpx.Response(status, json=payload)

        return httpx.MockTransport(handler)
