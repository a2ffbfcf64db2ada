"""The frozen records the probe returns, and the helpers that turn failures into one-line reasons."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20
GiB = 1 << 30

_MAX_REASON = 240


@dataclass(frozen=True)
class GPU:
    """One accelerator as the probe saw it.

    ``index`` counts within its vendor (CUDA0, ROCm0, MTL0 style), so an NVIDIA and an AMD card can
    both be index 0. ``unified`` means the device uses system RAM for models (Apple Silicon, NVIDIA
    parts that report no memory of their own, AMD APUs); its ``total_bytes`` is then either the GPU's
    share of RAM (Apple) or whatever small carve-out the driver reports, or None.
    """

    index: int
    vendor: str
    name: str
    total_bytes: int | None
    free_bytes: int | None
    unified: bool
    source: str
    driver: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "vendor": self.vendor,
            "name": self.name,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "unified": self.unified,
            "source": self.source,
            "driver": self.driver,
        }


@dataclass(frozen=True)
class Unknown:
    """Something the probe looked for and could not determine, with a one-line reason."""

    item: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"item": self.item, "reason": self.reason}


@dataclass(frozen=True)
class Hardware:
    """What this machine offers for model residency.

    ``budget_bytes`` is the memory models may occupy in total (before subtracting what is already
    loaded); ``budget_source`` says in a short phrase where that number came from.
    """

    os: str
    os_release: str
    machine: str
    cpu: str | None
    cpu_cores: int | None
    ram_total: int | None
    ram_available: int | None
    apple_silicon: bool
    rosetta: bool
    gpus: tuple[GPU, ...]
    budget_bytes: int | None
    budget_source: str
    unknowns: tuple[Unknown, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "os": self.os,
            "os_release": self.os_release,
            "machine": self.machine,
            "cpu": self.cpu,
            "cpu_cores": self.cpu_cores,
            "ram_total": self.ram_total,
            "ram_available": self.ram_available,
            "apple_silicon": self.apple_silicon,
            "rosetta": self.rosetta,
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "budget_bytes": self.budget_bytes,
            "budget_source": self.budget_source,
            "unknowns": [unknown.to_dict() for unknown in self.unknowns],
        }


def one_line(text: str) -> str:
    """Collapse whitespace (including newlines) and cap the length, so a reason fits on one line."""
    flat = " ".join(text.split())
    if len(flat) > _MAX_REASON:
        flat = flat[: _MAX_REASON - 3].rstrip() + "..."
    return flat


def describe(exc: BaseException) -> str:
    """A one-line reason for an unexpected exception: its type plus its message."""
    message = one_line(str(exc))
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def parse_int(text: str | None) -> int | None:
    """An integer from a sysctl / sysfs / CSV field, or None for empty, ``[N/A]`` and other non-numbers."""
    if text is None:
        return None
    value = text.strip()
    try:
        return int(value, 0) if value.lower().startswith("0x") else int(value)
    except ValueError:
        return None
