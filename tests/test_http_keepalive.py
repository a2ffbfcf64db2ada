"""A server that closes a kept-alive connection just as the client sends on it (its idle timeout racing the
client's next request, as happens to a process that waited for another one's swap lock) costs a GET nothing:
it is sent again on a fresh connection. A POST (a load, an unload) is never sent twice."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from sourceprep_models.errors import ServerError, ServerUnreachable
from sourceprep_models.providers._http import looking, send

BODY = b'{"ok": true}'
REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


class DroppingServer:
    """Answers the first request on each connection and closes it, unanswered, at the second."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        # accept() wakes up to look at ``_stop``: a thread blocked in accept is not woken by a close from
        # another thread, and would then outlive the test (and its descriptor number be reused).
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []  # the request line of every request that arrived
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(5.0)  # a client that never sends cannot keep its thread past the test
            thread = threading.Thread(target=self._connection, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _connection(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            for answered in (True, False):
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                self.requests.append(head.split(b"\r\n", 1)[0])
                if not answered:
                    return  # closed without a word, as an idle timeout that fired just now
                connection.sendall(REPLY)

    def close(self) -> None:
        """Stop accepting, wait for every thread of the server, then close the listener."""
        self._stop.set()
        self._thread.join()
        for thread in self._threads:
            thread.join()
        self.listener.close()


@pytest.fixture
def server() -> Iterator[DroppingServer]:
    running = DroppingServer()
    yield running
    running.close()


def _send(client: httpx.Client, method: str, path: str) -> httpx.Response:
    return send(
        client,
        method,
        path,
        where="the test server",
        unreachable_fix="start it",
        after_deadline="",
        json={"model": "m"} if method == "POST" else None,
    )


def test_a_get_on_a_connection_the_server_just_closed_is_sent_again(server: DroppingServer) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
        assert _send(client, "GET", "/models").json() == {"ok": True}
        assert _send(client, "GET", "/models").json() == {"ok": True}  # the kept-alive connection is dropped

    assert server.requests == [b"GET /models HTTP/1.1"] * 3


def test_a_post_on_such_a_connection_is_not_sent_again(server: DroppingServer) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
        _send(client, "GET", "/models")
        with pytest.raises(ServerError, match="the test server dropped the connection during POST /models/load"):
            _send(client, "POST", "/models/load")

    assert server.requests == [b"GET /models HTTP/1.1", b"POST /models/load HTTP/1.1"]


def test_a_look_asks_once_even_on_such_a_connection(server: DroppingServer) -> None:
    """status and doctor report what they saw rather than asking again (tests/test_status_hung.py)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
        _send(client, "GET", "/models")
        with looking(1.0), pytest.raises(ServerUnreachable):
            _send(client, "GET", "/models")

    assert server.requests == [b"GET /models HTTP/1.1"] * 2
