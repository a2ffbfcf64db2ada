"""`wait`: a CI job starts its model server and waits for it before loading; the command returns once
the server answers, or exits 4 naming the server that never did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import CliFn, WriteConfig
from tests.loopback import unused_port


@contextmanager
def ollama_on(port: int) -> Iterator[None]:
    """An Ollama-shaped /api/ps on a given port (the server "finishing its start")."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"models": []}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_wait_returns_once_a_starting_server_answers(write_config: WriteConfig) -> None:
    port = unused_port()
    path = write_config(f'[endpoints.ci]\nkind = "ollama"\nurl = "http://127.0.0.1:{port}"\n')
    command = [sys.executable, "-m", "sourceprep_models", "--config", str(path), "wait", "--timeout", "60s"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert process.stderr is not None
        # The server comes up only after the command has found it down at least once.
        assert process.stderr.readline() == "waiting for ci to answer…\n"
        with ollama_on(port):
            _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "ci answering" in err


def test_wait_exits_4_naming_the_server_that_never_answered(cli: CliFn, write_config: WriteConfig) -> None:
    path = write_config(f'[endpoints.ci]\nkind = "ollama"\nurl = "http://127.0.0.1:{unused_port()}"\n')

    result = cli("--config", str(path), "wait", "--timeout", "0.3s")

    assert result.exit_code == 4
    assert "ci did not answer within" in result.stderr
    assert "Traceback" not in result.stderr
