"""``probe()``: one pass over the machine that always returns a ``Hardware`` record."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ._records import GPU, Hardware, MiB, Unknown, describe
from ._system import LocalSystem, ProbeSystem
from .amd import detect_amd
from .nvidia import detect_nvidia

if TYPE_CHECKING:
    from .apple import AppleView

T = TypeVar("T")

# Per-device minimum reserve Ollama keeps free on CUDA / ROCm devices (hardware.md §4.5).
GPU_RESERVE_BYTES = 457 * MiB

_VENDOR_LABELS = {"nvidia": "NVIDIA", "amd": "AMD", "apple": "Apple"}
_WINDOWS_CPU_KEY = r"HARDWARE\DESCRIPTION\System\CentralProcessor\0"


def probe(system: ProbeSystem | None = None) -> Hardware:
    """Describe this machine (or the faked ``system``). Never raises: what cannot be read becomes an
    ``Unknown`` entry with a one-line reason."""
    unknowns: list[Unknown] = []
    try:
        return _probe(system if system is not None else LocalSystem(), unknowns)
    except Exception as exc:  # a bug in the probe itself; still answer
        unknowns.append(Unknown("probe", describe(exc)))
        return Hardware(
            os="unknown",
            os_release="",
            machine="",
            cpu=None,
            cpu_cores=None,
            ram_total=None,
            ram_available=None,
            apple_silicon=False,
            rosetta=False,
            gpus=(),
            budget_bytes=None,
            budget_source="unknown (probe failed)",
            unknowns=tuple(unknowns),
        )


def _guard(unknowns: list[Unknown], item: str, fn: Callable[[], T], default: T) -> T:
    try:
        return fn()
    except Exception as exc:
        unknowns.append(Unknown(item, describe(exc)))
        return default


def normalize_os(platform_name: str) -> str:
    if platform_name.startswith("linux"):
        return "linux"
    if platform_name == "win32":
        return "windows"
    return platform_name.rstrip("0123456789") or platform_name  # "freebsd14" -> "freebsd"


def _probe(system: ProbeSystem, unknowns: list[Unknown]) -> Hardware:
    os_name = _guard(unknowns, "os", lambda: normalize_os(system.platform()), "unknown")
    os_release = _guard(unknowns, "os_release", lambda: str(system.os_release()), "")
    machine = _guard(unknowns, "machine", lambda: str(system.machine()), "")
    no_ram: tuple[int | None, int | None] = (None, None)
    ram_total, ram_available = _guard(unknowns, "ram", lambda: _ints(system.virtual_memory()), no_ram)
    cpu_cores = _guard(unknowns, "cpu_cores", system.cpu_count, None)

    cpu: str | None = None
    gpus: list[GPU] = []
    apple: AppleView | None = None
    if os_name == "darwin":
        # sysctl and Metal only; no NVIDIA or AMD tooling exists for current macOS.
        from .apple import detect_apple  # only here: elsewhere its module is start-up time for nothing

        apple = _guard(unknowns, "apple", lambda: detect_apple(system, machine, ram_total, unknowns), None)
        if apple is not None:
            cpu = apple.cpu
            if ram_total is None:
                ram_total = apple.ram_total
            if apple.gpu is not None:
                gpus.append(apple.gpu)
    elif os_name == "linux":
        cpu = _guard(unknowns, "cpu", lambda: _linux_cpu(system, unknowns), None)
        gpus += _guard(unknowns, "nvidia", lambda: detect_nvidia(system, os_name, os_release, unknowns), [])
        gpus += _guard(unknowns, "amd", lambda: detect_amd(system, unknowns), [])
    elif os_name == "windows":
        cpu = _guard(unknowns, "cpu", lambda: system.registry(_WINDOWS_CPU_KEY, "ProcessorNameString"), None)
        gpus += _guard(unknowns, "nvidia", lambda: detect_nvidia(system, os_name, os_release, unknowns), [])
        if not gpus:
            unknowns.append(Unknown("gpu", "only NVIDIA GPUs are probed on Windows"))
    elif os_name != "unknown":
        unknowns.append(Unknown("gpu", f"GPUs are not probed on {os_name}"))

    if apple is not None and apple.gpu is not None:
        budget, source = apple.budget_bytes, apple.budget_source
    else:
        budget, source = _budget(gpus, ram_total, intel_mac=apple is not None)

    return Hardware(
        os=os_name,
        os_release=os_release,
        machine=machine,
        cpu=cpu,
        cpu_cores=cpu_cores,
        ram_total=ram_total,
        ram_available=ram_available,
        apple_silicon=apple.apple_silicon if apple is not None else False,
        rosetta=apple.rosetta if apple is not None else False,
        gpus=tuple(gpus),
        budget_bytes=budget,
        budget_source=source,
        unknowns=tuple(unknowns),
    )


def _ints(pair: tuple[int, int]) -> tuple[int | None, int | None]:
    total, available = pair
    return int(total), int(available)


def _budget(gpus: list[GPU], ram_total: int | None, intel_mac: bool) -> tuple[int | None, str]:
    """Total model memory when there is no Apple GPU: discrete VRAM if any, else system RAM."""
    discrete = [gpu for gpu in gpus if not gpu.unified and gpu.total_bytes is not None]
    if discrete:
        total = sum(max(0, (gpu.total_bytes or 0) - GPU_RESERVE_BYTES) for gpu in discrete)
        return total, f"VRAM of {_count_phrase(discrete)} minus reserve"
    if any(gpu.unified for gpu in gpus):
        phrase = "system RAM (unified-memory GPU)"
    elif gpus:
        phrase = "system RAM (GPU memory unknown)"
    elif intel_mac:
        phrase = "system RAM (Intel Mac, CPU only)"
    else:
        phrase = "system RAM (no GPU)"
    if ram_total is None:
        return None, "unknown (RAM not readable)"
    return ram_total, phrase


def _count_phrase(gpus: list[GPU]) -> str:
    counts: dict[str, int] = {}
    for gpu in gpus:
        counts[gpu.vendor] = counts.get(gpu.vendor, 0) + 1
    parts = []
    for vendor, count in counts.items():
        label = _VENDOR_LABELS.get(vendor, vendor)
        parts.append(f"{count} {label} GPU{'s' if count != 1 else ''}")
    return " + ".join(parts)


def _linux_cpu(system: ProbeSystem, unknowns: list[Unknown]) -> str | None:
    text = system.read_text("/proc/cpuinfo")
    if text is None:
        unknowns.append(Unknown("cpu", "/proc/cpuinfo not readable"))
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "model name" and value.strip():
            return value.strip()
    # Many arm64 kernels list only implementer/part numbers.
    unknowns.append(Unknown("cpu", "no model name in /proc/cpuinfo"))
    return None
