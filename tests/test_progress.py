"""A load's progress as a person sees it: at once in a log, live on a terminal, never on stdout.

The server is a fake llama.cpp router whose load stays ``loading`` until the test releases it, so
the test reads what the command said while the load was still running (no sleeping, no clocks).
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sourceprep_models.swap.progress import PhaseEvent
from sourceprep_models.ui.output import Output
from sourceprep_models.ui.progress import ProgressView
from tests.conftest import CliFn, WriteConfig
from tests.fakes.llamacpp import FakeLlamaRouter, entry
from tests.helpers import wait_for
from tests.loopback import Request, serve

# How long a test waits for output before it fails (a failure bound, never a pass condition).
PATIENCE_S = 60.0


class GatedRouter(FakeLlamaRouter):
    """A router whose loads stay ``loading`` until ``release`` is set (a slow model, for as long as the test likes)."""

    def __init__(self) -> None:
        super().__init__(models={"slow": "unloaded", "other": "unloaded"})
        self.release = threading.Event()

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if (method, path) == ("GET", "/models"):
            self.requests.append((method, path))
            if self.release.is_set():
                self.models = {name: "loaded" if v == "loading" else v for name, v in self.models.items()}
            return 200, {"data": [entry(name, value) for name, value in self.models.items()], "object": "list"}
        return super().handle(method, path, body)


@pytest.fixture
def router() -> Iterator[tuple[GatedRouter, str]]:
    fake = GatedRouter()

    def handle(request: Request) -> tuple[int, Any]:
        return fake.handle(request.method, request.path, request.body)

    try:
        with serve(handle) as url:
            yield fake, url
    finally:
        fake.release.set()


def config(write_config: WriteConfig, url: str) -> Path:
    return write_config(f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{url}"\n')


def command(path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "sourceprep_models", "--config", str(path), *args]


def environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "COLUMNS", "LINES")}
    return {**env, **extra}


def read_line(stream: Any) -> str:
    ready, _, _ = select.select([stream], [], [], PATIENCE_S)
    assert ready, f"no stderr line within {PATIENCE_S}s"
    return str(stream.readline())


def test_load_in_a_pipe_says_at_once_that_the_load_started(router, write_config: WriteConfig) -> None:  # type: ignore[no-untyped-def]
    fake, url = router
    process = subprocess.Popen(
        command(config(write_config, url), "load", "slow"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(CI="1"),
    )
    try:
        first = read_line(process.stderr)
        # Read while the load is still running: the server has not been released.
        assert first.strip() == "load slow on llama: started"
        wait_for(lambda: fake.models["slow"] == "loading", PATIENCE_S, "the load request")
        assert process.poll() is None  # still loading: the line came while the load ran, not after it
        fake.release.set()
        stdout, stderr = process.communicate(timeout=PATIENCE_S)
    finally:
        fake.release.set()
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, stderr
    assert "load slow on llama: done in" in stderr
    assert "started" not in stdout and "done in" not in stdout  # progress never goes to stdout
    assert stdout.splitlines()[0].split()[0] == "STEP"
    assert fake.models["slow"] == "loaded"


def on_terminal(argv: list[str], env: dict[str, str], seen: str, then: threading.Event) -> tuple[str, str, int]:
    """Run with stderr on a pseudo-terminal; once it has shown ``seen``, set ``then``; (terminal, stdout, rc)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], PATIENCE_S)
            assert ready, f"no terminal output within {PATIENCE_S}s; so far: {b''.join(chunks)!r}"
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the command is done
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not then.is_set() and seen.encode() in b"".join(chunks):
                then.set()
    finally:
        then.set()
        stdout, _ = process.communicate(timeout=PATIENCE_S)
        os.close(leader)
    return b"".join(chunks).decode(errors="replace"), stdout.decode(), process.returncode


def test_load_on_a_terminal_shows_a_live_line_while_it_loads(router, write_config: WriteConfig) -> None:  # type: ignore[no-untyped-def]
    fake, url = router
    env = environment(TERM="xterm")
    env.pop("NO_COLOR", None)
    shown, stdout, code = on_terminal(
        command(config(write_config, url), "load", "slow"), env, "load slow on llama: ", fake.release
    )

    assert code == 0, shown
    # The live line was on the terminal before the server was released (``on_terminal`` released it then),
    # and it is a live line: no "started" line of the plain log.
    assert "load slow on llama: " in shown
    assert "load slow on llama: started" not in shown
    assert "slow loaded on llama" in shown
    assert "load slow" not in stdout and stdout.splitlines()[0].split()[0] == "STEP"
    assert fake.models["slow"] == "loaded"


