"""NVIDIA GPUs: NVML first (optional ``pynvml``), ``nvidia-smi`` as the fallback (Linux / Windows)."""

from __future__ import annotations

import contextlib
from typing import Any

from ._records import GPU, MiB, Unknown, describe, one_line, parse_int
from ._system import CommandError, ProbeSystem

SMI_QUERY = (
    "--query-gpu=index,uuid,name,memory.total,memory.used,memory.free,driver_version",
    "--format=csv,noheader,nounits",
)
_WSL_SMI = "/usr/lib/wsl/lib/nvidia-smi"

# NVML return codes worth naming (hardware.md §2.1).
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
_NVML_PHRASES = {
    NVML_ERROR_NOT_SUPPORTED: "not supported",
    NVML_ERROR_NO_PERMISSION: "no permission",
    NVML_ERROR_DRIVER_NOT_LOADED: "driver not loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "library not found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "function not found (driver too old)",
}
_NVIDIA_PCI_VENDOR = "0x10de"


class _NvmlFailed(Exception):
    def __init__(self, reason: str, code: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def detect_nvidia(system: ProbeSystem, os_name: str, os_release: str, unknowns: list[Unknown]) -> list[GPU]:
    """NVIDIA GPUs, or [] with an ``Unknown`` when there is evidence of NVIDIA hardware we cannot read."""
    try:
        return _from_nvml(system)
    except _NvmlFailed as failed:
        nvml_reason, nvml_code = failed.reason, failed.code

    smi_failure: str | None = None
    try:
        out = system.run(["nvidia-smi", *SMI_QUERY])
        if out is None and os_name == "linux" and "microsoft" in os_release.lower():
            out = system.run([_WSL_SMI, *SMI_QUERY])  # WSL2 ships it outside PATH
    except CommandError as exc:
        out, smi_failure = None, one_line(str(exc))
    except Exception as exc:
        out, smi_failure = None, f"nvidia-smi: {describe(exc)}"
    if out is not None:
        gpus = parse_nvidia_smi(out)
        if gpus:
            return gpus
        smi_failure = "nvidia-smi listed no GPUs"

    if smi_failure is not None:
        # The tool is installed, so the driver is at least partly there: worth telling the user.
        unknowns.append(Unknown("nvidia", f"{smi_failure}; {nvml_reason}"))
    elif nvml_code not in (None, NVML_ERROR_LIBRARY_NOT_FOUND) or _nvidia_on_pci_bus(system, os_name):
        # NVML's library is there but failed, or the hardware is on the bus without its tools.
        unknowns.append(Unknown("nvidia", f"nvidia-smi not found; {nvml_reason}"))
    return []


def _from_nvml(system: ProbeSystem) -> list[GPU]:
    try:
        nvml = system.nvml()
    except Exception as exc:
        raise _NvmlFailed(f"NVML: {describe(exc)}", None) from None
    if nvml is None:
        raise _NvmlFailed("NVML: pynvml not installed", None)
    try:
        nvml.nvmlInit()
    except Exception as exc:
        raise _nvml_failure(exc) from None
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus: list[GPU] = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(nvml.nvmlDeviceGetName(handle)) or f"NVIDIA GPU {index}"
            total: int | None
            free: int | None
            try:
                # v1 and v2 disagree on "used" but agree on "free" (hardware.md §2.1).
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                total, free, unified = int(memory.total), int(memory.free), False
            except Exception as exc:
                if _nvml_code(exc) != NVML_ERROR_NOT_SUPPORTED:
                    raise
                # GB10 / DGX Spark style parts share system RAM and report no memory (hardware.md §2.1).
                total, free, unified = None, None, True
            gpus.append(GPU(index, "nvidia", name, total, free, unified, "nvml", driver))
        return gpus
    except Exception as exc:
        raise _nvml_failure(exc) from None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _nvml_code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _nvml_failure(exc: BaseException) -> _NvmlFailed:
    code = _nvml_code(exc)
    if code is None:
        return _NvmlFailed(f"NVML: {describe(exc)}", None)
    phrase = _NVML_PHRASES.get(code) or one_line(str(exc)) or "error"
    return _NvmlFailed(f"NVML: {phrase} ({code})", code)


def _text(value: Any) -> str:
    if isinstance(value, bytes):  # very old bindings returned bytes
        return value.decode("utf-8", "replace").strip()
    return str(value).strip()


def parse_nvidia_smi(text: str) -> list[GPU]:
    """GPUs from ``nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free,
    driver_version --format=csv,noheader,nounits``. Memory is in MiB; ``[N/A]`` / ``[Not Supported]``
    memory means a unified-memory part (hardware.md §2.2)."""
    gpus: list[GPU] = []
    for line in text.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 7:
            continue
        # Index and uuid from the left, the four numeric fields from the right, so a name that
        # contains a comma survives.
        index = parse_int(fields[0])
        name = ", ".join(fields[2:-4]) or "NVIDIA GPU"
        total_mib, used_mib, free_mib = (parse_int(field) for field in fields[-4:-1])
        driver = fields[-1] if fields[-1] and not fields[-1].startswith("[") and fields[-1] != "N/A" else None
        if index is None:
            index = len(gpus)
        if free_mib is None and total_mib is not None and used_mib is not None:
            free_mib = total_mib - used_mib
        gpus.append(
            GPU(
                index=index,
                vendor="nvidia",
                name=name,
                total_bytes=None if total_mib is None else total_mib * MiB,
                free_bytes=None if free_mib is None else free_mib * MiB,
                unified=total_mib is None,
                source="nvidia-smi",
                driver=driver,
            )
        )
    return gpus


def _nvidia_on_pci_bus(system: ProbeSystem, os_name: str) -> bool:
    """Linux only: is an NVIDIA display controller (PCI class 0x03xxxx) present, driver or not?"""
    if os_name != "linux":
        return False
    for vendor_path in system.glob("/sys/bus/pci/devices/*/vendor"):
        vendor = system.read_text(vendor_path)
        if vendor is None or vendor.strip().lower() != _NVIDIA_PCI_VENDOR:
            continue
        pci_class = system.read_text(vendor_path[: -len("vendor")] + "class")
        if pci_class is not None and pci_class.strip().lower().startswith("0x03"):
            return True
    return False
