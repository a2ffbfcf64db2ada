"""Two REAL llama-server routers on this machine's loopback, each with its own models folder holding
the same tiny generated GGUFs (``MODELS``): the fixtures the one-machine and the several-hosts tests share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realserver.make_gguf import PRESETS, write_model
from tests.realserver.router import LlamaServer, llama_server, require_binary

MODELS = ("tiny-a", "tiny-b", "tiny-c")


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("gguf", reason="the model generator needs the gguf package (pip install gguf)")
    folder = tmp_path_factory.mktemp("gguf")
    return {
        name: write_model(folder / f"{name}.gguf", PRESETS["tiny"], seed=index) for index, name in enumerate(MODELS)
    }


@pytest.fixture
def routers(model_files: dict[str, Path], tmp_path: Path) -> Iterator[tuple[LlamaServer, LlamaServer]]:
    """Two routers on this machine, each with its own models folder; both stopped by PID afterwards."""
    binary = require_binary()
    with contextlib.ExitStack() as stack:
        started = []
        for side in ("a", "b"):
            folder = tmp_path / f"models-{side}"
            folder.mkdir()
            for path in model_files.values():
                (folder / path.name).symlink_to(path)
            started.append(
                stack.enter_context(
                    llama_server(
                        binary, tmp_path, "--models-dir", str(folder), "--models-max", "2", "--no-models-autoload"
                    )
                )
            )
        yield started[0], started[1]
