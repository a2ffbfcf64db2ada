"""`load` of a model Ollama already runs, with runner options beyond the context, against the emulator.

The emulator follows sched.go needsReload (tests/test_emulator.py test_reload_triggers_beyond_num_ctx):
main_gpu unset differs from 0, any negative num_gpu is automatic, draft_num_predict and num_thread
count, and on a CPU-only runner an explicit use_mmap=false matches the automatic one. The runner
here was loaded by another client with no options, as `ollama run` does; `load` must say "reloaded"
exactly when Ollama loads it again, which the emulator's load count shows.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import CliFn, WriteConfig
from tests.emulator import EmulatedModel

GPU_CASES = {
    "main_gpu 0 (unset before)": ("main_gpu = 0", "reloaded", 2),
    "num_gpu -2 (automatic, as -1)": ("num_gpu = -2", "already-loaded", 1),
    "num_gpu 0 (CPU only)": ("num_gpu = 0", "reloaded", 2),
    "draft_num_predict 4": ("draft_num_predict = 4", "reloaded", 2),
    "num_thread 4": ("num_thread = 4", "reloaded", 2),
    "num_thread 0 (the default)": ("num_thread = 0", "already-loaded", 1),
    "use_mmap false (automatic on a GPU)": ("use_mmap = false", "reloaded", 2),
    "sampling only": ("temperature = 0.2", "already-loaded", 1),
}

CPU_ONLY_CASES = {
    "use_mmap false (what the scheduler chose)": ("use_mmap = false", "already-loaded", 1),
    "use_mmap true": ("use_mmap = true", "reloaded", 2),
}


def load_with_options(cli: CliFn, emu, write_config: WriteConfig, options: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    # Another client loads it first, with Ollama's defaults.
    httpx.post(f"{emu.url}/api/generate", json={"model": "qwen3:4b", "prompt": "", "stream": False}, timeout=30)
    assert emu.load_count["qwen3:4b"] == 1
    path = write_config(
        f'[endpoints.ollama]\nkind = "ollama"\nurl = "{emu.url}"\n\n'
        f'[models.chat]\nname = "qwen3:4b"\noptions = {{ {options} }}\n'
    )
    result = cli("--config", str(path), "load", "chat", "--no-warm", "--json")
    assert result.exit_code == 0, result.stderr
    data: dict[str, object] = result.json()
    return data


@pytest.mark.parametrize(("options", "outcome", "loads"), GPU_CASES.values(), ids=GPU_CASES.keys())
def test_load_says_reloaded_exactly_when_ollama_reloads(  # type: ignore[no-untyped-def]
    cli: CliFn, ollama_emulator, write_config: WriteConfig, options: str, outcome: str, loads: int
) -> None:
    emu = ollama_emulator(models=[EmulatedModel("qwen3:4b", file_mib=4)], gpu_vram_mib=64)

    data = load_with_options(cli, emu, write_config, options)

    assert (data["outcome"], emu.load_count["qwen3:4b"]) == (outcome, loads)
    assert emu.loaded_names() == ["qwen3:4b"]


@pytest.mark.parametrize(("options", "outcome", "loads"), CPU_ONLY_CASES.values(), ids=CPU_ONLY_CASES.keys())
def test_load_on_a_cpu_only_server_knows_the_automatic_use_mmap(  # type: ignore[no-untyped-def]
    cli: CliFn, ollama_emulator, write_config: WriteConfig, options: str, outcome: str, loads: int
) -> None:
    emu = ollama_emulator(models=[EmulatedModel("qwen3:4b", file_mib=4)], gpu_vram_mib=None)

    data = load_with_options(cli, emu, write_config, options)

    assert (data["outcome"], emu.load_count["qwen3:4b"]) == (outcome, loads)
