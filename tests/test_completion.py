"""Tab completion as the shell drives it: model keys, pipelines, endpoints and strategies come from
the config file, and pressing TAB never talks to a server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli_basics import COMMAND

CONFIG = """\
[endpoints.ollama]
kind = "ollama"
url = "http://127.0.0.1:{port}"

[endpoints.studio]
kind = "lmstudio"
url = "http://localhost:{port}/studio"

[models.embed]
name = "nomic-embed-text"

[models.rerank]
name = "bge-reranker-v2"

[models.writer]
name = "qwen3:4b"
endpoint = "studio"

[pipelines.trace]
description = "trace the sources"
stages = [{{ model = "embed", prompts = ["hi"] }}]

[pipelines.review]
stages = [{{ model = "writer", prompts = ["hi"] }}]
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """The configured servers' port: listening, so that any connection TAB made would be seen."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


@pytest.fixture
def config(tmp_path: Path, listener: socket.socket) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(CONFIG.format(port=listener.getsockname()[1]), encoding="utf-8")
    return path


def connections(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            peer, _ = listener.accept()
        except BlockingIOError:
            return count
        peer.close()
        count += 1


def complete(shell: str, line: str, config: Path | None) -> list[str]:
    """What the shell's completion script gets back for the command line ``line`` (cursor at its end)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCEPREP_MODELS_")}
    if config is not None:
        env["SOURCEPREP_MODELS_CONFIG"] = str(config)
    env["_SOURCEPREP_MODELS_COMPLETE"] = f"complete_{shell}"
    if shell == "bash":  # completions/sourceprep-models.bash
        words = line.split(" ")
        env.update(COMP_WORDS=line, COMP_CWORD=str(len(words) - 1))
    else:  # completions/sourceprep-models.{zsh,fish}: the line up to the cursor
        env["_TYPER_COMPLETE_ARGS"] = line
        if shell == "fish":
            env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    result = subprocess.run([COMMAND], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    if shell == "bash":
        return result.stdout.split()
    if shell == "fish":
        return [line.split("\t")[0] for line in result.stdout.splitlines()]
    # zsh: _arguments '*: :(("value":"help" ...))'
    return [item.split('":"')[0].lstrip('"') for item in result.stdout.split("(", 2)[2].splitlines()]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
@pytest.mark.parametrize("command", ["load", "unload", "pin", "bench"])
def test_model_arguments_complete_to_the_configured_keys(
    shell: str, command: str, config: Path, listener: socket.socket
) -> None:
    assert complete(shell, f"sourceprep-models {command} ", config) == ["embed", "rerank", "writer"]
    assert connections(listener) == 0  # TAB read the config only


def test_completion_narrows_to_the_typed_prefix_and_reads_config_given_after_the_command(config: Path) -> None:
    assert complete("bash", "sourceprep-models load r", config) == ["rerank"]
    assert complete("bash", "sourceprep-models load embed w", config) == ["writer"]  # the second of MODEL...
    assert complete("bash", f"sourceprep-models pin --config {config} e", None) == ["embed"]
    assert complete("bash", f"sourceprep-models -c {config} bench ", None) == ["embed", "rerank", "writer"]


def test_pipeline_endpoint_and_strategy_values_complete(config: Path, listener: socket.socket) -> None:
    assert complete("bash", "sourceprep-models run-pipeline ", config) == ["trace", "review"]
    assert complete("zsh", "sourceprep-models status --endpoint ", config) == ["ollama", "studio"]
    assert complete("bash", "sourceprep-models load embed -e s", config) == ["studio"]
    from sourceprep_models.planning.lookahead import STRATEGIES

    strategies = complete("bash", "sourceprep-models run-pipeline trace --strategy ", config)
    assert strategies == ["lookahead", "lru", "ollama", "unload-all"] == list(STRATEGIES)  # what run-pipeline takes
    assert connections(listener) == 0


def test_without_a_usable_config_tab_offers_nothing_and_never_fails(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("models = [\n", encoding="utf-8")
    assert complete("bash", "sourceprep-models load ", broken) == []
    assert complete("bash", "sourceprep-models load ", tmp_path / "missing.toml") == []


def test_completion_stays_on_the_cli_layer_without_heavy_imports(config: Path) -> None:
    code = (
        "import os, sys\n"
        "from sourceprep_models.cli import complete\n"
        "from sourceprep_models.cli.app import app\n"
        "import typer.main\n"
        "ctx = typer.main.get_command(app).make_context('sourceprep-models', ['load'], resilient_parsing=True)\n"
        "print([key for key, _ in complete.models(ctx)])\n"
        "print(','.join(m for m in ('httpx', 'rich.table', 'psutil') if m in sys.modules))\n"
    )
    env = {**os.environ, "SOURCEPREP_MODELS_CONFIG": str(config)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["['embed', 'rerank', 'writer']", ""]
