"""The REAL llama-server router killed (SIGKILL) while the next stage's model loads in the background: the
stage that needed the model stops with exit 4 and one line naming the endpoint and the fix, the run's state
is saved, and once the router is back `--resume` finishes the run with the pins loaded again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sourceprep_models.pipeline.state import state_path
from tests.conftest import CliFn
from tests.loopback import unused_port
from tests.realserver.make_gguf import PRESETS, write_model
from tests.realserver.router import LlamaServer, _wait_until_healthy, require_binary, stop

pytestmark = [pytest.mark.realserver, pytest.mark.skipif(os.name != "posix", reason="SIGKILL and FIFOs are POSIX")]

OBSERVE_S = 120.0  # a hang guard for the run's end, never a pass condition


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("gguf", reason="the model generator needs the gguf package (pip install gguf)")
    folder = tmp_path_factory.mktemp("gguf")
    return {name: write_model(folder / f"{name}.gguf", PRESETS["tiny"], seed=n) for n, name in enumerate(("a", "b"))}


class Router:
    """One router on a fixed loopback port, so that it can be killed and started again where the config
    points; every process it ran is stopped by PID at the end."""

    def __init__(self, folder: Path, workdir: Path) -> None:
        self.folder, self.workdir, self.port = folder, workdir, unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.server: LlamaServer | None = None

    def start(self) -> LlamaServer:
        log = self.workdir / f"llama-server-{self.port}-{len(self.processes)}.log"
        command = [str(require_binary()), "--host", "127.0.0.1", "--port", str(self.port), "--no-webui"]
        command += ["-c", "512", "-t", "2", "-np", "1", "--models-dir", str(self.folder), "--models-max", "2"]
        command += ["--no-models-autoload"]
        with log.open("wb") as sink:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.STDOUT)
        self.processes.append(process)
        self.server = LlamaServer(url=self.url, process=process, log=log)
        _wait_until_healthy(self.server)
        return self.server

    def kill(self) -> None:
        assert self.server is not None
        os.kill(self.server.process.pid, signal.SIGKILL)
        self.server.process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.processes:
            stop(process)


@pytest.fixture
def router(model_files: dict[str, Path], tmp_path: Path) -> Iterator[Router]:
    folder = tmp_path / "models"
    folder.mkdir()
    for path in model_files.values():
        shutil.copy(path, folder / path.name)
    router = Router(folder, tmp_path)
    try:
        router.start()
        yield router
    finally:
        router.stop_all()


def pipeline(write_config: Callable[[str], Path], url: str, first: str) -> str:
    """Stage one on pinned model a (its work is ``first``), stage two on b: b loads during stage one."""
    return str(
        write_config(
            f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{url}"\n'
            '[models.a]\nname = "a"\nendpoint = "llama"\nalways_available = true\n'
            '[models.b]\nname = "b"\nendpoint = "llama"\n'
            '[memory]\nbudget = "100GiB"\nheadroom = "0"\n'
            "[pipelines.p]\nstages = [\n"
            f'  {{ name = "one", model = "a", command = "{first}" }},\n'
            '  { name = "two", model = "b", command = "true" },\n]\n'
        )
    )


def read_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    """The run's stderr lines up to and including the first that contains ``marker`` (all of it if none)."""
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if marker in line:
            break
    return lines


def test_a_router_killed_during_a_background_load_stops_the_stage_and_resume_finishes(
    cli: CliFn,
    router: Router,
    write_config: Callable[[str], Path],
    tmp_path: Path,
    started: list[subprocess.Popen[str]],
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    path = pipeline(write_config, router.url, f"cat {fifo}")
    process = subprocess.Popen(
        [sys.executable, "-m", "sourceprep_models", "--config", path, "run-pipeline", "p", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(process)
    # Killed as soon as the run says the background load started: the router's child takes far longer than
    # that to load even a tiny model, so the load is in flight (or not yet sent) when the router dies.
    before = read_until(process, "loading b for stage 'two' while 'one' works")
    router.kill()
    with open(fifo, "w"):  # stage one's work ends: the run goes on to stage two, whose load died
        pass
    out, rest = process.communicate(timeout=OBSERVE_S)
    err = "".join(before) + rest

    assert "loading b for stage 'two' while 'one' works" in err, err
    assert process.returncode == 4, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert lines[-1].startswith("error: stage 'two':"), lines
    assert "llama" in lines[-1] and router.url.split("//")[1] in lines[-1] and "--resume" in lines[-1]
    assert [(row["stage"], row["status"]) for row in json.loads(out)["stages"]] == [("one", "ok")]
    assert json.loads(state_path("p").read_text())["status"] == "failed"  # written: the run can be resumed

    back = router.start()
    resumed = cli("--config", path, "run-pipeline", "p", "--resume", "--json")

    assert resumed.exit_code == 0, resumed.stderr
    assert [row["action"] for row in resumed.json()["stages"]] == ["resumed", "load"]
    assert back.loaded() == {"a", "b"}  # b for its stage, a because it is pinned
