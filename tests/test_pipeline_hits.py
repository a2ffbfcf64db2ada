"""Between stages, a planned hit costs a listing of its own server and nothing more: no swap lock (nothing
changes), yet a model that left meanwhile is loaded again before its stage works."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from sourceprep_models.pipeline import run as pipeline_run
from tests.conftest import CliFn, WriteConfig
from tests.emulator import EmulatedModel

TWO_STAGES = """
[models.fast]
name = "fast:1b"
[pipelines.twice]
stages = [
  {{ name = "one", model = "fast", command = "{first}" }},
  {{ name = "two", model = "fast", command = "true" }},
]
"""


@pytest.fixture
def emu(ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    emulator = ollama_emulator(models=[EmulatedModel("fast:1b", file_mib=2)], gpu_vram_mib=None, unload_delay_s=0.02)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def test_planned_hits_run_while_another_process_holds_the_servers_swap_lock(
    cli: CliFn, emu: Any, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from filelock import FileLock

    from sourceprep_models.swap.locks import lock_path

    path = str(write_config(TWO_STAGES.format(first="true")))
    assert cli("--config", path, "load", "fast").exit_code == 0
    # Without the fix each hit waits for the lock; a short wait makes that a failure instead of a hang.
    monkeypatch.setattr(pipeline_run, "LOCK_TIMEOUT_S", 0.5)
    lock = lock_path(emu.url)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):  # another sourceprep-models in the middle of a swap on this server
        result = cli("--config", path, "run-pipeline", "twice", "--json")

    assert result.exit_code == 0, result.stderr
    assert [row["action"] for row in result.json()["stages"]] == ["hit", "hit"]
    assert "waiting for another sourceprep-models" not in result.stderr
    assert emu.loaded_names() == ["fast:1b"]


UNLOAD = """
import json, sys, time, urllib.request as http
url = sys.argv[1]
body = json.dumps({"model": "fast:1b", "keep_alive": 0}).encode()
http.urlopen(http.Request(url + "/api/generate", body)).read()
while json.load(http.urlopen(url + "/api/ps"))["models"]:
    time.sleep(0.01)
"""


def test_a_model_unloaded_between_stages_is_loaded_again_before_the_next_hit(
    cli: CliFn, emu: Any, write_config: WriteConfig, tmp_path: Path
) -> None:
    # Stage one's command unloads the model (as an expiry or another client would) and waits until it is gone.
    script = tmp_path / "unload.py"
    script.write_text(UNLOAD, encoding="utf-8")
    path = str(write_config(TWO_STAGES.format(first=f"{sys.executable} {script} {emu.url}")))

    result = cli("--config", path, "run-pipeline", "twice", "--json")

    assert result.exit_code == 0, result.stderr
    stages = result.json()["stages"]
    assert [row["action"] for row in stages] == ["load", "load"]
    assert stages[1]["bytes_loaded"] > 0
    assert emu.loaded_names() == ["fast:1b"]
