"""The Ollama provider's reading of the runner's dying words, against the emulator.

When llama-server dies while loading, Ollama answers "llama-server process has terminated: exit
status 1: <the runner's error lines>" (llm/llama_server.go waitUntilRunning, with the lines
llm/status.go StatusWriter kept). Any of llm/status.go's outOfMemorySubstrings in them means the
model did not fit: that is exit 6, whichever GPU library wrote it.
"""

from __future__ import annotations

import pytest

from tests.conftest import CliFn
from tests.emulator import EmulatedModel

# One runner line per needle of llm/status.go outOfMemorySubstrings (IsOutOfMemoryMessage), in the
# words of the library that prints it; none of them contains another needle.
DYING_WORDS = {
    "out of memory": "ggml_backend_cpu_buffer_type_alloc_buffer: out of memory",
    "out of device memory": "ggml_vulkan: device memory: out of device memory",
    "cudaMalloc failed": "ggml_backend_cuda_buffer_type_alloc_buffer: 4096.00 MiB on device 0: cudaMalloc failed",
    "hipMalloc failed": "ggml_backend_cuda_buffer_type_alloc_buffer: 4096.00 MiB on device 0: hipMalloc failed",
    "failed to allocate": "ggml_gallocr_reserve_n: failed to allocate ROCm0 buffer of size 4294967296",
    "allocation failed": "ggml_metal_buffer_init: buffer allocation failed",
    "not enough memory": "llama_kv_cache: not enough memory for the KV cache",
    "insufficient memory": "ggml_sycl: insufficient memory on device 0",
    "vk_error_out_of_device_memory": "vk::Device::allocateMemory: VK_ERROR_OUT_OF_DEVICE_MEMORY",
    "erroroutofmemory": "vk::Device::allocateMemory: ErrorOutOfMemory",
}


@pytest.mark.parametrize("needle", sorted(DYING_WORDS))
def test_a_runner_that_dies_of_any_out_of_memory_text_is_does_not_fit(  # type: ignore[no-untyped-def]
    cli: CliFn, ollama_emulator, monkeypatch: pytest.MonkeyPatch, needle: str
) -> None:
    emu = ollama_emulator(models=[EmulatedModel("qwen3:4b", file_mib=8)], gpu_vram_mib=64)
    monkeypatch.setenv("OLLAMA_HOST", emu.url)
    line = DYING_WORDS[needle]
    assert needle.lower() in line.lower()
    emu.faults.crash_log = {"qwen3:4b": f"llama_model_load: loading model tensors\n{line}\n"}

    result = cli("load", "qwen3:4b", "--no-warm")

    assert result.exit_code == 6, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: qwen3:4b does not fit in memory on Ollama at")
    # The server's own words stay in the message (status.go may keep only a line's tail).
    assert "llama-server process has terminated" in error and needle.lower() in error.lower()
    assert "--ctx" in error  # the fix
    assert emu.loaded_names() == []


def test_a_runner_that_dies_of_something_else_stays_a_server_error(  # type: ignore[no-untyped-def]
    cli: CliFn, ollama_emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = ollama_emulator(models=[EmulatedModel("qwen3:4b", file_mib=8)], gpu_vram_mib=64)
    monkeypatch.setenv("OLLAMA_HOST", emu.url)
    emu.faults.crash_log = {"qwen3:4b": "error loading model: unknown model architecture: 'nemotron9'\n"}

    result = cli("load", "qwen3:4b", "--no-warm")

    assert result.exit_code == 1, result.stderr
    assert "unknown model architecture" in result.stderr and "does not fit" not in result.stderr
    assert emu.loaded_names() == []
