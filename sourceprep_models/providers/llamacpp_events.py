"""llama.cpp router's ``GET /models/sse``: the router's own account of a load, as it happens.

Each event is one ``data: {json}`` line followed by a blank line (llama.cpp
``tools/server/server-models.cpp``, the ``get_router_models_sse`` route: ``"data: " + to_json() +
"\\n\\n"``), shaped ``{"model": ID, "event": "model_status" | "status_change", "data": {"status":
…, "progress"?: {"stages", "current", "value"}, "exit_code"?: N}}`` (real-engine.md §5 has a
captured stream; servers.md Corrections: progress since PR #24828). The router subscribes the
client before it answers with its headers and sends no snapshot of the current state, so a watch
is opened before ``POST /models/load`` and the listing is read once after it (a load that was
already under way is seen there).

Why a stream instead of polling ``GET /models``: a poll sees completion up to one interval late
(issue: +31 ms on a warm 500 MB load, +114 ms on a cold one); the event arrives when the router
publishes it, and carries the load's progress. A router without the route (older builds answer
404) or a stream that breaks leaves ``LoadWatch.open`` returning None, or ``next`` returning None,
and the caller polls as before.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from sourceprep_models.constants import CONNECT_TIMEOUT_S


@dataclass(frozen=True)
class StatusEvent:
    """One status event of one model, with the moment (monotonic) this process received it."""

    model: str
    status: str  # loading | loaded | unloaded | sleeping | downloading
    at: float
    stage: str | None = None
    fraction: float | None = None
    exit_code: int | None = None


_CLOSED = object()


class LoadWatch:
    """The router's event stream, read on a daemon thread into a queue; closed by ``close``."""

    def __init__(self) -> None:
        self._events: queue.Queue[object] = queue.Queue()
        self._response: httpx.Response | None = None
        self._closed = threading.Event()
        self.ended = False  # the stream broke or the router closed it: poll instead

    @classmethod
    def open(cls, client: httpx.Client, headers: dict[str, str]) -> LoadWatch | None:
        """Subscribe (the headers have arrived when this returns), or None: no stream here."""
        watch = cls()
        ready: queue.Queue[bool] = queue.Queue()
        thread = threading.Thread(target=watch._read, args=(client, headers, ready), daemon=True)
        thread.start()
        try:
            subscribed = ready.get(timeout=CONNECT_TIMEOUT_S + 1)
        except queue.Empty:
            subscribed = False
        if not subscribed:
            watch.close()
            return None
        return watch

    def _read(self, client: httpx.Client, headers: dict[str, str], ready: queue.Queue[bool]) -> None:
        told = False
        try:
            timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT_S)
            with client.stream("GET", "/models/sse", headers=headers, timeout=timeout) as response:
                kind = response.headers.get("content-type", "")
                if response.status_code != 200 or not kind.startswith("text/event-stream") or self._closed.is_set():
                    return
                self._response = response
                ready.put(True)
                told = True
                for line in response.iter_lines():
                    if self._closed.is_set():
                        return
                    event = _parse(line, time.monotonic())
                    if event is not None:
                        self._events.put(event)
        except Exception:  # any failure of the stream means "poll instead"
            pass
        finally:
            if not told:
                ready.put(False)
            self._events.put(_CLOSED)

    def next(self, timeout_s: float) -> StatusEvent | None:
        """The next event, or None when none came within ``timeout_s`` or the stream ended (``ended``)."""
        if self.ended:
            return None
        try:
            item = self._events.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None
        if item is _CLOSED:
            self.ended = True
            return None
        assert isinstance(item, StatusEvent)
        return item

    def close(self) -> None:
        """Stop reading; the router notices the disconnect at its next check (about a second)."""
        self._closed.set()
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()


def _parse(line: str, at: float) -> StatusEvent | None:
    if not line.startswith("data:"):
        return None
    try:
        body: Any = json.loads(line[5:].strip())
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("event") not in ("model_status", "status_change"):
        return None
    data = body.get("data")
    if not isinstance(data, dict) or not isinstance(body.get("model"), str) or not isinstance(data.get("status"), str):
        return None
    progress = data.get("progress")
    stage = fraction = None
    if isinstance(progress, dict):
        stage = progress.get("current") if isinstance(progress.get("current"), str) else None
        value = progress.get("value")
        fraction = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    code = data.get("exit_code")
    return StatusEvent(
        model=body["model"],
        status=data["status"],
        at=at,
        stage=stage,
        fraction=fraction,
        exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
    )
