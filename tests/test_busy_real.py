"""A swap never cuts off another client's request: against a REAL llama-server router.

Another client streams a long completion from the model the plan would evict; ``load`` of another
model (a subprocess, as a user runs it) waits until that request ends, says so on stderr, and then
swaps. The request completes untruncated and the new model ends loaded. The busy model is a small
generated GGUF that generates slowly enough (a thousand tokens take seconds on two cores) for the
load to start while the request still runs; the test reads the stream's first chunk before starting
the load, so the request is in flight then.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import WriteConfig
from tests.realserver.make_gguf import PRESETS, Shape, write_model
from tests.realserver.router import LlamaServer, llama_server, require_binary

pytestmark = pytest.mark.realserver

# Slow enough per token on a small CPU that 1,500 tokens (seconds even on an idle machine) outlast a CLI start
# however loaded the machine is; tiny on disk (about 17 MB). The context is raised to hold them.
SLOW = Shape(n_embd=256, n_layer=4, n_head=4, n_head_kv=4, n_ff=1024)
TOKENS = 1500
CONTEXT = "2048"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("gguf", reason="the model generator needs the gguf package (pip install gguf)")
    folder = tmp_path_factory.mktemp("busy-gguf")
    return {
        "busy": write_model(folder / "busy.gguf", SLOW, seed=7),
        "next": write_model(folder / "next.gguf", PRESETS["tiny"], seed=8),
    }


@pytest.fixture
def router(model_files: dict[str, Path], tmp_path: Path) -> Iterator[LlamaServer]:
    binary = require_binary()
    folder = tmp_path / "models"
    folder.mkdir()
    for path in model_files.values():
        (folder / path.name).symlink_to(path)
    # --models-max 1: loading "next" means evicting "busy".
    with llama_server(
        binary,
        tmp_path,
        "--models-dir",
        str(folder),
        "--models-max",
        "1",
        "--no-models-autoload",
        "--ctx-size",
        CONTEXT,
    ) as s:
        yield s


def load_and_wait(server: LlamaServer, model: str) -> None:
    """Load ``model`` as another client would, and poll until the router says it is loaded."""
    assert server.post("/models/load", {"model": model}).json() == {"success": True}
    deadline = time.monotonic() + 60
    while server.state(model) != "loaded":
        assert time.monotonic() < deadline, f"{model} did not load: {server.log_tail()}"
        time.sleep(0.01)


class Stream:
    """A streamed completion from another client: in flight once ``first`` is read, collected in a thread."""

    def __init__(self, server: LlamaServer, model: str) -> None:
        body = {
            "model": model,
            "prompt": "hello world",
            "max_tokens": TOKENS,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        self._stack = contextlib.ExitStack()
        client = self._stack.enter_context(httpx.Client(timeout=httpx.Timeout(10, read=600)))
        response = self._stack.enter_context(client.stream("POST", f"{server.url}/v1/completions", json=body))
        assert response.status_code == 200
        self._lines = response.iter_lines()
        self.chunks: list[dict[str, Any]] = [self._next()]  # the first token: the request runs now
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._collect)
        self._thread.start()

    def _next(self) -> dict[str, Any]:
        for line in self._lines:
            if line.startswith("data: ") and line != "data: [DONE]":
                return dict(json.loads(line[6:]))
        raise StopIteration

    def _collect(self) -> None:
        try:
            for line in self._lines:
                if line.startswith("data: ") and line != "data: [DONE]":
                    self.chunks.append(json.loads(line[6:]))
        except BaseException as exc:  # a cut-off stream: the test reports it
            self.error = exc

    def finish(self) -> None:
        self._thread.join(timeout=600)
        self._stack.close()

    @property
    def finish_reason(self) -> str | None:
        reasons = [c["choices"][0].get("finish_reason") for c in self.chunks if c.get("choices")]
        return next((reason for reason in reversed(reasons) if reason), None)

    @property
    def completion_tokens(self) -> int | None:
        usage = [c["usage"] for c in self.chunks if c.get("usage")]
        return int(usage[-1]["completion_tokens"]) if usage else None


def run_load(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sourceprep_models", "--config", str(config), "load", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_an_eviction_waits_for_the_request_in_flight_then_swaps(router: LlamaServer, write_config: WriteConfig) -> None:
    config = write_config(f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{router.url}"\n')
    load_and_wait(router, "busy")
    stream = Stream(router, "busy")
    try:
        result = run_load(config, "next")
    finally:
        stream.finish()

    # The other client's request ran to its end: every token, stopped by its length, never cut off.
    assert stream.error is None
    assert (stream.finish_reason, stream.completion_tokens) == ("length", TOKENS)
    assert result.returncode == 0, result.stderr
    assert "waiting for busy: serving a request (on llama)" in result.stderr
    assert "Traceback" not in result.stderr
    assert router.loaded() == {"next"}
    assert router.state("busy") == "unloaded"


def test_the_time_waited_is_a_step_of_the_swap(router: LlamaServer, write_config: WriteConfig) -> None:
    config = write_config(f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{router.url}"\n')
    load_and_wait(router, "busy")
    stream = Stream(router, "busy")
    try:
        result = run_load(config, "next", "--json")
    finally:
        stream.finish()

    assert result.returncode == 0, result.stderr
    steps = [step for step in json.loads(result.stdout)["steps"] if step["step"] != "warm"]
    assert [step["step"] for step in steps][:2] == ["wait-for-busy", "unload"]
    assert steps[0]["model"] == "busy" and steps[0]["detail"] == "waited for busy" and steps[0]["wall_s"] > 0
    assert json.loads(result.stdout)["seconds"]["busy_wait_s"] == steps[0]["wall_s"]
    assert (stream.finish_reason, stream.completion_tokens) == ("length", TOKENS)
    assert router.loaded() == {"next"}


def test_an_idle_victim_is_evicted_without_waiting(router: LlamaServer, write_config: WriteConfig) -> None:
    config = write_config(f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{router.url}"\n')
    load_and_wait(router, "busy")

    result = run_load(config, "next", "--json")

    assert result.returncode == 0, result.stderr
    assert "waiting for" not in result.stderr
    steps = [step["step"] for step in json.loads(result.stdout)["steps"] if step["step"] != "warm"]
    assert steps[0] == "unload"
    assert router.loaded() == {"next"}
