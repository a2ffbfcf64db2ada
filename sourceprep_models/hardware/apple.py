"""macOS: Apple Silicon detection (Rosetta-proof) and the GPU's share of unified memory."""

from __future__ import annotations

from dataclasses import dataclass

from ._records import GPU, GiB, MiB, Unknown, describe, parse_int
from ._system import ProbeSystem

SYSCTL_KEYS = (
    "hw.memsize",
    "machdep.cpu.brand_string",
    "hw.optional.arm64",
    "sysctl.proc_translated",
    "iogpu.wired_limit_mb",
    "debug.iogpu.wired_limit",
)

# Below or at this much RAM the default Metal working set has been 2/3 of RAM, above it 3/4
# (hardware.md §1.2: 32 GB Macs report 2/3, 36 GB Macs already 3/4).
_TWO_THIRDS_UP_TO = 32 * GiB


@dataclass(frozen=True)
class AppleView:
    apple_silicon: bool
    rosetta: bool
    cpu: str | None
    ram_total: int | None  # hw.memsize, for when psutil could not answer
    gpu: GPU | None
    budget_bytes: int | None
    budget_source: str


def fallback_working_set(ram_total: int) -> tuple[int, str]:
    """The default working set before macOS 26 when Metal cannot be asked (conservative on 26)."""
    if ram_total <= _TWO_THIRDS_UP_TO:
        return ram_total * 2 // 3, "2/3 of RAM (fallback rule)"
    return ram_total * 3 // 4, "3/4 of RAM (fallback rule)"


def detect_apple(system: ProbeSystem, machine: str, ram_total: int | None, unknowns: list[Unknown]) -> AppleView:
    try:
        values = system.sysctl(SYSCTL_KEYS)
    except Exception as exc:
        unknowns.append(Unknown("apple.sysctl", describe(exc)))
        values = {}

    # hw.optional.arm64 stays 1 inside Rosetta, where platform.machine() says x86_64 (hardware.md §1.1).
    if "hw.optional.arm64" in values:
        apple_silicon = parse_int(values["hw.optional.arm64"]) == 1
    else:
        # The key is missing on Intel Macs; if sysctl answered nothing at all, a native arm64 process
        # is still proof enough.
        apple_silicon = not values and machine == "arm64"
        if not values and machine != "arm64":
            unknowns.append(Unknown("apple", "sysctl gave no answer; cannot tell Intel from Rosetta"))
    rosetta = parse_int(values.get("sysctl.proc_translated")) == 1
    cpu = values.get("machdep.cpu.brand_string") or None
    memsize = parse_int(values.get("hw.memsize"))
    ram = ram_total if ram_total is not None else memsize

    if not apple_silicon:
        # Ollama treats Intel Macs as CPU only (hardware.md §1.3).
        return AppleView(False, rosetta, cpu, memsize, None, None, "")

    budget, source, phrase = _working_set(system, values, ram, unknowns)
    # Under Rosetta the brand string is the emulated CPU ("VirtualApple @ 2.50GHz"), not the chip.
    name = cpu if cpu and cpu.startswith("Apple") else "Apple Silicon GPU"
    gpu = GPU(
        index=0,
        vendor="apple",
        name=name,
        total_bytes=budget,
        free_bytes=None,  # Metal's free figure is not meaningful outside the server (hardware.md §1.3)
        unified=True,
        source=source,
    )
    return AppleView(True, rosetta, cpu, memsize, gpu, budget, phrase)


def _working_set(
    system: ProbeSystem, values: dict[str, str], ram: int | None, unknowns: list[Unknown]
) -> tuple[int | None, str, str]:
    """(bytes, GPU.source, budget phrase) for the GPU working set, best source first."""
    wired_mb = parse_int(values.get("iogpu.wired_limit_mb")) or 0  # 0 = OS default policy
    wired_bytes = parse_int(values.get("debug.iogpu.wired_limit")) or 0  # macOS 13, bytes not MiB

    try:
        metal = system.metal_working_set()
        metal_reason = "Metal recommendedMaxWorkingSetSize not readable"
    except Exception as exc:
        metal = None
        metal_reason = f"Metal recommendedMaxWorkingSetSize: {describe(exc)}"
    if metal is not None and metal > 0:
        # The Metal value already includes any wired-limit override (hardware.md §1.2).
        if wired_mb > 0 or wired_bytes > 0:
            return metal, "metal", "Metal recommended working set (wired-limit override)"
        return metal, "metal", "Metal recommended working set"

    if wired_mb > 0:
        result: tuple[int | None, str, str] = (
            wired_mb * MiB,
            "iogpu.wired_limit_mb",
            "iogpu.wired_limit_mb override",
        )
    elif wired_bytes > 0:
        result = wired_bytes, "debug.iogpu.wired_limit", "debug.iogpu.wired_limit override"
    elif ram is not None:
        budget, phrase = fallback_working_set(ram)
        result = budget, "ram-fraction", phrase
    else:
        result = None, "ram-fraction", "unknown (neither Metal nor RAM readable)"
    unknowns.append(Unknown("apple.working_set", f"{metal_reason}; using {result[2]}"))
    return result
