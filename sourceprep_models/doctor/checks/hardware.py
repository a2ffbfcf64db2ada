"""The machine: RAM, GPUs, the memory budget and Apple Silicon's GPU working set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sourceprep_models.doctor.records import Check, ok, problem, warning
from sourceprep_models.units import human_bytes, percent

if TYPE_CHECKING:
    from sourceprep_models.hardware import Hardware
    from sourceprep_models.memory.sizing import Budget

GIB = 1024**3
MIB = 1024**2
# What the Apple advice leaves to macOS and apps: at least 8 GiB or a quarter of RAM (hardware.md §1.2).
_MAC_RESERVE = 8 * GIB


def check_memory(hardware: Hardware) -> Check:
    if hardware.ram_total is None:
        reasons = "; ".join(u.reason for u in hardware.unknowns if u.item == "ram") or "not readable"
        return warning(
            "hardware.memory",
            f"RAM size unknown ({reasons})",
            "set memory.budget in the config so loads are planned against a known size",
        )
    return ok(
        "hardware.memory",
        f"RAM {human_bytes(hardware.ram_total)}, {human_bytes(hardware.ram_available)} available now",
        ram_total=hardware.ram_total,
        ram_available=hardware.ram_available,
    )


def check_gpu(hardware: Hardware) -> Check:
    details: dict[str, Any] = {"gpus": [gpu.to_dict() for gpu in hardware.gpus]}
    nvidia_unknown = [u.reason for u in hardware.unknowns if u.item == "nvidia"]
    if nvidia_unknown:
        # The driver (or its library) is broken or missing: every server falls back to the CPU.
        return problem(
            "hardware.gpu",
            f"an NVIDIA GPU is there but not usable: {nvidia_unknown[0]}",
            "install or repair the NVIDIA driver until `nvidia-smi` lists the GPU (a driver/library mismatch after "
            "an update needs a reboot), then restart the model servers",
            **details,
        )
    if not hardware.gpus:
        where = "CPU only (Intel Mac)" if hardware.os == "darwin" else "no GPU found"
        return ok("hardware.gpu", f"{where}: models run on the CPU from system RAM", **details)
    parts = []
    for gpu in hardware.gpus:
        if gpu.vendor == "apple":
            memory = f"unified memory, GPU working set {human_bytes(gpu.total_bytes)}"
        else:
            memory = human_bytes(gpu.total_bytes) if gpu.total_bytes is not None else "shares system RAM"
        driver = f", driver {gpu.driver}" if gpu.driver else ""
        parts.append(f"{gpu.name} ({memory}{driver})")
    amd = [u.reason for u in hardware.unknowns if u.item == "amd"]
    if amd:
        return warning(
            "hardware.gpu",
            f"{'; '.join(parts)}; {amd[0]}",
            "load the amdgpu driver so its memory can be read, or set memory.budget in the config",
            **details,
        )
    return ok("hardware.gpu", "; ".join(parts), **details)


def check_budget(budget: Budget, headroom: int) -> Check:
    if budget.total is None:
        return warning(
            "hardware.budget",
            f"memory budget {budget.source}",
            'set memory.budget in the config (e.g. budget = "20GiB") so loads are planned',
        )
    return ok(
        "hardware.budget",
        f"{human_bytes(budget.bytes)} for models ({budget.source}, {human_bytes(headroom)} headroom kept free)",
        budget=budget.bytes,
        total=budget.total,
        source=budget.source,
        headroom=headroom,
    )


def suggested_wired_limit_mb(ram_total: int) -> int:
    """A GPU wired limit that still leaves macOS and apps at least 8 GiB (or a quarter of RAM on big Macs)."""
    return max(ram_total - _MAC_RESERVE, ram_total * 3 // 4) // MIB


def check_apple_gpu(hardware: Hardware, demand: tuple[str, int] | None, headroom: int) -> Check | None:
    """The Metal working set, the GPU's share of unified memory, and whether the config needs more of it."""
    if not hardware.apple_silicon or not hardware.gpus or hardware.budget_bytes is None:
        return None
    working_set, ram = hardware.budget_bytes, hardware.ram_total
    share = f"{percent(working_set, ram)}% of {human_bytes(ram)} RAM" if ram else "a share of RAM"
    details: dict[str, Any] = {"working_set": working_set, "ram_total": ram, "source": hardware.budget_source}
    if "override" in hardware.budget_source:
        summary = f"GPU may use {human_bytes(working_set)} ({share}), raised by iogpu.wired_limit_mb"
        return ok("hardware.apple_gpu", summary, **details)
    summary = f"GPU may use {human_bytes(working_set)} ({share}, the macOS default)"
    if ram is None:
        return ok("hardware.apple_gpu", summary, **details)
    limit_mb = suggested_wired_limit_mb(ram)
    details["suggested_wired_limit_mb"] = limit_mb
    command = f"sudo sysctl iogpu.wired_limit_mb={limit_mb}"
    if demand is not None:
        what, needed = demand
        if working_set - headroom < needed <= limit_mb * MIB - headroom:
            return warning(
                "hardware.apple_gpu",
                f"{summary}: {what} need {human_bytes(needed)} together, more than that leaves for models, so "
                "they swap",
                f"raise the GPU's share with `{command}` (lasts until a reboot), then restart the model server",
                needed=needed,
                **details,
            )
    return ok("hardware.apple_gpu", f"{summary}; `{command}` would raise it", **details)
