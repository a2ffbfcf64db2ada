"""Every input the hardware probe reads, behind one interface so tests can fake each of them.

``LocalSystem`` is the real implementation. Each method is cheap and only does work that can apply
on the current platform: the probe decides which methods to call (no sysctl on Linux, no
nvidia-smi on macOS), and the darwin-only methods return early elsewhere as a second guard.
"""

from __future__ import annotations

import functools
import glob as _glob
import os
import platform as _platform
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from ._records import one_line

COMMAND_TIMEOUT_S = 4.0

# sysctl values that are strings; every other key the probe asks for is an integer.
_STRING_SYSCTLS = frozenset({"machdep.cpu.brand_string", "kern.osproductversion", "hw.model"})


class CommandError(RuntimeError):
    """A program exists but did not give a usable answer (non-zero exit, timeout, not executable).

    The message is the one-line reason shown to users.
    """


class ProbeSystem(Protocol):
    """The inputs of ``probe()``. Any method may raise; the probe turns that into an ``Unknown``."""

    def platform(self) -> str:
        """``sys.platform`` ("linux", "darwin", "win32", ...)."""
        ...

    def os_release(self) -> str:
        """The OS version: the macOS product version on darwin, the kernel release elsewhere."""
        ...

    def machine(self) -> str:
        """``platform.machine()`` as seen by this (possibly translated) process."""
        ...

    def virtual_memory(self) -> tuple[int, int]:
        """(total, available) bytes of RAM, psutil's meaning (hardware.md §3)."""
        ...

    def cpu_count(self) -> int | None:
        """Logical cores."""
        ...

    def run(self, argv: Sequence[str]) -> str | None:
        """Stdout of a short-lived program; None when it is not installed.

        Raises ``CommandError`` (message = reason) when it exists but fails or times out.
        """
        ...

    def sysctl(self, keys: Sequence[str]) -> dict[str, str]:
        """Values of the darwin sysctl keys that exist; unknown keys are left out."""
        ...

    def read_text(self, path: str) -> str | None:
        """A small text file's contents, or None when it cannot be read."""
        ...

    def glob(self, pattern: str) -> list[str]:
        """Paths matching a shell pattern."""
        ...

    def metal_working_set(self) -> int | None:
        """Metal's ``recommendedMaxWorkingSetSize`` in bytes, or None when it cannot be read."""
        ...

    def nvml(self) -> Any:
        """The ``pynvml`` module (PyPI ``nvidia-ml-py``), or None when it is not installed."""
        ...

    def registry(self, key: str, value: str) -> str | None:
        """A string value under HKEY_LOCAL_MACHINE (Windows only), or None."""
        ...


