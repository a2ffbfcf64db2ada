"""A pipeline's swaps show their progress like `load`: a plain line per lasting phase in a log, a live
line on a terminal, never on stdout, for a stage's own load, a background preload and a prefetch.

The server is a fake llama.cpp router whose load of ``slow`` stays ``loading`` until the test releases
it, so each test reads what the run said while that load was still running (no sleeping, no clocks).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sourceprep_models.pipeline.overlap import PrefetchHandle
from sourceprep_models.swap.progress import PhaseEvent
from sourceprep_models.ui.progress import ProgressView
from sourceprep_models.warming.prefetch import Prefetch
from tests.conftest import WriteConfig
from tests.fakes.llamacpp import FakeLlamaRouter, entry
from tests.helpers import wait_for
from tests.loopback import Request, serve
from tests.test_progress import PATIENCE_S, Lines, command, environment, on_terminal, read_line


class HeldRouter(FakeLlamaRouter):
    """A router whose load of ``slow`` stays ``loading`` until ``release`` is set; ``fast`` loads at once."""

    def __init__(self) -> None:
        super().__init__(models={"fast": "unloaded", "slow": "unloaded"})
        self.release = threading.Event()

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if (method, path) == ("GET", "/models"):
            self.requests.append((method, path))
            listing = [entry(name, value) for name, value in self.models.items()]
            for name, value in self.models.items():
                if value == "loading" and (name != "slow" or self.release.is_set()):
                    self.models[name] = "loaded"
            return 200, {"data": listing, "object": "list"}
        return super().handle(method, path, body)


@pytest.fixture
def router() -> Iterator[tuple[HeldRouter, str]]:
    fake = HeldRouter()

    def handle(request: Request) -> tuple[int, Any]:
        return fake.handle(request.method, request.path, request.body)

    try:
        with serve(handle) as url:
            yield fake, url
    finally:
        fake.release.set()


def pipeline(write_config: WriteConfig, url: str, first: str = "true") -> Path:
    return write_config(
        f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{url}"\n'
        '[memory]\nbudget = "100GiB"\nheadroom = "0"\n'
        "[pipelines.p]\nstages = [\n"
        f'  {{ name = "one", model = "fast", command = "{first}" }},\n'
        '  { name = "two", model = "slow", command = "true" },\n]\n'
    )


def run(path: Path, started: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        command(path, "run-pipeline", "p", "--json", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(CI="1"),
    )
    started.append(process)
    return process


def read_until(process: subprocess.Popen[str], wanted: str) -> list[str]:
    """The stderr lines up to and including ``wanted`` (a quick phase may add none, a slow machine some)."""
    lines: list[str] = []
    while not lines or lines[-1] != wanted:
        line = read_line(process.stderr)
        assert line, f"stderr ended before {wanted!r}; it said {lines}"
        lines.append(line.rstrip("\n"))
    return lines


def test_a_stages_load_in_a_pipe_says_at_once_that_it_started(router, write_config, started) -> None:  # type: ignore[no-untyped-def]
    fake, url = router
    process = run(pipeline(write_config, url), started, "--no-overlap")

    read_until(process, "load slow on llama: started")
    # Read while the load is still running: the server has not been released.
    assert fake.models["slow"] == "loading" and process.poll() is None
    fake.release.set()
    stdout, stderr = process.communicate(timeout=PATIENCE_S)

    assert process.returncode == 0, stderr
    assert "load slow on llama: done in" in stderr
    rows = {row["stage"]: row["action"] for row in json.loads(stdout)["stages"]}  # stdout is the JSON alone
    assert rows == {"one": "load", "two": "load"}
    assert fake.models == {"fast": "loaded", "slow": "loaded"}


def test_a_background_preload_in_a_pipe_is_shown_while_the_stage_before_works(  # type: ignore[no-untyped-def]
    router, write_config, started, tmp_path: Path
) -> None:
    fake, url = router
    gate = tmp_path / "gate"
    os.mkfifo(gate)  # stage one reads it to its end: it cannot finish before the test closes it
    process = run(pipeline(write_config, url, f"cat {gate}"), started)

    lines = read_until(process, "preload slow on llama: started")
    assert fake.models["slow"] == "loading" and process.poll() is None
    fake.release.set()
    wait_for(lambda: fake.models["slow"] == "loaded", PATIENCE_S, "the preload to end")
    with open(gate, "w"):  # stage one ends now, after the preload it overlapped
        pass
    stdout, stderr = process.communicate(timeout=PATIENCE_S)

    assert process.returncode == 0, stderr
    assert "loading slow for stage 'two' while 'one' works" in "\n".join(lines)
    assert "preload slow on llama: done in" in stderr
    rows = {row["stage"]: row["action"] for row in json.loads(stdout)["stages"]}
    assert rows == {"one": "load", "two": "preloaded"}
    assert fake.models == {"fast": "loaded", "slow": "loaded"}


def test_a_pipeline_on_a_terminal_shows_a_live_line_for_a_preload(router, write_config) -> None:  # type: ignore[no-untyped-def]
    fake, url = router
    env = environment(TERM="xterm")
    env.pop("NO_COLOR", None)
    argv = command(pipeline(write_config, url), "run-pipeline", "p")
    shown, stdout, code = on_terminal(argv, env, "preload slow on llama: ", fake.release)

    assert code == 0, shown
    # On the terminal before the server was released (``on_terminal`` released it then), as a live line:
    # no "started" line of the plain log.
    assert "preload slow on llama: " in shown
    assert "preload slow on llama: started" not in shown
    assert stdout.splitlines()[0].split()[:3] == ["STAGE", "MODEL", "ACTION"]
    assert "preload" not in stdout.replace("preloaded", "")  # the table says "preloaded"; no progress text
    assert fake.models == {"fast": "loaded", "slow": "loaded"}


def test_a_prefetch_tells_its_start_and_end_with_the_weights_size(tmp_path: Path) -> None:
    weights = tmp_path / "slow.gguf"
    weights.write_bytes(b"\1" * 8192)
    heard: list[PhaseEvent] = []
    handle = PrefetchHandle("slow-key", Prefetch.start("slow", [weights]))

    handle.watch(heard.append, "llama")
    handle.stop()  # returns once the end is told

    assert [(event.phase, event.model, event.endpoint, event.state) for event in heard] == [
        ("prefetch", "slow", "llama", "start"),
        ("prefetch", "slow", "llama", "end"),
    ]
    assert heard[0].total_bytes == 8192 and heard[0].probe is not None


def test_phases_running_at_once_each_get_their_lines_in_a_log() -> None:
    output = Lines()
    view = ProgressView(output, heartbeat_s=3600.0, show_after_s=0.0)
    try:
        view(PhaseEvent("preload", "slow", "llama", "start"))
        wait_for(lambda: "preload slow on llama: started" in output.lines, PATIENCE_S, "the preload's line")
        view(PhaseEvent("prefetch", "next", "llama", "start"))
        wait_for(lambda: "prefetch next on llama: started" in output.lines, PATIENCE_S, "the prefetch's line")
        view(PhaseEvent("prefetch", "next", "llama", "end", elapsed_s=1.0))
        view(PhaseEvent("preload", "slow", "llama", "end", elapsed_s=2.5))
    finally:
        view.close()

    assert output.lines == [
        "preload slow on llama: started",
        "prefetch next on llama: started",
        "prefetch next on llama: done in 1.00s",
        "preload slow on llama: done in 2.50s",
    ]
