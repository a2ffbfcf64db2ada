"""When Ollama's runner reads a model's weights with direct I/O, bypassing the page cache.

Ollama starts llama-server for each model (llm/llama_server.go, ``startLlamaServer``). On Linux, when
any GPU the model is scheduled on is an integrated CUDA or ROCm device, it adds ``--load-mode dio``
(``appendLoadModeArgs``; its comment: such GPUs "share system memory with the CPU and would otherwise
double-buffer weights"). That arrived in 0.32.2 as ``--direct-io`` (commit 72116bafb, "llama: enable
dio on linux CUDA/ROCm iGPUs", #17286) and became ``--load-mode dio`` in 0.32.6 (c82ebbd5b, #17545).
Integrated Metal GPUs (Apple) and discrete GPUs keep reading through the page cache.

Seen from outside, that is: the Ollama server runs on this machine, it is 0.32.2 or newer, the OS is
Linux, and the hardware probe found an NVIDIA or AMD GPU that uses system RAM (``unified``: DGX
Spark/GB10, Jetson, Strix Halo). A model that Ollama schedules on the CPU alone gets no GPU list and
so no direct I/O; this rule cannot see that choice in advance and counts it as direct I/O too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# The first release that passes direct I/O to its runner (see above).
FIRST_VERSION = (0, 32, 2)
_VENDORS = ("nvidia", "amd")  # CUDA and ROCm devices; the probe names them by vendor


def direct_io_reason(version: str | None, hardware: Mapping[str, Any]) -> str | None:
    """Why Ollama ``version`` on this machine (the probe's ``hardware`` record) loads with direct I/O; None: it
    does not (or the version is unknown).

    >>> spark = {"os": "linux", "gpus": [{"vendor": "nvidia", "name": "NVIDIA GB10", "unified": True}]}
    >>> direct_io_reason("0.32.6", spark)
    'Ollama 0.32.6 starts its runner with --load-mode dio on Linux with an integrated GPU (NVIDIA GB10)'
    >>> direct_io_reason("0.32.1", spark) is None
    True
    """
    parsed = _version(version)
    if parsed is None or parsed < FIRST_VERSION or hardware.get("os") != "linux":
        return None
    gpus = hardware.get("gpus") or ()
    integrated = [
        gpu for gpu in gpus if isinstance(gpu, Mapping) and gpu.get("unified") and gpu.get("vendor") in _VENDORS
    ]
    if not integrated:
        return None
    flag = "--load-mode dio" if parsed >= (0, 32, 6) else "--direct-io"
    name = integrated[0].get("name")
    return f"Ollama {version} starts its runner with {flag} on Linux with an integrated GPU ({name})"


def _version(version: str | None) -> tuple[int, int, int] | None:
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version or "")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None
