"""Hardware probe: every branch is driven by a fake ProbeSystem fed with recorded outputs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import pytest

from sourceprep_models.hardware import GPU, CommandError, Hardware, Unknown, probe
from sourceprep_models.hardware._system import parse_sysctl_output
from sourceprep_models.hardware.nvidia import SMI_QUERY, parse_nvidia_smi

DATA = Path(__file__).parent / "data" / "hardware"
MiB = 1 << 20
GiB = 1 << 30
RESERVE = 457 * MiB


def fixture(name: str) -> str:
    return (DATA / name).read_text()


class FakeSystem:
    """A machine described by plain values. Every call is logged in ``calls``."""

    def __init__(
        self,
        platform: str = "linux",
        release: str = "6.8.0-45-generic",
        machine: str = "x86_64",
        memory: tuple[int, int] | None = (64 * GiB, 50 * GiB),
        cores: int | None = 16,
        commands: dict[str, str | Exception | None] | None = None,
        sysctls: dict[str, str] | None = None,
        files: dict[str, str] | None = None,
        metal: int | None = None,
        nvml: Any = None,
        registry: dict[tuple[str, str], str] | None = None,
    ) -> None:
        self._platform = platform
        self._release = release
        self._machine = machine
        self._memory = memory
        self._cores = cores
        self._commands = commands or {}
        self._sysctls = sysctls or {}
        # Every Linux fake has a readable /proc/cpuinfo unless the test replaces it.
        self._files = {"/proc/cpuinfo": fixture("proc-cpuinfo-x86.txt"), **(files or {})}
        self._metal = metal
        self._nvml = nvml
        self._registry = registry or {}
        self.calls: list[str] = []

    def platform(self) -> str:
        return self._platform

    def os_release(self) -> str:
        return self._release

    def machine(self) -> str:
        return self._machine

    def virtual_memory(self) -> tuple[int, int]:
        if self._memory is None:
            raise OSError("psutil unavailable")
        return self._memory

    def cpu_count(self) -> int | None:
        return self._cores

    def run(self, argv: Sequence[str]) -> str | None:
        self.calls.append(f"run {argv[0]}")
        result = self._commands.get(argv[0])
        if isinstance(result, Exception):
            raise result
        return result

    def sysctl(self, keys: Sequence[str]) -> dict[str, str]:
        self.calls.append("sysctl")
        return {key: self._sysctls[key] for key in keys if key in self._sysctls}

    def read_text(self, path: str) -> str | None:
        return self._files.get(path)

    def glob(self, pattern: str) -> list[str]:
        return [path for path in self._files if PurePosixPath(path).match(pattern)]

    def metal_working_set(self) -> int | None:
        self.calls.append("metal")
        return self._metal

    def nvml(self) -> Any:
        self.calls.append("nvml")
        return self._nvml

    def registry(self, key: str, value: str) -> str | None:
        return self._registry.get((key, value))


class RaisingSystem:
    """Every input fails."""

    def __getattr__(self, name: str) -> Any:
        def fail(*_args: object) -> Any:
            raise RuntimeError(f"{name} exploded")

        return fail


# --- fake pynvml ---------------------------------------------------------------------------------


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def fake_nvml(
    devices: Sequence[tuple[str, int | None, int | None]] = (),
    init_error: int | None = None,
    driver: str = "550.54.14",
) -> Any:
    """A pynvml-shaped module: devices are (name, total, free); total None = NOT_SUPPORTED (3)."""
    state = {"shutdown": 0}

    def init() -> None:
        if init_error is not None:
            raise NVMLError(init_error)

    def memory(handle: int) -> Any:
        _name, total, free = devices[handle]
        if total is None or free is None:
            raise NVMLError(3)
        return SimpleNamespace(total=total, free=free, used=total - free)

    def shutdown() -> None:
        state["shutdown"] += 1

    return SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=init,
        nvmlShutdown=shutdown,
        nvmlSystemGetDriverVersion=lambda: driver,
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: devices[h][0],
        nvmlDeviceGetMemoryInfo=memory,
        state=state,
    )


def apple_system(sysctl_fixture: str, machine: str = "arm64", **kwargs: Any) -> FakeSystem:
    sysctls = parse_sysctl_output(fixture(sysctl_fixture))
    ram = int(sysctls["hw.memsize"])
    kwargs.setdefault("memory", (ram, ram // 2))
    return FakeSystem(platform="darwin", release="14.5", machine=machine, sysctls=sysctls, **kwargs)


# --- Apple -----------------------------------------------------------------------------------------


def test_apple_silicon_native_uses_metal_working_set() -> None:
    system = apple_system("sysctl-apple-m2-max-64gb.txt", metal=51_539_607_552)
    hw = probe(system)
    assert (hw.os, hw.os_release, hw.machine) == ("darwin", "14.5", "arm64")
    assert hw.apple_silicon and not hw.rosetta
    assert hw.cpu == "Apple M2 Max"
    assert hw.ram_total == 64 * GiB
    assert hw.budget_bytes == 48 * GiB
    assert hw.budget_source == "Metal recommended working set"
    assert hw.gpus == (GPU(0, "apple", "Apple M2 Max", 48 * GiB, None, True, "metal"),)
    assert hw.unknowns == ()
    # macOS never touches NVIDIA tooling.
    assert not any(call.startswith("run") or call == "nvml" for call in system.calls)


def test_apple_silicon_under_rosetta() -> None:
    system = apple_system("sysctl-apple-m1-16gb-rosetta.txt", machine="x86_64", metal=11_453_251_584)
    hw = probe(system)
    assert hw.machine == "x86_64"
    assert hw.apple_silicon is True
    assert hw.rosetta is True
    assert hw.cpu == "VirtualApple @ 2.50GHz"
    assert hw.gpus[0].name == "Apple Silicon GPU"  # the brand string is the emulated CPU
    assert hw.budget_bytes == 11_453_251_584
    assert hw.budget_source == "Metal recommended working set"


def test_intel_mac_has_no_apple_gpu() -> None:
    hw = probe(apple_system("sysctl-intel-mac-32gb.txt", machine="x86_64", metal=4 * GiB))
    assert hw.apple_silicon is False and hw.rosetta is False
    assert hw.cpu == "Intel(R) Core(TM) i9-9980HK CPU @ 2.40GHz"
    assert hw.gpus == ()
    assert hw.budget_bytes == 32 * GiB
    assert hw.budget_source == "system RAM (Intel Mac, CPU only)"
    assert hw.unknowns == ()


@pytest.mark.parametrize(
    ("ram", "expected", "phrase"),
    [
        (16 * GiB, 11_453_246_122, "2/3 of RAM (fallback rule)"),  # 10.67 GiB (hardware.md §1.2)
        (32 * GiB, 22_906_492_245, "2/3 of RAM (fallback rule)"),  # 32 GB still 2/3
        (36 * GiB, 27 * GiB, "3/4 of RAM (fallback rule)"),
        (64 * GiB, 48 * GiB, "3/4 of RAM (fallback rule)"),
    ],
)
def test_apple_fallback_fraction_when_metal_unreadable(ram: int, expected: int, phrase: str) -> None:
    system = apple_system("sysctl-apple-m2-max-64gb.txt", memory=(ram, ram // 2), metal=None)
    hw = probe(system)
    assert hw.budget_bytes == expected
    assert hw.budget_source == phrase
    assert hw.gpus[0].source == "ram-fraction"
    assert hw.unknowns == (
        Unknown("apple.working_set", f"Metal recommendedMaxWorkingSetSize not readable; using {phrase}"),
    )


def test_apple_wired_limit_override_when_metal_unreadable() -> None:
    hw = probe(apple_system("sysctl-apple-m1-max-32gb-wired-limit.txt", metal=None))
    assert hw.budget_bytes == 26000 * MiB
    assert hw.budget_source == "iogpu.wired_limit_mb override"
    assert hw.gpus[0].source == "iogpu.wired_limit_mb"


def test_apple_metal_wins_over_wired_limit_and_says_so() -> None:
    hw = probe(apple_system("sysctl-apple-m1-max-32gb-wired-limit.txt", metal=26000 * MiB))
    assert hw.budget_bytes == 26000 * MiB
    assert hw.budget_source == "Metal recommended working set (wired-limit override)"
    assert hw.gpus[0].source == "metal"


def test_apple_macos13_debug_wired_limit_is_bytes() -> None:
    hw = probe(apple_system("sysctl-apple-m1-pro-32gb-macos13-wired-limit.txt", metal=None))
    assert hw.budget_bytes == 24 * GiB
    assert hw.budget_source == "debug.iogpu.wired_limit override"
    assert hw.gpus[0].source == "debug.iogpu.wired_limit"


def test_apple_without_psutil_uses_hw_memsize() -> None:
    hw = probe(apple_system("sysctl-apple-m2-max-64gb.txt", memory=None, metal=None))
    assert hw.ram_total == 64 * GiB
    assert hw.ram_available is None
    assert hw.budget_bytes == 48 * GiB
    assert Unknown("ram", "OSError: psutil unavailable") in hw.unknowns


def test_apple_sysctl_failure_on_native_arm64_still_finds_apple_silicon() -> None:
    system = apple_system("sysctl-apple-m2-max-64gb.txt", metal=48 * GiB)
    system._sysctls = {}
    hw = probe(system)
    assert hw.apple_silicon is True
    assert hw.cpu is None
    assert hw.budget_bytes == 48 * GiB


# --- NVIDIA ----------------------------------------------------------------------------------------


def test_nvml_one_gpu() -> None:
    nvml = fake_nvml([("NVIDIA GeForce RTX 4090", 25_757_220_864, 25_039_601_664)])
    system = FakeSystem(nvml=nvml)
    hw = probe(system)
    assert hw.gpus == (
        GPU(0, "nvidia", "NVIDIA GeForce RTX 4090", 25_757_220_864, 25_039_601_664, False, "nvml", "550.54.14"),
    )
    assert hw.budget_bytes == 25_757_220_864 - RESERVE
    assert hw.budget_source == "VRAM of 1 NVIDIA GPU minus reserve"
    assert hw.unknowns == ()
    assert nvml.state["shutdown"] == 1
    assert "run nvidia-smi" not in system.calls
    assert "sysctl" not in system.calls and "metal" not in system.calls  # nothing darwin on Linux


def test_nvml_two_gpus() -> None:
    nvml = fake_nvml([("NVIDIA GeForce RTX 3090", 24 * GiB, 23 * GiB), ("NVIDIA GeForce RTX 3090", 24 * GiB, 24 * GiB)])
    hw = probe(FakeSystem(nvml=nvml))
    assert [g.index for g in hw.gpus] == [0, 1]
    assert hw.budget_bytes == 2 * (24 * GiB - RESERVE)
    assert hw.budget_source == "VRAM of 2 NVIDIA GPUs minus reserve"


@pytest.mark.parametrize(("code", "phrase"), [(12, "library not found"), (9, "driver not loaded")])
def test_nvml_errors_fall_back_to_nvidia_smi(code: int, phrase: str) -> None:
    system = FakeSystem(nvml=fake_nvml(init_error=code), commands={"nvidia-smi": fixture("nvidia-smi-1gpu.csv")})
    hw = probe(system)
    assert "run nvidia-smi" in system.calls
    assert hw.gpus == (
        GPU(0, "nvidia", "NVIDIA GeForce RTX 4090", 24564 * MiB, 23880 * MiB, False, "nvidia-smi", "550.54.14"),
    )
    assert hw.budget_bytes == 24564 * MiB - RESERVE
    assert hw.unknowns == ()


def test_nvml_driver_not_loaded_and_no_nvidia_smi_is_unknown() -> None:
    hw = probe(FakeSystem(nvml=fake_nvml(init_error=9)))
    assert hw.gpus == ()
    assert hw.unknowns == (Unknown("nvidia", "nvidia-smi not found; NVML: driver not loaded (9)"),)
    assert hw.budget_source == "system RAM (no GPU)"


def test_nvml_unified_memory_part_budgets_from_ram() -> None:
    hw = probe(
        FakeSystem(machine="aarch64", memory=(128 * GiB, 120 * GiB), nvml=fake_nvml([("NVIDIA GB10", None, None)]))
    )
    assert hw.gpus == (GPU(0, "nvidia", "NVIDIA GB10", None, None, True, "nvml", "550.54.14"),)
    assert hw.budget_bytes == 128 * GiB
    assert hw.budget_source == "system RAM (unified-memory GPU)"
    assert hw.unknowns == ()


def test_nvidia_smi_two_gpus() -> None:
    hw = probe(FakeSystem(commands={"nvidia-smi": fixture("nvidia-smi-2gpu.csv")}))
    assert [(g.index, g.name, g.total_bytes, g.free_bytes, g.driver) for g in hw.gpus] == [
        (0, "NVIDIA GeForce RTX 3090", 24576 * MiB, 23222 * MiB, "535.183.01"),
        (1, "NVIDIA GeForce RTX 3090", 24576 * MiB, 24228 * MiB, "535.183.01"),
    ]
    assert hw.budget_bytes == 2 * (24576 * MiB - RESERVE)
    assert hw.budget_source == "VRAM of 2 NVIDIA GPUs minus reserve"


def test_nvidia_smi_unified_part_with_na_fields() -> None:
    hw = probe(
        FakeSystem(memory=(128 * GiB, 100 * GiB), commands={"nvidia-smi": fixture("nvidia-smi-gb10-unified.csv")})
    )
    assert hw.gpus == (GPU(0, "nvidia", "NVIDIA GB10", None, None, True, "nvidia-smi", "580.95.05"),)
    assert hw.budget_bytes == 128 * GiB
    assert hw.budget_source == "system RAM (unified-memory GPU)"


def test_nvidia_smi_parser_keeps_commas_in_names_and_tolerates_noise() -> None:
    text = "0, GPU-x, NVIDIA RTX A6000, Ada, 49140, [Not Supported], 48000, 550.54.14\n\nnot a gpu line\n"
    (gpu,) = parse_nvidia_smi(text)
    assert gpu.name == "NVIDIA RTX A6000, Ada"
    assert (gpu.total_bytes, gpu.free_bytes, gpu.unified) == (49140 * MiB, 48000 * MiB, False)


def test_nvidia_smi_query_matches_documented_columns() -> None:
    assert SMI_QUERY == (
        "--query-gpu=index,uuid,name,memory.total,memory.used,memory.free,driver_version",
        "--format=csv,noheader,nounits",
    )


def test_nvidia_smi_failure_is_reported() -> None:
    error = CommandError(
        "nvidia-smi exited with status 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    )
    hw = probe(FakeSystem(commands={"nvidia-smi": error}))
    assert hw.gpus == ()
    assert hw.unknowns == (Unknown("nvidia", f"{error}; NVML: pynvml not installed"),)


def test_no_nvidia_anywhere_is_not_an_unknown() -> None:
    # CPU-only Linux: no pynvml, no nvidia-smi, no NVIDIA device on the PCI bus.
    hw = probe(
        FakeSystem(
            files={
                "/sys/bus/pci/devices/0000:00:02.0/vendor": "0x8086\n",
                "/sys/bus/pci/devices/0000:00:02.0/class": "0x030000\n",
            }
        )
    )
    assert hw.unknowns == ()


def test_nvidia_device_on_pci_bus_without_tools_is_unknown() -> None:
    files = {
        "/sys/bus/pci/devices/0000:01:00.0/vendor": "0x10de\n",
        "/sys/bus/pci/devices/0000:01:00.0/class": "0x030000\n",
    }
    hw = probe(FakeSystem(files=files))
    assert hw.unknowns == (Unknown("nvidia", "nvidia-smi not found; NVML: pynvml not installed"),)
    assert hw.budget_source == "system RAM (no GPU)"


def test_wsl_nvidia_smi_outside_path() -> None:
    system = FakeSystem(
        release="5.15.153.1-microsoft-standard-WSL2",
        commands={"/usr/lib/wsl/lib/nvidia-smi": fixture("nvidia-smi-1gpu.csv")},
    )
    hw = probe(system)
    assert [g.name for g in hw.gpus] == ["NVIDIA GeForce RTX 4090"]


def test_windows_nvidia_and_cpu_name_from_registry() -> None:
    system = FakeSystem(
        platform="win32",
        release="11",
        machine="AMD64",
        commands={"nvidia-smi": fixture("nvidia-smi-1gpu.csv")},
        registry={(r"HARDWARE\DESCRIPTION\System\CentralProcessor\0", "ProcessorNameString"): "AMD Ryzen 9 7950X"},
    )
    hw = probe(system)
    assert (hw.os, hw.cpu) == ("windows", "AMD Ryzen 9 7950X")
    assert hw.budget_source == "VRAM of 1 NVIDIA GPU minus reserve"
    assert "sysctl" not in system.calls


def test_windows_without_nvidia_says_other_gpus_are_not_probed() -> None:
    hw = probe(FakeSystem(platform="win32", release="10", machine="AMD64"))
    assert hw.budget_bytes == 64 * GiB
    assert hw.unknowns == (Unknown("gpu", "only NVIDIA GPUs are probed on Windows"),)


# --- AMD -------------------------------------------------------------------------------------------


def amd_card(card: str, total: int, used: int, gtt: int, product: str | None = None) -> dict[str, str]:
    base = f"/sys/class/drm/{card}/device/"
    files = {
        base + "vendor": "0x1002\n",
        base + "device": "0x744c\n",
        base + "mem_info_vram_total": f"{total}\n",
        base + "mem_info_vram_used": f"{used}\n",
        base + "mem_info_gtt_total": f"{gtt}\n",
    }
    if product is not None:
        files[base + "product_name"] = product + "\n"
    return files


def test_amd_discrete_from_sysfs() -> None:
    files = amd_card("card1", 24 * GiB, 1 * GiB, 32 * GiB, product="Radeon RX 7900 XTX")
    files["/sys/class/drm/card1-DP-1/device/vendor"] = "0x1002\n"  # a connector entry, not a card
    hw = probe(FakeSystem(files=files))
    assert hw.gpus == (GPU(0, "amd", "Radeon RX 7900 XTX", 24 * GiB, 23 * GiB, False, "sysfs"),)
    assert hw.budget_bytes == 24 * GiB - RESERVE
    assert hw.budget_source == "VRAM of 1 AMD GPU minus reserve"


def test_amd_apu_is_unified_and_budgets_from_ram() -> None:
    hw = probe(FakeSystem(memory=(32 * GiB, 20 * GiB), files=amd_card("card0", 512 * MiB, 100 * MiB, 16 * GiB)))
    (gpu,) = hw.gpus
    assert gpu.unified is True
    assert gpu.name == "AMD GPU 0x744c"
    assert hw.budget_bytes == 32 * GiB
    assert hw.budget_source == "system RAM (unified-memory GPU)"


def test_amd_large_carve_out_counts_as_vram() -> None:
    # A Strix Halo style APU with 96 GiB assigned as VRAM fails the iGPU rule (VRAM > 4 GiB).
    hw = probe(FakeSystem(memory=(128 * GiB, 20 * GiB), files=amd_card("card0", 96 * GiB, 0, 16 * GiB)))
    assert hw.gpus[0].unified is False
    assert hw.budget_bytes == 96 * GiB - RESERVE


def test_non_amdgpu_card_without_vram_files() -> None:
    files = {"/sys/class/drm/card0/device/vendor": "0x1002\n"}
    hw = probe(FakeSystem(files=files))
    assert hw.gpus[0].total_bytes is None
    assert hw.budget_source == "system RAM (GPU memory unknown)"
    assert hw.unknowns == (Unknown("amd", "card0: no mem_info_vram_total (not the amdgpu driver?)"),)


def test_discrete_nvidia_wins_over_amd_igpu() -> None:
    files = amd_card("card0", 512 * MiB, 0, 16 * GiB)
    hw = probe(FakeSystem(files=files, commands={"nvidia-smi": fixture("nvidia-smi-1gpu.csv")}))
    assert [g.vendor for g in hw.gpus] == ["nvidia", "amd"]
    assert hw.budget_bytes == 24564 * MiB - RESERVE
    assert hw.budget_source == "VRAM of 1 NVIDIA GPU minus reserve"


def test_nvidia_and_amd_discrete_are_summed() -> None:
    files = amd_card("card1", 16 * GiB, 0, 32 * GiB)
    hw = probe(FakeSystem(files=files, commands={"nvidia-smi": fixture("nvidia-smi-1gpu.csv")}))
    assert hw.budget_bytes == 24564 * MiB - RESERVE + 16 * GiB - RESERVE
    assert hw.budget_source == "VRAM of 1 NVIDIA GPU + 1 AMD GPU minus reserve"


# --- CPU-only Linux and failure handling -------------------------------------------------------------


def test_cpu_only_linux() -> None:
    system = FakeSystem(files={"/proc/cpuinfo": fixture("proc-cpuinfo-x86.txt")})
    hw = probe(system)
    assert hw.cpu == "AMD Ryzen 9 7950X 16-Core Processor"
    assert (hw.cpu_cores, hw.ram_total, hw.ram_available) == (16, 64 * GiB, 50 * GiB)
    assert hw.gpus == ()
    assert hw.budget_bytes == 64 * GiB
    assert hw.budget_source == "system RAM (no GPU)"
    assert hw.unknowns == ()
    assert "sysctl" not in system.calls and "metal" not in system.calls


def test_arm64_cpuinfo_without_model_name() -> None:
    hw = probe(FakeSystem(machine="aarch64", files={"/proc/cpuinfo": fixture("proc-cpuinfo-arm64.txt")}))
    assert hw.cpu is None
    assert hw.unknowns == (Unknown("cpu", "no model name in /proc/cpuinfo"),)


def test_ram_unreadable_leaves_budget_unknown() -> None:
    hw = probe(FakeSystem(memory=None, files={"/proc/cpuinfo": fixture("proc-cpuinfo-x86.txt")}))
    assert hw.budget_bytes is None
    assert hw.budget_source == "unknown (RAM not readable)"
    assert hw.unknowns == (Unknown("ram", "OSError: psutil unavailable"),)


def test_every_input_raising_still_yields_a_record() -> None:
    hw = probe(RaisingSystem())
    assert isinstance(hw, Hardware)
    assert hw.os == "unknown"
    assert hw.budget_bytes is None
    items = {u.item for u in hw.unknowns}
    assert {"os", "ram", "cpu_cores"} <= items
    assert Unknown("os", "RuntimeError: platform exploded") in hw.unknowns


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_every_detector_raising_still_yields_a_record(platform: str) -> None:
    class Broken(RaisingSystem):
        def platform(self) -> str:
            return platform

    hw = probe(Broken())
    assert hw.os == {"win32": "windows"}.get(platform, platform)
    assert hw.gpus == ()
    assert all(u.reason for u in hw.unknowns)
    assert all("\n" not in u.reason for u in hw.unknowns)
    json.dumps(hw.to_dict())


def test_records_are_frozen() -> None:
    hw = probe(FakeSystem())
    with pytest.raises(dataclasses.FrozenInstanceError):
        hw.budget_bytes = 1  # type: ignore[misc]


def test_to_dict_round_trips_through_json() -> None:
    nvml = fake_nvml([("NVIDIA GeForce RTX 4090", 24 * GiB, 20 * GiB)])
    hw = probe(FakeSystem(nvml=nvml, files={"/proc/cpuinfo": "processor : 0\n"}))
    data = hw.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert list(data) == [
        "os", "os_release", "machine", "cpu", "cpu_cores", "ram_total", "ram_available",
        "apple_silicon", "rosetta", "gpus", "budget_bytes", "budget_source", "unknowns",
    ]  # fmt: skip
    assert data["gpus"] == [
        {
            "index": 0,
            "vendor": "nvidia",
            "name": "NVIDIA GeForce RTX 4090",
            "total_bytes": 24 * GiB,
            "free_bytes": 20 * GiB,
            "unified": False,
            "source": "nvml",
            "driver": "550.54.14",
        }
    ]
    assert data["unknowns"] == [{"item": "cpu", "reason": "no model name in /proc/cpuinfo"}]


def test_sysctl_output_parser() -> None:
    values = parse_sysctl_output(fixture("sysctl-apple-m1-16gb-rosetta.txt"))
    assert values["machdep.cpu.brand_string"] == "VirtualApple @ 2.50GHz"
    assert values["sysctl.proc_translated"] == "1"
    assert "debug.iogpu.wired_limit" not in values


# --- the real machine ------------------------------------------------------------------------------


def test_smoke_probe_on_this_machine() -> None:
    hw = probe()
    assert hw.ram_total is not None and hw.ram_total > 0
    assert hw.budget_bytes is not None and hw.budget_bytes > 0
    json.dumps(hw.to_dict())
