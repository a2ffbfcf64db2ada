"""`status` asks every endpoint at the same time: three servers that each answer only once all three
have been asked can only all answer when the questions go out together."""

from __future__ import annotations

import contextlib
import threading

from tests.conftest import CliFn, WriteConfig
from tests.loopback import Reply, Request, serve

SERVERS = 3


def test_status_asks_every_endpoint_at_once(cli: CliFn, write_config: WriteConfig) -> None:
    # Each server holds its /api/ps answer until all three are being asked; asked one after another, the
    # first waits out the barrier's timeout and fails, and the status says so.
    everyone_asked = threading.Barrier(SERVERS, timeout=10)

    def ollama(request: Request) -> Reply:
        if request.path.startswith("/api/ps"):
            everyone_asked.wait()
            return 200, {"models": []}
        return 404, {"error": "not found"}

    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(serve(ollama)) for _ in range(SERVERS)]
        path = write_config(
            "".join(f'[endpoints.s{index}]\nkind = "ollama"\nurl = "{url}"\n' for index, url in enumerate(urls))
        )
        result = cli("--config", str(path), "status", "--json", "--no-hardware")

    assert result.exit_code == 0, result.stderr
    assert [(endpoint["name"], endpoint["ok"]) for endpoint in result.json()["endpoints"]] == [
        ("s0", True),
        ("s1", True),
        ("s2", True),
    ]
