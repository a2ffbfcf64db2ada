"""What a llama.cpp router's model is doing: loading (its listing's ``status.value``) or serving a
request (its child's slots).

- The router proxies ``GET /slots?model=ID`` to that model's child (ggml-org/llama.cpp
  ``tools/server/server.cpp``, ``llama_server``: ``routes.get_slots = models_routes->proxy_get``); the
  child answers one object per slot, ``is_processing`` true while a request runs on it
  (``tools/server/server-context.cpp``, ``server_slot::to_json``). Seen on a real router: one slot
  ``{"id": 0, "n_ctx": 512, "speculative": false, "is_processing": true}`` while a streamed
  completion ran, false before and after.
- ``/slots`` of a model that is not running is 400 "model is not loaded", so only a loaded model is
  asked. A child started with ``--no-slots`` answers 501: then the requests are unknown (None), not 0.
- An unload of a model that is still loading kills its child (servers.md §2.2), and one of a busy
  model ends its requests with the child; routers with the LRU queue (servers.md Corrections, PR
  #26572) protect only their own evictions, not an explicit ``POST /models/unload``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sourceprep_models.providers.base import Activity


def activity_of(name: str, status: str, slots: Callable[[], tuple[int, Any]]) -> Activity:
    """The activity of a model whose listing says ``status``; ``slots`` asks its child (status, body)."""
    if status == "loading":
        return Activity(name, loading=True)
    if status != "loaded":  # unloaded, sleeping, downloading: nothing runs on it
        return Activity(name, requests=0)
    code, body = slots()
    return Activity(name, requests=busy_slots(body) if code == 200 else None)


def busy_slots(body: object) -> int | None:
    """How many of the child's slots are processing a request (None: not a slot list)."""
    if not isinstance(body, list) or not all(isinstance(slot, dict) for slot in body):
        return None
    return sum(1 for slot in body if slot.get("is_processing") is True)
