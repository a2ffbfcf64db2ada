"""The README's examples and every command's help example work as written: each `sourceprep-models ...`
line is run through a shell, as a user would paste it, against the Ollama emulator with a small config
that defines the models and the pipeline the examples name. Each example is either in `EXAMPLES` (the
exit code the README documents for it, the state it is written for, what the server holds afterwards)
or in `SKIPPED` with the reason, so a new example cannot go unrun by accident."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.emulator import EmulatedModel

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# The examples name these models: by server name (qwen3:4b, ...) or by config key (embed, rerank).
MODELS = [
    EmulatedModel("qwen3:4b", file_mib=4),
    EmulatedModel("qwen3:14b", file_mib=6),
    EmulatedModel("qwen3-coder:30b", file_mib=8),
    EmulatedModel("embed:small", file_mib=2, capabilities=["embedding"]),
    EmulatedModel("rerank:small", file_mib=3),
]

# The `trace` pipeline's first stage fails while a file `stop` exists beside the config (a stage command
# runs in the config's directory, which is also the examples' working directory): that is how the
# `--resume` example gets the failed run it is written for.
CONFIG = """\
[models.embed]
name = "embed:small"
kind = "embedding"
[models.rerank]
name = "rerank:small"

[memory]
budget = "1GiB"
headroom = "0"

[pipelines.trace]
stages = [
  { name = "index", model = "embed", command = "test ! -e stop" },
  { name = "answer", model = "rerank", prompts = ["hello"], max_tokens = 4 },
]
"""


@dataclass(frozen=True)
class Example:
    """How a documented example is run and what it must leave behind."""

    exit_code: int = 0
    # Shell lines run first (in order, each with its exit code): the state the example is written for.
    before: tuple[tuple[str, int], ...] = ()
    # The models the server lists afterwards; None where the example says nothing about it.
    loaded: frozenset[str] | None = None
    # Text the example's stdout must show.
    shows: tuple[str, ...] = ()


def held(*names: str) -> frozenset[str]:
    return frozenset(names)


PINNED_4B = ("sourceprep-models pin qwen3:4b", 0)

EXAMPLES: dict[str, Example] = {
    "sourceprep-models status": Example(loaded=held(), shows=("(nothing loaded)",)),
    "sourceprep-models status --json": Example(loaded=held(), shows=('"schema_version"',)),
    "sourceprep-models status --json > residency.json": Example(loaded=held()),
    "sourceprep-models load qwen3:4b": Example(loaded=held("qwen3:4b")),
    "sourceprep-models load qwen3:4b --keep-alive 30m --ctx 8192": Example(loaded=held("qwen3:4b")),
    "sourceprep-models load qwen3:4b --keep-alive forever": Example(loaded=held("qwen3:4b")),
    "sourceprep-models load embed rerank": Example(loaded=held("embed:small", "rerank:small")),
    "sourceprep-models load embed rerank --keep-alive 30m": Example(loaded=held("embed:small", "rerank:small")),
    "sourceprep-models load qwen3-coder:30b --dry-run": Example(loaded=held(), shows=("qwen3-coder:30b",)),
    "sourceprep-models load qwen3-coder:30b --single-model": Example(
        before=(("sourceprep-models load qwen3:4b", 0),), loaded=held("qwen3-coder:30b")
    ),
    "sourceprep-models pin qwen3:4b": Example(loaded=held("qwen3:4b")),
    "sourceprep-models pin --remove qwen3:4b": Example(before=(PINNED_4B,)),
    "sourceprep-models pin": Example(before=(PINNED_4B,), shows=("qwen3:4b",)),
    # A pin the server lost (here: unloaded together with everything else) comes back.
    "sourceprep-models pin --repair": Example(
        before=(PINNED_4B, ("sourceprep-models unload --all --include-pins", 0)), loaded=held("qwen3:4b")
    ),
    "sourceprep-models unload qwen3:4b": Example(before=(("sourceprep-models load qwen3:4b", 0),), loaded=held()),
    "sourceprep-models unload --all": Example(
        before=(PINNED_4B, ("sourceprep-models load embed", 0)), loaded=held("qwen3:4b")
    ),
    "sourceprep-models run-pipeline trace": Example(),
    "sourceprep-models run-pipeline trace --dry-run": Example(loaded=held(), shows=("index", "answer")),
    "sourceprep-models run-pipeline trace --resume": Example(
        before=(("touch stop", 0), ("sourceprep-models run-pipeline trace", 1), ("rm stop", 0))
    ),
    "sourceprep-models run-pipeline trace --json --report run.json": Example(shows=('"stages"',)),
    "sourceprep-models run-pipeline trace --dry-run --strategy lru": Example(loaded=held()),
    # Exit 0 with no problem, 1 with any: the emulated server and this config have none.
    "sourceprep-models doctor": Example(loaded=held()),
    "sourceprep-models doctor --json": Example(loaded=held()),
    "sourceprep-models wait --timeout 2m": Example(loaded=held()),
    "sourceprep-models bench qwen3:4b qwen3:14b": Example(shows=("qwen3:4b", "qwen3:14b")),
    "sourceprep-models bench embed rerank --alternate 10": Example(shows=("recommendation",)),
    "python -m sourceprep_models status": Example(loaded=held()),
}

SKIPPED: dict[str, str] = {
    "sourceprep-models --install-completion": (
        "writes the completion into the user's shell startup file for the shell it detects; "
        "the generated scripts are checked by tests/test_cli_basics.py"
    ),
}

# A command line of this tool: the installed script (by name or by path) or the module, with arguments
# (the bare name is prose: "two `sourceprep-models` processes").
TOOL = re.compile(r"^(?:\S*/)?(sourceprep-models|python3? -m sourceprep_models)(?=\s+\S)")


def tool_commands(line: str) -> list[str]:
    """The tool's commands on one shell line, its comment dropped; `.venv/bin/x` is written `x`."""
    code = re.split(r"\s#\s", line, maxsplit=1)[0]
    found = []
    for part in code.split("&&"):
        match = TOOL.match(part.strip())
        if match:
            found.append(match.group(1) + part.strip()[match.end() :].rstrip())
    return found


