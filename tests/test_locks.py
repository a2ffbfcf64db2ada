"""One lock per server, however its URL is written: two spellings of one server never swap at once."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import CliFn, WriteConfig
from tests.loopback import unused_port


@contextlib.contextmanager
def lock_held_elsewhere(url: str) -> Iterator[None]:
    """Another process holds the swap lock of ``url`` until the block ends (stopped by PID)."""
    holder = (
        "import sys\n"
        "from sourceprep_models.swap.locks import endpoint_lock\n"
        f"with endpoint_lock('other', {url!r}, timeout_s=5):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "held\n"
        yield
    finally:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("\n")
        process.stdin.close()
        process.wait(timeout=10)
        process.stdout.close()


@pytest.mark.parametrize("spelling", ["http://localhost:{port}/", "http://[::1]:{port}", "HTTP://127.0.0.1:{port}/v1"])
def test_another_spelling_of_a_busy_server_waits_for_its_lock(
    cli: CliFn, write_config: WriteConfig, spelling: str
) -> None:
    port = unused_port()
    path = write_config(f'[endpoints.local]\nkind = "llamacpp"\nurl = "{spelling.format(port=port)}"\n')

    with lock_held_elsewhere(f"http://127.0.0.1:{port}"):
        result = cli("--config", str(path), "load", "tiny", "--timeout", "0.3s")

    assert result.exit_code == 1
    assert "another sourceprep-models is changing what is loaded on local" in result.stderr
