"""A real HTTP server on a free loopback port, driven by a plain function: the fake servers of the
provider tests (LM Studio, cloud APIs, vLLM, llama-swap, oMLX) answer through it so the CLI talks
to them over a real socket, exactly as it would to the real thing."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A reply: status and payload; a ``str`` payload is sent as text/plain, ``None`` as an empty body,
# anything else as JSON.
Reply = tuple[int, Any]


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # with its query string
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, the raw text when it is not JSON, or None when empty


Handle = Callable[[Request], Reply]


def unused_port() -> int:
    """A loopback port nobody listens on (for "server down" tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def serve(handle: Handle) -> Iterator[str]:
    """Run ``handle`` behind a threaded HTTP server on 127.0.0.1; yields ``http://127.0.0.1:PORT``.

    Requests are handled one at a time (a lock), so fakes need no locking of their own."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with lock:
                status, payload = handle(request)
            if payload is None:
                data, kind = b"", "text/plain"
            elif isinstance(payload, str):
                data, kind = payload.encode(), "text/plain"
            else:
                data, kind = json.dumps(payload).encode(), "application/json"
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _reply

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