def readme_examples(text: str) -> list[str]:
    """Every tool command in the README: the lines of its `sh` blocks and its inline code."""
    found: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            found += tool_commands(line)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    for span in re.findall(r"`([^`\n]+)`", prose):
        found += tool_commands(span)
    return found


def help_examples() -> list[str]:
    """The `Example:` of every command's help (what follows it in parentheses is a remark)."""
    import typer.main

    from sourceprep_models.cli.app import app

    group: Any = typer.main.get_command(app)
    found = []
    for name in group.list_commands(None):
        text = group.get_command(None, name).help or ""
        found += [m.strip() for m in re.findall(r"Example: (sourceprep-models .+?)(?:\s{2,}\(|$)", text, re.M)]
    return found


def all_examples() -> list[str]:
    return list(dict.fromkeys(readme_examples(README.read_text(encoding="utf-8")) + help_examples()))


def test_every_example_is_run_or_listed_as_skipped() -> None:
    examples = set(all_examples())

    assert examples - EXAMPLES.keys() - SKIPPED.keys() == set(), "a new example: add it to EXAMPLES or SKIPPED"
    assert (EXAMPLES.keys() | SKIPPED.keys()) - examples == set(), "listed here but no longer documented"
    assert EXAMPLES.keys().isdisjoint(SKIPPED.keys())


def test_every_command_help_has_an_example_that_is_found() -> None:
    from tests.test_help import COMMANDS

    assert sorted(example.split()[1] for example in help_examples()) == sorted(COMMANDS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sourceprep-models status   # only looks", ["sourceprep-models status"]),
        ("python3 -m venv .venv && .venv/bin/sourceprep-models status", ["sourceprep-models status"]),
        ("python -m sourceprep_models status  # same", ["python -m sourceprep_models status"]),
        ("sourceprep-models status --json > residency.json", ["sourceprep-models status --json > residency.json"]),
        ("pip install sourceprep-models-extra", []),
        ("sourceprep-models", []),
        ("```sh\nsourceprep-models a\n```\nthen `sourceprep-models b`, not `other c`", None),
    ],
)
def test_the_example_reader_finds_tool_lines(text: str, expected: list[str] | None) -> None:
    if expected is None:
        assert readme_examples(text + "\n") == ["sourceprep-models a", "sourceprep-models b"]
    else:
        assert tool_commands(text) == expected


@pytest.fixture
def shell(ollama_emulator: Any, tmp_path: Path) -> tuple[Any, Path, dict[str, str]]:
    """A working directory, an environment whose PATH has this tool and `python`, and the emulator."""
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=None, max_loaded_models=8, unload_delay_s=0.01)
    work = tmp_path / "work"
    bin_dir = tmp_path / "bin"
    work.mkdir()
    bin_dir.mkdir()
    config = work / "models.toml"
    config.write_text(CONFIG, encoding="utf-8")
    installed = Path(sys.executable).with_name("sourceprep-models")
    tool = f'exec "{installed}" "$@"' if installed.exists() else f'exec "{sys.executable}" -m sourceprep_models "$@"'
    for name, body in (("sourceprep-models", tool), ("python", f'exec "{sys.executable}" "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "OLLAMA_HOST": emulator.url,
        "SOURCEPREP_MODELS_CONFIG": str(config),
    }
    return emulator, work, env


def run_line(line: str, work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The timeout only ends a hung command; nothing here measures speed.
    return subprocess.run(
        ["sh", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("line", sorted(EXAMPLES))
def test_the_example_works_as_documented(line: str, shell: tuple[Any, Path, dict[str, str]]) -> None:
    emulator, work, env = shell
    example = EXAMPLES[line]
    for step, code in example.before:
        done = run_line(step, work, env)
        assert done.returncode == code, f"{step}: {done.stderr}"

    done = run_line(line, work, env)

    assert done.returncode == example.exit_code, done.stderr
    assert "Traceback" not in done.stderr
    assert "Usage:" not in done.stderr and "No such option" not in done.stderr
    for text in example.shows:
        assert text in done.stdout
    if example.loaded is not None:
        assert set(emulator.loaded_names()) == example.loaded
