"""`status` and `doctor` are looks, not loads: a server that accepts and never answers, one that closes
every connection without a word, and one whose backlog is full (the kernel drops the connection attempt)
each cost the endpoint's status_timeout, at the same time, and are reported unreachable (exit 4) with the
reason. The servers are plain sockets made here; the command runs as a subprocess, whose timeout only
guards against a hang and is never the assertion."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import CliFn, WriteConfig
from tests.loopback import Reply, Request, serve

HANG_GUARD_S = 120


@dataclass
class Hung:
    """A listening socket that never answers an HTTP request; ``accepted`` counts connections taken."""

    url: str
    accepted: int = 0
    held: list[socket.socket] = field(default_factory=list)


@contextlib.contextmanager
def hung_server(mode: str) -> Iterator[Hung]:
    """``silent``: accepts and reads, never replies. ``closer``: accepts, reads the request, closes.
    ``full``: never accepts, with its one-slot backlog taken, so new connection attempts are dropped."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0 if mode == "full" else 16)
    port = listener.getsockname()[1]
    server = Hung(f"http://127.0.0.1:{port}")
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server.accepted += 1
            conn.recv(65536)
            if mode == "closer":
                conn.close()
            else:
                server.held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    if mode == "full":
        filler = socket.create_connection(("127.0.0.1", port))  # takes the one backlog slot
        server.held.append(filler)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
        except TimeoutError:
            pass
        else:
            pytest.skip("this kernel accepts connections past a full backlog instead of dropping them")
        finally:
            probe.close()
    else:
        thread.start()
    try:
        yield server
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        for conn in server.held:
            conn.close()
        listener.close()


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOURCEPREP_MODELS_CONFIG": str(config)}
    return subprocess.run(
        [sys.executable, "-m", "sourceprep_models", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )


@pytest.fixture
def four_hung(write_config: WriteConfig) -> Iterator[tuple[Path, dict[str, Hung]]]:
    with contextlib.ExitStack() as stack:
        servers = {
            "silent1": stack.enter_context(hung_server("silent")),
            "silent2": stack.enter_context(hung_server("silent")),
            "closer": stack.enter_context(hung_server("closer")),
            "full": stack.enter_context(hung_server("full")),
        }
        path = write_config(
            "".join(
                f'[endpoints.{name}]\nkind = "ollama"\nurl = "{server.url}"\nstatus_timeout = "1s"\n'
                for name, server in servers.items()
            )
        )
        yield path, servers


def test_status_with_four_hung_servers_reports_each_unreachable_and_exits_4(
    four_hung: tuple[Path, dict[str, Hung]],
) -> None:
    path, servers = four_hung
    result = run(path, "status", "--json", "--no-hardware")

    assert result.returncode == 4, result.stderr
    endpoints = {endpoint["name"]: endpoint for endpoint in json.loads(result.stdout)["endpoints"]}
    assert {name: endpoint["ok"] for name, endpoint in endpoints.items()} == dict.fromkeys(servers, False)
    where = {name: f"Ollama at {server.url} (endpoint {name!r})" for name, server in servers.items()}
    for name in ("silent1", "silent2"):
        assert endpoints[name]["error"] == (
            f"{where[name]} accepted the connection but did not answer GET /api/ps within 1s; it may be stuck "
            "(restart it), or raise the endpoint's status_timeout if it is only slow"
        )
    assert endpoints["closer"]["error"].startswith(f"{where['closer']} closed the connection without answering")
    assert endpoints["full"]["error"].startswith(
        f"cannot reach {where['full']}: connecting got no answer within 1s; start it with `ollama serve`"
    )
    lines = result.stderr.splitlines()
    assert lines == [f"error: {endpoint['error']}" for endpoint in endpoints.values()]
    assert "Traceback" not in result.stderr
    # One look each: a status asks once and does not retry a server that does not answer.
    assert [servers[name].accepted for name in ("silent1", "silent2", "closer")] == [1, 1, 1]


def test_doctor_with_four_hung_servers_reports_each_unreachable(four_hung: tuple[Path, dict[str, Hung]]) -> None:
    path, servers = four_hung
    result = run(path, "doctor", "--json")

    assert result.returncode == 1, result.stderr  # doctor's own convention: 1 when any check is a problem
    checks = {check["id"]: check for check in json.loads(result.stdout)["checks"]}
    for name, server in servers.items():
        reachable = checks[f"endpoint.{name}.reachable"]
        assert reachable["status"] == "problem"
        assert server.url in reachable["summary"]
        assert checks[f"endpoint.{name}.models"]["status"] == "skipped"
    assert "within 1s" in checks["endpoint.silent1.reachable"]["summary"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["0", "0.01s", "2m", "forever", "true"])
def test_status_timeout_out_of_range_is_a_config_error(write_config: WriteConfig, value: str) -> None:
    literal = value if value in ("true",) else f'"{value}"'
    path = write_config(f'[endpoints.ollama]\nkind = "ollama"\nstatus_timeout = {literal}\n')
    result = run(path, "status", "--no-hardware")

    assert result.returncode == 5
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "endpoints.ollama.status_timeout" in result.stderr
    assert "0.1s" in result.stderr and "60s" in result.stderr


def test_doctor_looks_at_every_endpoint_at_once(cli: CliFn, write_config: WriteConfig) -> None:
    # Each server answers its first request only once all three are being asked; checked one after
    # another, the first gets no answer within its status_timeout and is reported unreachable.
    everyone_asked = threading.Barrier(3, timeout=20)

    def ollama(request: Request) -> Reply:
        if request.path == "/":
            with contextlib.suppress(threading.BrokenBarrierError):
                everyone_asked.wait()
            return 200, "Ollama is running"
        if request.path.startswith("/api/version"):
            return 200, {"version": "0.12.0"}
        if request.path.startswith("/api/ps"):
            return 200, {"models": []}
        return 404, {"error": "not found"}

    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(serve(ollama)) for _ in range(3)]
        path = write_config(
            "".join(
                f'[endpoints.s{index}]\nkind = "ollama"\nurl = "{url}"\nstatus_timeout = "10s"\n'
                for index, url in enumerate(urls)
            )
        )
        result = cli("--config", str(path), "doctor", "--json")

    checks = {check["id"]: check["status"] for check in result.json()["checks"]}
    assert [checks[f"endpoint.s{index}.reachable"] for index in range(3)] == ["ok", "ok", "ok"], result.stdout
