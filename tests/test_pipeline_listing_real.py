"""Between two stages a pipeline asks a REAL llama-server router whether the next stage's model is still loaded,
and the router's listing measures each model's child process (its resident bytes). The children are found once
by scanning the machine's process table and then asked directly: a run of hits does not scan again per stage."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliFn
from tests.realserver.make_gguf import PRESETS, write_model
from tests.realserver.router import LlamaServer, llama_server, require_binary

pytestmark = pytest.mark.realserver


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Callable[[int], LlamaServer]]:
    """Start a router over two tiny models; stopped by PID when the test ends."""
    pytest.importorskip("gguf", reason="the model generator needs the gguf package (pip install gguf)")
    binary = require_binary()
    models = tmp_path / "models"
    models.mkdir()
    for index, name in enumerate(("tiny-a", "tiny-b")):
        write_model(models / f"{name}.gguf", PRESETS["tiny"], seed=index)
    stack = contextlib.ExitStack()

    def start(models_max: int) -> LlamaServer:
        flags = ("--models-dir", str(models), "--models-max", str(models_max), "--no-models-autoload", "-c", "768")
        return stack.enter_context(llama_server(binary, tmp_path, *flags))

    with stack:
        yield start


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count the scans of the whole process table."""
    import psutil

    counted: list[int] = []
    original = psutil.process_iter

    def counting(*args: Any, **kwargs: Any) -> Any:
        counted.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(psutil, "process_iter", counting)
    yield counted


def pipeline(write_config: Callable[[str], Path], url: str, models: str) -> str:
    stages = ", ".join(
        f'{{ name = "s{index}", model = "{name}", command = "true" }}' for index, name in enumerate(models)
    )
    return str(
        write_config(
            f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{url}"\n'
            '[models.a]\nname = "tiny-a"\n[models.b]\nname = "tiny-b"\n'
            f"[pipelines.p]\nstages = [{stages}]\n"
        )
    )


def test_a_run_of_hits_finds_the_models_children_once(
    cli: CliFn, router: Callable[[int], LlamaServer], write_config: Callable[[str], Path], scans: list[int]
) -> None:
    server = router(2)
    path = pipeline(write_config, server.url, "abababab")
    assert cli("--config", path, "run-pipeline", "p", "--json").exit_code == 0  # loads both
    scans.clear()

    result = cli("--config", path, "run-pipeline", "p", "--json")

    assert result.exit_code == 0, result.stderr
    assert [row["action"] for row in result.json()["stages"]] == ["hit"] * 8
    assert server.loaded() == {"tiny-a", "tiny-b"}
    assert len(scans) <= 1  # the first listing finds both children; the eight stages' checks ask them directly
