"""Every command's `--json` document against the contract in docs/json.md."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliFn
from tests.emulator import EmulatedModel

MODELS = [
    EmulatedModel("fast:1b", file_mib=4),
    EmulatedModel("coder:7b", file_mib=6),
    EmulatedModel("embed:small", file_mib=2, capabilities=["embedding"]),
]

CONFIG = """
[models.fast]
name = "fast:1b"
[models.coder]
name = "coder:7b"

[pipelines.trace]
stages = [
  { name = "list", model = "fast", prompts = ["list the files"] },
  { name = "code", model = "coder", prompts = ["write it"] },
]
"""


@pytest.fixture
def setup(ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]) -> str:
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=None, max_loaded_models=4, unload_delay_s=0.01)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return str(write_config(CONFIG))


def test_dump(cli: CliFn, setup: str) -> None:
    out = {}
    for name, args in [
        ("status", ("status",)),
        ("load_dry", ("load", "fast", "--dry-run")),
        ("load", ("load", "fast")),
        ("load_many", ("load", "fast", "coder")),
        ("unload", ("unload", "fast")),
        ("pin", ("pin", "coder")),
        ("pin_list", ("pin",)),
        ("pin_repair", ("pin", "--repair")),
        ("run_dry", ("run-pipeline", "trace", "--dry-run")),
        ("run", ("run-pipeline", "trace")),
        ("doctor", ("doctor",)),
        ("bench", ("bench", "fast")),
        ("bench_alt", ("bench", "fast", "coder", "--alternate", "2")),
        ("wait", ("wait",)),
        ("err_load", ("load", "nope")),
        ("err_usage", ("load", "--ctx", "5")),
    ]:
        result = cli("--config", setup, *args, "--json")
        out[name] = {"exit": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}
    Path("/tmp/i15/dump.json").write_text(json.dumps(out, indent=1))