def parse_sysctl_output(text: str) -> dict[str, str]:
    """Parse ``sysctl -i key ...`` output, one ``key: value`` line per key that exists."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            values[key.strip()] = value.strip()
    return values


class LocalSystem:
    """The real machine."""

    def __init__(self, timeout: float = COMMAND_TIMEOUT_S) -> None:
        self.timeout = timeout

    def platform(self) -> str:
        return sys.platform

    def os_release(self) -> str:
        if sys.platform == "darwin":
            version = _platform.mac_ver()[0]
            if version:
                return version
        return _platform.release()

    def machine(self) -> str:
        return _platform.machine()

    def virtual_memory(self) -> tuple[int, int]:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)

    def cpu_count(self) -> int | None:
        import psutil

        return psutil.cpu_count(logical=True) or os.cpu_count()

    def run(self, argv: Sequence[str]) -> str | None:
        name = os.path.basename(argv[0])
        env = dict(os.environ, LC_ALL="C")
        try:
            proc = subprocess.run(
                list(argv),
                capture_output=True,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                timeout=self.timeout,
                check=False,
                env=env,
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            )
        except FileNotFoundError:
            return None
        except subprocess.TimeoutExpired:
            raise CommandError(f"{name} timed out after {self.timeout:g} s") from None
        except OSError as exc:
            raise CommandError(f"{name}: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            detail = next((ln for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()), "")
            suffix = f": {one_line(detail)}" if detail else ""
            raise CommandError(f"{name} exited with status {proc.returncode}{suffix}")
        return proc.stdout

    def sysctl(self, keys: Sequence[str]) -> dict[str, str]:
        if sys.platform != "darwin":
            return {}
        try:
            return _sysctl_ctypes(keys)
        except Exception:
            pass
        # Fallback: one call of the sysctl binary. Without -n, so each line names its key: with -n,
        # a key that -i skipped would shift every later value onto the wrong key. Note that
        # sysctl.proc_translated then describes the child process, not us.
        out = self.run(["/usr/sbin/sysctl", "-i", *keys])
        return parse_sysctl_output(out) if out else {}

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        return _glob.glob(pattern)

    def metal_working_set(self) -> int | None:
        if self.platform() != "darwin":
            return None
        try:
            return _cached_metal_working_set()
        except Exception:
            return None

    def nvml(self) -> Any:
        import warnings

        try:
            # The deprecated PyPI "pynvml" shim warns on import (hardware.md §2.1); the module is
            # the same either way.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pynvml
        except Exception:
            return None
        return pynvml

    def registry(self, key: str, value: str) -> str | None:
        if sys.platform != "win32":
            return None
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, key) as handle:
                data, _kind = winreg.QueryValueEx(handle, value)
        except OSError:
            return None
        return str(data).strip() or None


def _sysctl_ctypes(keys: Sequence[str]) -> dict[str, str]:
    """Read sysctls in-process with ``sysctlbyname`` (no subprocess, and the translated view under
    Rosetta, which is what ``sysctl.proc_translated`` must be asked from)."""
    import ctypes

    libc = ctypes.CDLL("/usr/lib/libc.dylib", use_errno=True)
    fn = libc.sysctlbyname
    fn.argtypes = [
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.c_void_p,
        ctypes.c_size_t,
    ]
    fn.restype = ctypes.c_int
    values: dict[str, str] = {}
    for key in keys:
        name = key.encode()
        size = ctypes.c_size_t(0)
        if fn(name, None, ctypes.byref(size), None, 0) != 0 or size.value == 0:
            continue  # key does not exist on this machine / macOS version
        buf = ctypes.create_string_buffer(size.value)
        if fn(name, buf, ctypes.byref(size), None, 0) != 0:
            continue
        raw = buf.raw[: size.value]
        if key in _STRING_SYSCTLS or size.value not in (4, 8):
            values[key] = raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
        else:
            values[key] = str(int.from_bytes(raw, "little", signed=True))
    return values


@functools.cache
def _cached_metal_working_set() -> int | None:
    # Loading Metal and creating the device costs tens of milliseconds; the value only changes when
    # iogpu.wired_limit_mb is changed, and Ollama itself needs a restart to see that (hardware.md §1.2).
    return _read_metal_working_set()


def _read_metal_working_set() -> int | None:
    """``MTLCreateSystemDefaultDevice().recommendedMaxWorkingSetSize`` through the Objective-C
    runtime with ctypes, no PyObjC (hardware.md §1.4; untested on real hardware here)."""
    import ctypes

    objc = ctypes.CDLL("/usr/lib/libobjc.A.dylib")
    metal = ctypes.CDLL("/System/Library/Frameworks/Metal.framework/Metal")
    metal.MTLCreateSystemDefaultDevice.restype = ctypes.c_void_p
    metal.MTLCreateSystemDefaultDevice.argtypes = []
    objc.sel_registerName.restype = ctypes.c_void_p
    objc.sel_registerName.argtypes = [ctypes.c_char_p]
    send = objc.objc_msgSend
    send.restype = ctypes.c_uint64
    send.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    device = metal.MTLCreateSystemDefaultDevice()
    if not device:
        return None  # no Metal device (e.g. some Intel Macs)
    try:
        value = int(send(device, objc.sel_registerName(b"recommendedMaxWorkingSetSize")))
    finally:
        send(device, objc.sel_registerName(b"release"))
    return value if value > 0 else None