class Lines(Output):
    def __init__(self, verbosity: int = 0) -> None:
        super().__init__(interactive=False, verbosity=verbosity)
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def test_quiet_progress_says_nothing() -> None:
    output = Lines(verbosity=-1)
    view = ProgressView(output, heartbeat_s=0.01, show_after_s=0.0)
    try:
        view(PhaseEvent("load", "slow", "llama", "start"))
        view(PhaseEvent("load", "slow", "llama", "end", elapsed_s=2.5))
    finally:
        view.close()

    assert output.lines == []


def test_a_phase_that_lasts_gets_a_line_each_heartbeat_in_a_log(tmp_path: Path) -> None:
    weights = tmp_path / "w.gguf"
    weights.write_bytes(b"\0" * 4096)
    from sourceprep_models.swap.progress import page_cache_probe

    total, probe = page_cache_probe([weights])
    output = Lines()
    view = ProgressView(output, heartbeat_s=0.01, show_after_s=0.0)
    try:
        view(PhaseEvent("load", "slow", "llama", "start", total_bytes=total, probe=probe))
        wait_for(lambda: len(output.lines) >= 3, what="two heartbeat lines")
        view(PhaseEvent("load", "slow", "llama", "end", elapsed_s=2.5))
    finally:
        view.close()

    assert output.lines[0] == "load slow on llama: started"
    beat = output.lines[1]
    assert beat.startswith("load slow on llama: ") and "of 4.1 KB in page cache" in beat  # 4,096 bytes
    assert output.lines[-1] == "load slow on llama: done in 2.50s"


def test_load_json_says_where_the_seconds_went(cli: CliFn, router, write_config: WriteConfig) -> None:  # type: ignore[no-untyped-def]
    fake, url = router
    fake.release.set()
    path = str(config(write_config, url))
    assert cli("--config", path, "load", "other").exit_code == 0

    # --models-max 2 on this fake: loading "slow" beside "other" evicts nothing; unload first to force a swap.
    result = cli("--config", path, "load", "slow", "--json", "--single-model")

    assert result.exit_code == 0, result.stderr
    report = result.json()
    seconds = report["seconds"]
    steps = {step["step"]: step for step in report["steps"]}
    assert set(seconds) == {
        "busy_wait_s",
        "unload_s",
        "released_s",
        "read_s",
        "read_from",
        "load_s",
        "server_load_s",
        "verify_s",
        "first_token_s",
    }
    assert seconds["load_s"] == round(steps["load"]["wall_s"], 4)
    assert seconds["unload_s"] == round(steps["unload"]["wall_s"], 4)
    assert seconds["released_s"] == round(steps["wait-for-free"]["wall_s"], 4)
    assert seconds["busy_wait_s"] is None and seconds["first_token_s"] is None
    assert fake.models == {"slow": "loaded", "other": "unloaded"}
    table = cli("--config", path, "load", "other", "--single-model")
    total = next(line for line in table.stdout.splitlines() if line.startswith("total"))
    assert "unload " in total and "released " in total and "load " in total


def test_the_pipeline_report_says_where_each_swaps_seconds_went(
    cli: CliFn, ollama_emulator: Any, write_config: WriteConfig, tmp_path: Path
) -> None:
    from tests.emulator import EmulatedModel

    emu = ollama_emulator(
        models=[EmulatedModel("fast:1b", file_mib=4), EmulatedModel("reason:14b", file_mib=6)],
        gpu_vram_mib=None,
        unload_delay_s=0.02,
    )
    path = write_config(
        '[models.fast]\nname = "fast:1b"\n[models.reason]\nname = "reason:14b"\n'
        "[pipelines.p]\nstages = [\n"
        '  { name = "ask", model = "fast", prompts = ["first"], max_tokens = 4 },\n'
        '  { name = "think", model = "reason", prompts = ["why"], max_tokens = 4 },\n]\n'
    )
    report = tmp_path / "run.json"

    result = cli("--config", str(path), "run-pipeline", "p", "--report", str(report), env={"OLLAMA_HOST": emu.url})

    assert result.exit_code == 0, result.stderr
    import json

    stages = json.loads(report.read_text())["stages"]
    for stage in stages:
        seconds = stage["seconds"]
        assert seconds["load_s"] > 0 and seconds["busy_wait_s"] is None
        assert seconds["first_token_s"] == stage["ttft_s"]  # the stage's first token, measured by its prompts
        assert seconds["first_token_s"] is not None
    assert {name for name in emu.loaded_names()} >= {"reason:14b"}
