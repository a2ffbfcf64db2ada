"""One lock per server, however its URL is written: two spellings of one server never swap at once. A swap
takes the locks of its own host's servers (they share its memory), never another host's."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CliFn, WriteConfig
from tests.fakes.llamacpp import FakeLlamaRouter
from tests.loopback import Reply, Request, serve, unused_port


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


def unless_it_waits(path: str, *args: str) -> tuple[int, str, str]:
    """Run the command in a real process; stopped (by PID) at its first "waiting for another" notice, so a
    command that would queue behind a lock fails the test at once instead of after the lock's timeout.
    Returns the exit code (-9 when stopped), stdout and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sourceprep_models", "--config", path, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    assert process.stdout is not None and process.stderr is not None
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if "waiting for another sourceprep-models" in line:
                process.kill()
                break
        stdout = process.stdout.read()
    finally:
        process.kill()
        code = process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()
    return code, stdout, "".join(lines)


def _router(model: str) -> tuple[FakeLlamaRouter, Callable[[Request], Reply]]:
    router = FakeLlamaRouter(models={model: "unloaded"})
    return router, lambda request: router.handle(request.method, request.path.split("?")[0], request.body)


TWO_HOSTS = (
    '[hosts.left]\nbudget = "1GiB"\n[hosts.right]\nbudget = "1GiB"\n'
    '[endpoints.l]\nkind = "llamacpp"\nurl = "{left}"\nhost = "left"\n'
    '[endpoints.l2]\nkind = "llamacpp"\nurl = "{left2}"\nhost = "left"\n'
    '[endpoints.r]\nkind = "llamacpp"\nurl = "{right}"\nhost = "right"\n'
    '[models.one]\nname = "m-left"\nendpoint = "l"\n'
    '[models.beside]\nname = "m-left2"\nendpoint = "l2"\n'
    '[models.two]\nname = "m-right"\nendpoint = "r"\n'
)


@contextlib.contextmanager
def two_hosts(write_config: WriteConfig) -> Iterator[tuple[str, dict[str, FakeLlamaRouter], dict[str, str]]]:
    """Routers l and l2 on host "left", r on host "right"; yields the config path, the routers and their URLs."""
    names = {"l": "m-left", "l2": "m-left2", "r": "m-right"}
    routers: dict[str, FakeLlamaRouter] = {}
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for endpoint, model in names.items():
            routers[endpoint], handle = _router(model)
            urls[endpoint] = stack.enter_context(serve(handle))
        path = write_config(TWO_HOSTS.format(left=urls["l"], left2=urls["l2"], right=urls["r"]))
        yield str(path), routers, urls


def test_a_load_on_one_host_goes_on_while_another_host_is_swapping(cli: CliFn, write_config: WriteConfig) -> None:
    with two_hosts(write_config) as (path, routers, urls), lock_held_elsewhere(urls["l"]):
        code, stdout, stderr = unless_it_waits(path, "load", "two", "--no-warm", "--json")

    assert code == 0, stderr
    assert "waiting for another sourceprep-models" not in stderr
    assert (json.loads(stdout)["endpoint"], json.loads(stdout)["host"]) == ("r", "right")
    assert routers["r"].models == {"m-right": "loaded"}
    assert routers["l"].models == {"m-left": "unloaded"}


@pytest.mark.parametrize("model", ["one", "beside"])
def test_a_load_on_a_host_that_is_swapping_waits_for_it_on_any_of_its_servers(
    cli: CliFn, write_config: WriteConfig, model: str
) -> None:
    # Host left's two servers share its memory: a swap on l (held elsewhere) holds up a load on l and on l2.
    with two_hosts(write_config) as (path, routers, urls), lock_held_elsewhere(urls["l"]):
        result = cli("--config", path, "load", model, "--no-warm", "--timeout", "0.5s")

    assert result.exit_code == 1
    assert "another sourceprep-models is changing what is loaded on l " in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the "waiting…" notice, then the error
    assert "Traceback" not in result.stderr
    assert (routers["l"].models, routers["l2"].models) == ({"m-left": "unloaded"}, {"m-left2": "unloaded"})


def test_a_pipeline_on_one_host_runs_while_another_host_is_swapping(
    cli: CliFn, write_config: WriteConfig, tmp_path: Path
) -> None:
    with two_hosts(write_config) as (_, routers, urls):
        stages = (
            '[pipelines.p]\nstages = [\n  { name = "a", model = "two", command = "true" },\n'
            '  { name = "b", model = "three", command = "true" },\n]\n'
            '[models.three]\nname = "m-right2"\nendpoint = "r"\n'
        )
        routers["r"].models["m-right2"] = "unloaded"
        path = write_config(TWO_HOSTS.format(left=urls["l"], left2=urls["l2"], right=urls["r"]) + stages)
        with lock_held_elsewhere(urls["l"]):
            code, stdout, stderr = unless_it_waits(
                str(path), "run-pipeline", "p", "--outputs", str(tmp_path / "out.jsonl"), "--json"
            )

    assert code == 0, stderr
    assert "waiting for another sourceprep-models" not in stderr
    # Stage b's model loads in the background during stage a (both fit on host right), under right's locks.
    assert [(row["status"], row["action"]) for row in json.loads(stdout)["stages"]] == [
        ("ok", "load"),
        ("ok", "preloaded"),
    ]
    assert routers["r"].models == {"m-right": "loaded", "m-right2": "loaded"}
