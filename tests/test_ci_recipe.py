"""The CI recipe in examples/ works as written: every `sourceprep-models` step of it runs, in order,
against the Ollama emulator standing in for the job's Ollama service (the other steps — checkout,
pip, the pulls, the tests — are the job's own)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.emulator import EmulatedModel

RECIPE = Path(__file__).resolve().parent.parent / "examples" / "github-actions.yml"


def tool_steps(text: str) -> list[str]:
    """The recipe's `run:` lines that call this tool, in order."""
    return [match.group(1).strip() for match in re.finditer(r"run: (sourceprep-models [^\n]+)", text)]


def test_the_recipe_calls_the_tool_for_wait_load_and_status() -> None:
    steps = [shlex.split(step)[1] for step in tool_steps(RECIPE.read_text())]
    assert steps == ["wait", "load", "status"]


def test_every_tool_step_of_the_recipe_succeeds_against_the_emulator(
    ollama_emulator,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    models = [
        EmulatedModel("qwen3:0.6b", file_mib=4),
        EmulatedModel("nomic-embed-text", file_mib=2, capabilities=["embedding"]),
    ]
    emulator = ollama_emulator(models=models, gpu_vram_mib=256)
    env = {**os.environ, "OLLAMA_HOST": emulator.url}
    for step in tool_steps(RECIPE.read_text()):
        command, _, redirect = step.partition(" > ")
        argv = [sys.executable, "-m", "sourceprep_models", *shlex.split(command)[1:]]
        done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{step}: {done.stderr}"
        if redirect:
            (tmp_path / redirect.strip()).write_text(done.stdout)

    residency = json.loads((tmp_path / "residency.json").read_text())
    loaded = {model["name"] for endpoint in residency["endpoints"] for model in endpoint["models"]}
    assert loaded == {"qwen3:0.6b", "nomic-embed-text:latest"}
    assert sorted(emulator.loaded_names()) == ["nomic-embed-text:latest", "qwen3:0.6b"]


@pytest.mark.parametrize("line", ["run: sourceprep-models load a b --keep-alive 30m"])
def test_the_step_reader_finds_a_tool_line(line: str) -> None:
    assert tool_steps(line) == ["sourceprep-models load a b --keep-alive 30m"]
