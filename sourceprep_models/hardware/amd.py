"""AMD GPUs on Linux from amdgpu's sysfs files (no ROCm tools needed; hardware.md §2.3)."""

from __future__ import annotations

import re

from ._records import GPU, GiB, Unknown, parse_int
from ._system import ProbeSystem

AMD_PCI_VENDOR = "0x1002"
CARD_VENDOR_GLOB = "/sys/class/drm/card*/device/vendor"

# Ollama's iGPU rule (discover/amd.go): a small VRAM carve-out next to a much larger GTT window
# means the GPU really works out of system RAM.
_IGPU_MAX_VRAM = 4 * GiB
_IGPU_GTT_FACTOR = 4

_CARD = re.compile(r"/card(\d+)/device/vendor$")


def detect_amd(system: ProbeSystem, unknowns: list[Unknown]) -> list[GPU]:
    cards: list[tuple[int, str]] = []
    for vendor_path in system.glob(CARD_VENDOR_GLOB):
        match = _CARD.search(vendor_path)  # skips connector entries such as card0-DP-1
        if match is None:
            continue
        vendor = system.read_text(vendor_path)
        if vendor is not None and vendor.strip().lower() == AMD_PCI_VENDOR:
            cards.append((int(match.group(1)), vendor_path[: -len("vendor")]))

    gpus: list[GPU] = []
    for number, device_dir in sorted(cards):
        total = parse_int(_read(system, device_dir + "mem_info_vram_total"))
        used = parse_int(_read(system, device_dir + "mem_info_vram_used"))
        gtt = parse_int(_read(system, device_dir + "mem_info_gtt_total"))
        if total is None:
            unknowns.append(Unknown("amd", f"card{number}: no mem_info_vram_total (not the amdgpu driver?)"))
        unified = total is not None and gtt is not None and total <= _IGPU_MAX_VRAM and gtt >= _IGPU_GTT_FACTOR * total
        name = (
            _read(system, device_dir + "product_name")
            or f"AMD GPU {_read(system, device_dir + 'device') or f'card{number}'}"
        )
        gpus.append(
            GPU(
                index=len(gpus),
                vendor="amd",
                name=name,
                total_bytes=total,
                free_bytes=None if total is None or used is None else max(0, total - used),
                unified=unified,
                source="sysfs",
            )
        )
    return gpus


def _read(system: ProbeSystem, path: str) -> str | None:
    text = system.read_text(path)
    return text.strip() if text is not None else None
