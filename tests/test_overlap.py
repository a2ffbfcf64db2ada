"""Overlapped preload against a REAL llama-server router: stage 2's model loads while stage 1 works.

Stage 1's command blocks on a FIFO that only the test writes to, so the run cannot get past stage 1
until the test has seen, from outside, what the router holds meanwhile: no timing decides a result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CliFn
from tests.realserver.make_gguf import PRESETS, write_model
from tests.realserver.router import LlamaServer, llama_server, require_binary

pytestmark = [pytest.mark.realserver, pytest.mark.skipif(os.name != "posix", reason="FIFOs are POSIX")]

PY = sys.executable
OBSERVE_S = 120.0  # an upper bound for the router to list a tiny model, never a pass condition


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("gguf", reason="the model generator needs the gguf package (pip install gguf)")
    folder = tmp_path_factory.mktemp("gguf")
    return {name: write_model(folder / f"{name}.gguf", PRESETS["tiny"], seed=n) for n, name in enumerate(("a", "b"))}


@pytest.fixture
def router(model_files: dict[str, Path], tmp_path: Path) -> Iterator[LlamaServer]:
    folder = tmp_path / "models"
    folder.mkdir()
    for path in model_files.values():
        shutil.copy(path, folder / path.name)
    with llama_server(require_binary(), tmp_path, "--models-dir", str(folder), "--models-max", "2") as server:
        yield server


def pipeline(write_config: Callable[[str], Path], url: str, first: str, second_model: str = "b") -> str:
    return str(
        write_config(
            f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{url}"\n'
            '[models.a]\nname = "a"\nendpoint = "llama"\n'
            f'[models.b]\nname = "{second_model}"\nendpoint = "llama"\n'
            '[memory]\nbudget = "100GiB"\nheadroom = "0"\n'
            "[pipelines.p]\nstages = [\n"
            f'  {{ name = "one", model = "a", command = "{first}" }},\n'
            '  { name = "two", model = "b", command = "true" },\n]\n'
        )
    )


def gate(tmp_path: Path) -> Path:
    """A FIFO stage 1 reads to its end: it finishes only once the test has opened and closed it."""
    path = tmp_path / "gate"
    os.mkfifo(path)
    return path


def release(path: Path) -> None:
    with open(path, "w"):  # blocks until stage 1 opens it for reading; closing is its end of file
        pass


def observe(condition: Callable[[], bool], process: subprocess.Popen[str]) -> bool:
    """Poll the router until ``condition`` holds, while the run is still blocked in stage 1."""
    deadline = time.monotonic() + OBSERVE_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if condition():
            return True
        time.sleep(0.05)
    return False


def run(path: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "sourceprep_models", "--config", path, "run-pipeline", "p", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_stage_twos_model_is_loaded_while_stage_one_still_works(
    router: LlamaServer, write_config: Callable[[str], Path], tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    fifo = gate(tmp_path)
    path = pipeline(write_config, router.url, f"cat {fifo}")
    process = run(path)
    started.append(process)

    # Stage 1 cannot end before the test releases it: the router listing b now proves the overlap.
    seen = observe(lambda: router.loaded() == {"a", "b"}, process)
    release(fifo)
    out, err = process.communicate(timeout=OBSERVE_S)

    assert seen, f"b was not loaded during stage 1; the router lists {router.loaded()} loaded"
    assert process.returncode == 0, err
    rows = {row["stage"]: row for row in json.loads(out)["stages"]}
    assert (rows["one"]["action"], rows["two"]["action"]) == ("load", "preloaded")
    assert rows["two"]["hidden_s"] > 0 and rows["two"]["bytes_loaded"] > 0
    assert json.loads(out)["totals"]["loads"] == 2
    assert "loading b for stage 'two' while 'one' works" in err
    assert router.loaded() == {"a", "b"}


def test_no_overlap_loads_stage_twos_model_only_after_stage_one(
    cli: CliFn, router: LlamaServer, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    # Stage 1 writes down what the router holds as its last act.
    seen = tmp_path / "seen.json"
    script = tmp_path / "look.py"
    script.write_text(
        "import json, pathlib, httpx\n"
        f"data = httpx.get('{router.url}/models', timeout=10).json()['data']\n"
        f"pathlib.Path({str(seen)!r}).write_text(json.dumps({{m['id']: m['status']['value'] for m in data}}))\n"
    )
    path = pipeline(write_config, router.url, f"{PY} {script}")

    result = cli("--config", path, "run-pipeline", "p", "--no-overlap", "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(seen.read_text()) == {"a": "loaded", "b": "unloaded"}
    assert [row["action"] for row in result.json()["stages"]] == ["load", "load"]
    assert router.loaded() == {"a", "b"}


def test_a_failed_background_load_stops_the_stage_that_needed_it_and_resume_finishes(
    cli: CliFn, router: LlamaServer, write_config: Callable[[str], Path], model_files: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "models"
    data = model_files["a"].read_bytes()
    (folder / "broken.gguf").write_bytes(data[: len(data) // 2])  # header intact, tensors cut short: the load fails
    path = pipeline(write_config, router.url, "true", second_model="broken")

    stopped = cli("--config", path, "run-pipeline", "p", "--json")

    assert stopped.exit_code == 1, stopped.stderr
    lines = stopped.stderr.strip().splitlines()
    assert "Traceback" not in stopped.stderr
    message = lines[-1]
    assert message.startswith("error: stage 'two':") and "failed to load broken" in message and "--resume" in message
    rows = stopped.json()["stages"]
    assert [(row["stage"], row["status"]) for row in rows] == [("one", "ok")]  # stage 1 itself was fine
    assert router.loaded() == {"a"}

    (folder / "broken.gguf").write_bytes(model_files["b"].read_bytes())  # fixed
    resumed = cli("--config", path, "run-pipeline", "p", "--resume", "--json")

    assert resumed.exit_code == 0, resumed.stderr
    assert [row["action"] for row in resumed.json()["stages"]] == ["resumed", "load"]
    assert router.loaded() == {"a", "broken"}
