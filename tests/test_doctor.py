"""`doctor`: each unhealthy setup is built for real (the Ollama emulator, the LM Studio / vLLM fakes, a real
llama-server) and the test asserts the check that flags it, its fix and the exit code.

The machine is recorded, never this one: hardware from the recorded probe outputs of
``test_hardware`` (sysctl dumps, NVML, nvidia-smi CSV) and the local processes from recorded
``psutil.process_iter`` entries of each OS: the macOS app's ``ollama serve`` (environment readable),
the Linux systemd service running as user ``ollama`` (environment refused: AccessDenied) and the
Windows tray app beside ``ollama.exe serve``.
"""

from __future__ import annotations

import json
import plistlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from sourceprep_models.cli import doctor as doctor_cmd
from sourceprep_models.config.schema import Endpoint
from sourceprep_models.doctor.checks.hardware import check_apple_gpu, check_gpu
from sourceprep_models.doctor.checks.server import identify
from sourceprep_models.doctor.checks.settings import co_resident_need, reuse_gaps
from sourceprep_models.doctor.records import Sized
from sourceprep_models.doctor.system import LocalSystem, PsutilProcesses
from sourceprep_models.hardware import ProbeSystem, probe
from sourceprep_models.providers.diagnostics import HttpReply, Reuse, ServerProcess
from sourceprep_models.providers.ollama.settings import env_fix, env_fix_details, read_server_env
from tests.conftest import Run
from tests.emulator import EmulatedModel, OllamaEmulator
from tests.fakes.lmstudio import QWEN, FakeLMStudio
from tests.fakes.vllm import FakeVLLM
from tests.loopback import Reply, Request, serve, unused_port
from tests.test_hardware import FakeSystem, apple_system, fake_nvml, fixture

GiB = 1 << 30
MiB = 1 << 20
QWEN4 = "qwen3:4b"
LLAMA3 = "llama3.2:3b"
MODELS = [EmulatedModel(QWEN4, file_mib=8), EmulatedModel(LLAMA3, file_mib=6)]


# -- recorded machines ------------------------------------------------------------------------------------


def linux_nvidia() -> FakeSystem:
    return FakeSystem(nvml=fake_nvml([("NVIDIA GeForce RTX 4090", 25_757_220_864, 25_039_601_664)]))


def mac_m2_max() -> FakeSystem:
    return apple_system("sysctl-apple-m2-max-64gb.txt", metal=51_539_607_552)


def windows_nvidia() -> FakeSystem:
    return FakeSystem(
        platform="win32",
        release="11",
        machine="AMD64",
        commands={"nvidia-smi": fixture("nvidia-smi-1gpu.csv")},
        registry={(r"HARDWARE\DESCRIPTION\System\CentralProcessor\0", "ProcessorNameString"): "AMD Ryzen 9 7950X"},
    )


@dataclass
class FakeProc:
    """One ``psutil.process_iter(["pid", "name", "cmdline", "username"])`` entry as psutil returns it."""

    pid: int
    name: str
    cmdline: list[str]
    username: str
    env: dict[str, str] | Exception

    @property
    def info(self) -> dict[str, Any]:
        return {"pid": self.pid, "name": self.name, "cmdline": self.cmdline, "username": self.username}

    def environ(self) -> dict[str, str]:
        if isinstance(self.env, Exception):
            raise self.env
        return self.env


def mac_processes(env: dict[str, str]) -> list[FakeProc]:
    return [
        FakeProc(612, "Ollama", ["/Applications/Ollama.app/Contents/MacOS/Ollama"], "me", {}),  # the menu-bar app
        FakeProc(640, "ollama", ["/Applications/Ollama.app/Contents/Resources/ollama", "serve"], "me", env),
    ]


def linux_systemd_processes() -> list[FakeProc]:
    # The install script's service runs as user "ollama": another user's environment is refused.
    denied = psutil.AccessDenied(1187, "ollama")
    return [FakeProc(1187, "ollama", ["/usr/local/bin/ollama", "serve"], "ollama", denied)]


def linux_manual_processes(env: dict[str, str]) -> list[FakeProc]:
    return [FakeProc(4242, "ollama", ["ollama", "serve"], "me", env)]


def windows_processes(env: dict[str, str]) -> list[FakeProc]:
    folder = r"C:\Users\me\AppData\Local\Programs\Ollama"
    return [
        FakeProc(9120, "ollama app.exe", [folder + r"\ollama app.exe"], r"DESKTOP-1\me", {}),  # the tray app
        FakeProc(9188, "ollama.exe", [folder + r"\ollama.exe", "serve"], r"DESKTOP-1\me", env),
    ]


UseMachine = Callable[..., None]


@pytest.fixture(autouse=True)
def machine(monkeypatch: pytest.MonkeyPatch) -> UseMachine:
    """Every test runs on a recorded machine (default: Linux with one RTX 4090, no Ollama process)."""

    def use(system: ProbeSystem, processes: list[FakeProc] | None = None) -> None:
        entries = list(processes or [])
        monkeypatch.setattr(psutil, "process_iter", lambda attrs=None: iter(entries))
        monkeypatch.setattr(
            doctor_cmd, "make_system", lambda app: LocalSystem(app.environ, probe_system=system, timeout_s=5.0)
        )

    use(linux_nvidia())
    return use


# -- the command ------------------------------------------------------------------------------------------


DoctorFn = Callable[..., Run]


@pytest.fixture
def doctor() -> DoctorFn:
    """`sourceprep-models doctor ARGS` through the real app."""
    from sourceprep_models.cli.app import app

    def invoke(*args: str) -> Run:
        # A leading `--config PATH` is the app's global option and goes before the command name.
        head = list(args[:2]) if args[:1] == ("--config",) else []
        result = CliRunner().invoke(app, [*head, "doctor", *args[len(head) :]], catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    return invoke


def checks(run: Run) -> dict[str, dict[str, Any]]:
    data = run.json()
    return {check["id"]: check for check in data["checks"]}


def statuses(run: Run) -> dict[str, str]:
    return {check_id: check["status"] for check_id, check in checks(run).items()}


def preload(url: str, model: str, **body: object) -> None:
    """Load through the server's own API, as another client would."""
    httpx.post(f"{url}/api/generate", json={"model": model, "stream": False, **body}, timeout=30).raise_for_status()


def ollama_config(url: str, extra: str = "", name: str = "ollama") -> str:
    return f'[endpoints.{name}]\nkind = "ollama"\nurl = "{url}"\n{extra}'


PINNED_PAIR = f"""
[models.chat]
name = "{QWEN4}"
context_length = 2048
always_available = true

[models.small]
name = "{LLAMA3}"
context_length = 2048
keep_alive = "10m"

[pipelines.rag]
stages = [{{ model = "chat" }}, {{ model = "small" }}]
"""


@pytest.fixture
def emu(ollama_emulator: Callable[..., OllamaEmulator]) -> OllamaEmulator:
    return ollama_emulator(models=MODELS)


def server_env(emulator: OllamaEmulator, **values: str) -> dict[str, str]:
    """The environment of the `ollama serve` behind the emulator, as psutil would show it."""
    return {"HOME": "/home/me", "OLLAMA_HOST": f"127.0.0.1:{emulator.port}", **values}


# -- a healthy setup ----------------------------------------------------------------------------------------


def test_a_healthy_setup_passes_with_exit_0(
    doctor: DoctorFn, emu: OllamaEmulator, write_config: Callable[[str], Path], machine: UseMachine
) -> None:
    machine(linux_nvidia(), linux_manual_processes(server_env(emu)))
    preload(emu.url, QWEN4, keep_alive=-1, options={"num_ctx": 2048})
    path = str(write_config(ollama_config(emu.url, PINNED_PAIR)))
    before = len(emu.requests)

    result = doctor("--config", path, "--json")

    assert result.exit_code == 0, result.stdout
    found = statuses(result)
    assert set(found.values()) == {"ok"}, {k: v for k, v in found.items() if v != "ok"}
    assert list(found) == [
        "config.found",
        "config.valid",
        "hardware.memory",
        "hardware.gpu",
        "hardware.budget",
        "config.endpoint.ollama",
        "endpoint.ollama.reachable",
        "endpoint.ollama.server",
        "endpoint.ollama.supports",
        "model.chat.present",
        "model.chat.fits",
        "model.small.present",
        "model.small.fits",
        "pins.ollama.fit",
        f"loaded.ollama.{QWEN4}.offload",
        f"loaded.ollama.{QWEN4}.context",
        "pin.chat.kept",
        "server.ollama.max_loaded_models",
        "server.ollama.keep_alive",
        "server.ollama.num_parallel",
    ]
    data = result.json()
    assert data["exit_code"] == 0 and data["summary"] == {"ok": 20, "warning": 0, "problem": 0, "skipped": 0}
    all_checks = checks(result)
    assert "NVIDIA GeForce RTX 4090" in all_checks["hardware.gpu"]["summary"]
    assert all_checks["endpoint.ollama.server"]["summary"] == "Ollama 0.33.0-rc2 (GET / says 'Ollama is running')"
    assert "read from `ollama serve` (pid 4242)" in all_checks["server.ollama.max_loaded_models"]["summary"]
    # Doctor only reads: no load, no unload, no pin repair reached the server.
    assert {(r.method, r.path) for r in emu.requests[before:]} <= {
        ("GET", "/"),
        ("GET", "/api/version"),
        ("GET", "/api/ps"),
        ("GET", "/api/tags"),
        ("POST", "/api/show"),
    }

    table = doctor("--config", path)
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "CHECK", "DETAIL", "/", "FIX"]
    assert len(lines) == 1 + 20  # one line per check
    assert table.stderr.strip() == "20 ok, 0 warnings, 0 problems"


# -- Ollama's model limit, read or inferred, with the fix for each platform ------------------------------------


@pytest.mark.parametrize(
    ("system", "processes", "pid", "fragments"),
    [
        (
            mac_m2_max,
            mac_processes,
            640,
            [
                "run `launchctl setenv OLLAMA_MAX_LOADED_MODELS 2`",
                "LaunchAgent ~/Library/LaunchAgents/local.ollama.env.OLLAMA_MAX_LOADED_MODELS.plist",
                "`brew upgrade`",
                "`brew services restart ollama`",
            ],
        ),
        (
            windows_nvidia,
            windows_processes,
            9188,
            ["run `setx OLLAMA_MAX_LOADED_MODELS 2` (a user environment variable)", "tray icon"],
        ),
        (
            linux_nvidia,
            linux_manual_processes,
            4242,
            ['`Environment="OLLAMA_MAX_LOADED_MODELS=2"`', "`OLLAMA_MAX_LOADED_MODELS=2 ollama serve`"],
        ),
    ],
    ids=["macos", "windows", "linux-by-hand"],
)
def test_a_limit_of_one_model_where_two_fit_is_a_problem_with_the_platform_fix(
    doctor: DoctorFn,
    ollama_emulator: Callable[..., OllamaEmulator],
    write_config: Callable[[str], Path],
    machine: UseMachine,
    system: Callable[[], FakeSystem],
    processes: Callable[[dict[str, str]], list[FakeProc]],
    pid: int,
    fragments: list[str],
) -> None:
    emulator = ollama_emulator(models=MODELS, max_loaded_models=1)
    machine(system(), processes(server_env(emulator, OLLAMA_MAX_LOADED_MODELS="1")))
    path = str(write_config(ollama_config(emulator.url, PINNED_PAIR)))

    result = doctor("--config", path, "--json")

    assert result.exit_code == 1
    check = checks(result)["server.ollama.max_loaded_models"]
    assert check["status"] == "problem"
    assert check["summary"].startswith(f"pipeline 'rag' keeps 2 models together ({QWEN4}, {LLAMA3}: ")
    assert check["summary"].endswith(
        f"but Ollama keeps at most 1 (OLLAMA_MAX_LOADED_MODELS=1, read from `ollama serve` (pid {pid})): the rest swap"
    )
    for fragment in fragments:
        assert fragment in check["fix"]
    assert check["details"]["fix_details"]["value"] == "2"


def test_the_macos_fix_is_a_launch_agent_that_sets_the_variable_at_login(
    doctor: DoctorFn,
    ollama_emulator: Callable[..., OllamaEmulator],
    write_config: Callable[[str], Path],
    machine: UseMachine,
) -> None:
    emulator = ollama_emulator(models=MODELS, max_loaded_models=1)
    machine(mac_m2_max(), mac_processes(server_env(emulator, OLLAMA_MAX_LOADED_MODELS="1")))
    result = doctor("--config", str(write_config(ollama_config(emulator.url, PINNED_PAIR))), "--json")
    details = checks(result)["server.ollama.max_loaded_models"]["details"]["fix_details"]
    agent = plistlib.loads(details["file_content"].encode())
    assert agent["ProgramArguments"] == ["/bin/launchctl", "setenv", "OLLAMA_MAX_LOADED_MODELS", "2"]
    assert agent["RunAtLoad"] is True
    assert details["file"] == f"~/Library/LaunchAgents/{agent['Label']}.plist"


def test_linux_systemd_service_limit_is_inferred_from_api_ps_and_says_so(
    doctor: DoctorFn,
    ollama_emulator: Callable[..., OllamaEmulator],
    write_config: Callable[[str], Path],
    machine: UseMachine,
) -> None:
    # The service's environment is refused, but /api/ps shows the pin gone although it would fit.
    emulator = ollama_emulator(models=MODELS, max_loaded_models=1)
    machine(linux_nvidia(), linux_systemd_processes())
    preload(emulator.url, QWEN4, keep_alive=-1, options={"num_ctx": 2048})
    preload(emulator.url, LLAMA3, options={"num_ctx": 2048})  # another client: the limit evicts the pin
    assert emulator.loaded_names() == [LLAMA3]
    path = str(write_config(ollama_config(emulator.url, PINNED_PAIR)))

    result = doctor("--config", path, "--json")

    assert result.exit_code == 1
    found = checks(result)
    limit = found["server.ollama.max_loaded_models"]
    assert limit["status"] == "problem"
    summary = limit["summary"]
    assert summary.endswith(
        "but Ollama keeps at most 1 (probably: /api/ps lists 1 while pinned qwen3:4b, which fits beside, is not "
        "loaded; inferred: the environment of `ollama serve` (pid 1187) is not readable (access denied: it runs as "
        "ollama)): the rest swap"
    )
    assert limit["fix"].startswith(
        "run `sudo systemctl edit ollama`, add the two lines `[Service]` and "
        '`Environment="OLLAMA_MAX_LOADED_MODELS=2"`, then `sudo systemctl restart ollama`'
    )
    assert limit["details"]["fix_details"]["file_content"] == '[Service]\nEnvironment="OLLAMA_MAX_LOADED_MODELS=2"\n'
    pin = found["pin.chat.kept"]
    assert (pin["status"], pin["summary"]) == ("problem", f"pinned {QWEN4} is not loaded on ollama")
    assert emulator.loaded_names() == [LLAMA3]  # doctor repaired nothing


def test_without_evidence_an_unreadable_default_limit_is_only_a_warning(
    doctor: DoctorFn,
    ollama_emulator: Callable[..., OllamaEmulator],
    write_config: Callable[[str], Path],
    machine: UseMachine,
) -> None:
    names = [QWEN4, LLAMA3, "extra-a", "extra-b"]
    emulator = ollama_emulator(
        models=[*MODELS, EmulatedModel("extra-a", file_mib=2), EmulatedModel("extra-b", file_mib=2)]
    )
    text = "".join(f'[models.m{i}]\nname = "{name}"\ncontext_length = 2048\n' for i, name in enumerate(names))
    text += '[pipelines.wide]\nstages = [{ model = "m0" }, { model = "m1" }, { model = "m2" }, { model = "m3" }]\n'
    machine(FakeSystem(), linux_systemd_processes())  # CPU only: Ollama's automatic limit is 3

    result = doctor("--config", str(write_config(ollama_config(emulator.url, text))), "--json")

    assert result.exit_code == 0
    limit = checks(result)["server.ollama.max_loaded_models"]
    assert limit["status"] == "warning"
    assert (
        "but Ollama keeps at most 3 (Ollama's default, 3 x GPUs, at least 3; inferred: the environment of "
        "`ollama serve` (pid 1187) is not readable" in limit["summary"]
    )
    assert limit["fix"].startswith("make sure OLLAMA_MAX_LOADED_MODELS is at least 4: run `sudo systemctl edit ollama`")


# -- what is loaded -----------------------------------------------------------------------------------------------


def test_partial_cpu_offload_is_a_problem_with_the_reload_fix(
    doctor: DoctorFn, ollama_emulator: Callable[..., OllamaEmulator], write_config: Callable[[str], Path]
) -> None:
    # A 16 MiB model on an 8 MiB GPU: the server still loads it, partly on the CPU (ollama.md §4.3 step 4).
    emulator = ollama_emulator(models=[EmulatedModel("big:14b", file_mib=16)], gpu_vram_mib=8)
    preload(emulator.url, "big:14b", options={"num_ctx": 2048})
    path = str(write_config(ollama_config(emulator.url, '[models.big]\nname = "big:14b"\ncontext_length = 2048\n')))

    result = doctor("--config", path, "--json")

    assert result.exit_code == 1
    check = checks(result)["loaded.ollama.big:14b.offload"]
    assert check["status"] == "problem"
    assert "big:14b runs" in check["summary"] and "% on the CPU" in check["summary"]
    assert 0 < check["details"]["size_vram"] < check["details"]["size"]
    assert check["fix"] == (
        "free GPU memory (unload other models) or give big a smaller context_length, then reload it: "
        "`sourceprep-models unload big` and `sourceprep-models load big`"
    )


def test_a_model_loaded_with_less_context_than_configured_is_a_problem(
    doctor: DoctorFn, emu: OllamaEmulator, write_config: Callable[[str], Path]
) -> None:
    preload(emu.url, QWEN4, options={"num_ctx": 2048})
    path = str(write_config(ollama_config(emu.url, f'[models.chat]\nname = "{QWEN4}"\ncontext_length = 8192\n')))

    result = doctor("--config", path, "--json")

    assert result.exit_code == 1
    check = checks(result)[f"loaded.ollama.{QWEN4}.context"]
    assert check["status"] == "problem"
    assert check["summary"] == (f"{QWEN4} is loaded with a 2048-token context, less than the 8192 models.chat asks for")
    assert check["fix"] == "reload it with the configured context: `sourceprep-models load chat`"


def test_a_pin_that_lost_its_keep_alive_is_a_problem(
    doctor: DoctorFn, emu: OllamaEmulator, write_config: Callable[[str], Path]
) -> None:
    preload(emu.url, QWEN4, keep_alive=-1, options={"num_ctx": 2048})
    preload(emu.url, QWEN4, keep_alive="10m", options={"num_ctx": 2048})  # another client's finite keep_alive
    path = str(write_config(ollama_config(emu.url, PINNED_PAIR)))

    result = doctor("--config", path, "--json")

    assert result.exit_code == 1
    check = checks(result)["pin.chat.kept"]
    assert check["status"] == "problem"
    assert check["summary"].startswith(f"pinned {QWEN4} lost its keep_alive: it unloads in ")
    assert check["fix"].startswith("find the client that sends keep_alive for it")


# -- server settings read from the process --------------------------------------------------------------------


RETRIEVAL = f"""
[models.embed]
name = "{LLAMA3}"
context_length = 2048

[models.chat]
name = "{QWEN4}"
context_length = 2048
keep_alive = "1h"

[pipelines.rag]
stages = [{{ model = "embed" }}, {{ model = "chat" }}, {{ model = "embed" }}]
"""


def test_keep_alive_shorter_than_the_gap_in_a_pipeline_is_a_warning(
    doctor: DoctorFn, emu: OllamaEmulator, write_config: Callable[[str], Path], machine: UseMachine
) -> None:
    from sourceprep_models.pipeline.state import RunState, save_state, state_path

    machine(linux_nvidia(), linux_manual_processes(server_env(emu, OLLAMA_KEEP_ALIVE="5m")))
    # The last run: the chat stage between the two embed stages took 400 s.
    finished = {"1-embed": {"total_s": 3.0}, "2-chat": {"total_s": 400.0}, "3-embed": {"total_s": 2.0}}
    save_state(state_path("rag"), RunState("rag", status="done", finished=finished))
    path = str(write_config(ollama_config(emu.url, RETRIEVAL)))

    result = doctor("--config", path, "--json")

    assert result.exit_code == 0  # a warning alone does not fail
    check = checks(result)["server.ollama.keep_alive"]
    assert check["status"] == "warning"
    assert check["summary"] == (
        f"pipeline 'rag' uses {LLAMA3} again after 6m40s of other stages, but idle models unload after 5m "
        "(OLLAMA_KEEP_ALIVE=5m, read from `ollama serve` (pid 4242)): it is reloaded every time"
    )
    assert check["fix"].startswith('set keep_alive = "10m" under [models.embed], or run `sudo systemctl edit ollama`')
    assert 'Environment="OLLAMA_KEEP_ALIVE=10m"' in check["fix"]
    assert result.stderr.strip().endswith("1 warning, 0 problems")


def test_keep_alive_gaps_are_unknown_until_the_pipeline_has_run(
    doctor: DoctorFn, emu: OllamaEmulator, write_config: Callable[[str], Path]
) -> None:
    result = doctor("--config", str(write_config(ollama_config(emu.url, RETRIEVAL))), "--json")
    check = checks(result)["server.ollama.keep_alive"]
    assert check["status"] == "ok"
    assert f"how long {LLAMA3} waits between its stages is known once its pipeline has run" in check["summary"]


def test_many_parallel_slots_are_a_warning(
    doctor: DoctorFn, emu: OllamaEmulator, write_config: Callable[[str], Path], machine: UseMachine
) -> None:
    machine(windows_nvidia(), windows_processes(server_env(emu, OLLAMA_NUM_PARALLEL="4")))
    result = doctor("--config", str(write_config(ollama_config(emu.url, RETRIEVAL))), "--json")
    assert result.exit_code == 0
    check = checks(result)["server.ollama.num_parallel"]
    assert check["status"] == "warning"
    assert check["summary"].startswith(
        "OLLAMA_NUM_PARALLEL=4 (read from `ollama serve` (pid 9188)) gives every model 4 request slots"
    )
    assert check["fix"].endswith(
        "run `setx OLLAMA_NUM_PARALLEL 1` (a user environment variable), then quit Ollama from its tray icon and "
        "start it again"
    )


# -- models -------------------------------------------------------------------------------------------------------


def test_an_unknown_model_is_a_problem_with_did_you_mean(
    doctor: DoctorFn, emu: OllamaEmulator, write_config: Callable[[str], Path]
) -> None:
    path = str(write_config(ollama_config(emu.url, '[models.reason]\nname = "qwen3:8b"\n')))
    result = doctor("--config", path, "--json")
    assert result.exit_code == 1
    check = checks(result)["model.reason.present"]
    assert check["status"] == "problem"
    assert check["summary"] == "model 'qwen3:8b' not found on endpoint 'ollama'"
    assert check["fix"] == (
        "did you mean 'qwen3:4b'? set name = \"qwen3:4b\" under [models.reason]; or pull it with `ollama pull qwen3:8b`"
    )
    assert "model.reason.fits" not in checks(result)


def test_a_model_larger_than_the_budget_and_pins_that_crowd_out_the_largest(
    doctor: DoctorFn, ollama_emulator: Callable[..., OllamaEmulator], write_config: Callable[[str], Path]
) -> None:
    emulator = ollama_emulator(models=[*MODELS, EmulatedModel("huge:70b", file_mib=8)])
    # A long context: a larger KV cache, so a larger prediction (hardware.md §4.3).
    huge = '[models.huge]\nname = "huge:70b"\ncontext_length = 32768\n'
    text = ollama_config(emulator.url, PINNED_PAIR + huge)
    sizes = {
        key: check["details"].get("predicted")
        for key, check in checks(doctor("--config", str(write_config(text)), "--json")).items()
    }
    pinned, small, big = sizes["model.chat.fits"], sizes["model.small.fits"], sizes["model.huge.fits"]
    assert max(pinned, small) < big
    # Each fits alone except the long-context one; the pin and the small model do not fit together.
    budget = (max(pinned, small) + big) // 2
    result = doctor("--config", str(write_config(text + f"[memory]\nbudget = {budget}\nheadroom = 0\n")), "--json")

    assert result.exit_code == 1
    found = checks(result)
    assert found["model.huge.fits"]["status"] == "problem"
    assert found["model.huge.fits"]["summary"].endswith("budget: it can never be fully resident")
    assert found["model.huge.fits"]["fix"].startswith("give models.huge a smaller context_length")
    assert found["model.small.fits"]["status"] == "warning"
    assert found["model.small.fits"]["summary"].endswith("`load small` is refused (exit 6) while the pins are loaded")
    assert found["model.chat.fits"]["status"] == "ok"  # the pin itself
    pins = found["pins.ollama.fit"]
    assert pins["status"] == "warning"
    assert pins["details"]["largest"] == LLAMA3  # the largest model that fits at all
    assert pins["summary"].endswith(f"`load {LLAMA3}` is refused (exit 6) while the pins are loaded")
    assert pins["fix"] == (
        f"use a smaller {LLAMA3} (or context), raise memory.budget, or unpin one of {QWEN4}, or set "
        "memory.allow_evict_pinned = true (pins come back afterwards)"
    )


# -- endpoints ------------------------------------------------------------------------------------------------------


def test_an_unreachable_endpoint_is_a_problem_and_the_others_are_still_checked(
    doctor: DoctorFn, emu: OllamaEmulator, write_config: Callable[[str], Path]
) -> None:
    down = f"http://127.0.0.1:{unused_port()}"
    text = ollama_config(down, name="down") + ollama_config(
        emu.url, f'[models.chat]\nname = "{QWEN4}"\nendpoint = "ollama"\n'
    )
    result = doctor("--config", str(write_config(text)), "--json")

    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    found = checks(result)
    reachable = found["endpoint.down.reachable"]
    assert reachable["status"] == "problem"
    assert reachable["summary"] == f"cannot reach endpoint 'down' at {down}"
    assert reachable["fix"] == "start it with `ollama serve` (or open the Ollama app), or fix the endpoint's url"
    assert found["endpoint.down.models"]["status"] == "skipped"
    assert found["endpoint.ollama.reachable"]["status"] == "ok"
    assert found["model.chat.present"]["status"] == "ok"


def _fake_ollama(ps: Reply) -> Callable[[Request], Reply]:
    """An Ollama that answers GET / and /api/version but /api/ps as given."""

    def handle(request: Request) -> Reply:
        if request.path == "/":
            return 200, "Ollama is running"
        if request.path == "/api/version":
            return 200, {"version": "0.33.0"}
        if request.path == "/api/ps":
            return ps
        return 404, "404 page not found"

    return handle


@pytest.mark.parametrize(
    ("ps", "expected"),
    [
        ((503, {"error": "server busy, please try again.  maximum pending requests exceeded"}), "is busy"),
        ((200, {"unexpected": True}), "did not answer like Ollama"),
    ],
    ids=["busy", "unexpected-200"],
)
def test_a_busy_or_strange_server_is_a_problem_naming_the_endpoint(
    doctor: DoctorFn, write_config: Callable[[str], Path], ps: Reply, expected: str
) -> None:
    with serve(_fake_ollama(ps)) as url:
        result = doctor("--config", str(write_config(ollama_config(url, name="box"))), "--json")
    assert result.exit_code == 1
    check = checks(result)["endpoint.box.loaded"]
    assert check["status"] == "problem"
    assert expected in check["summary"] and "'box'" in check["summary"]


def test_a_port_that_holds_another_server_is_a_problem(doctor: DoctorFn, write_config: Callable[[str], Path]) -> None:
    studio = FakeLMStudio()
    with serve(_with_greeting(studio)) as url:
        result = doctor("--config", str(write_config(ollama_config(url))), "--json")
    assert result.exit_code == 1
    found = checks(result)
    check = found["endpoint.ollama.server"]
    assert check["status"] == "problem"
    assert (
        check["summary"]
        == f"the server at {url} is LM Studio 0.4.0 or later (REST v1), not Ollama as endpoint 'ollama' says"
    )
    assert check["fix"] == (
        'set kind = "lmstudio" under [endpoints.ollama], or point its url at the Ollama server '
        "(its default port is 11434)"
    )
    assert found["endpoint.ollama.models"]["status"] == "skipped"


def test_llama_swap_mimicking_ollama_at_ollama_host_is_recognised(
    doctor: DoctorFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # llama-swap answers Ollama's /api/version, /api/tags and /api/ps (internal/ollama/handlers.go), but
    # not GET / (a redirect to its UI), and it has /running.
    def handle(request: Request) -> Reply:
        routes: dict[str, Reply] = {
            "/": (302, "Found"),
            "/running": (200, {"running": []}),
            "/api/version": (200, {"version": "0.0.0-llama-swap"}),
            "/api/ps": (200, {"models": []}),
            "/api/tags": (200, {"models": []}),
        }
        return routes.get(request.path, (404, "404 page not found"))

    with serve(handle) as url:
        monkeypatch.setenv("OLLAMA_HOST", url)
        result = doctor("--json")
    assert result.exit_code == 1
    found = checks(result)
    assert found["config.found"]["summary"].startswith("no config file: built-in defaults")
    assert (
        found["config.endpoint.ollama"]["summary"] == f"ollama at {url}, from $OLLAMA_HOST (no endpoints in the config)"
    )
    check = found["endpoint.ollama.server"]
    assert (
        check["summary"] == f"the server at {url} is llama-swap 0.0.0-llama-swap, not Ollama as endpoint 'ollama' says"
    )
    assert check["fix"] == (
        "point OLLAMA_HOST at the Ollama server (its default port is 11434), or add [endpoints.ollama] with "
        f'kind = "llamaswap" and url = "{url}" to the config'
    )


def test_an_old_ollama_is_a_warning_to_upgrade(
    doctor: DoctorFn, ollama_emulator: Callable[..., OllamaEmulator], write_config: Callable[[str], Path]
) -> None:
    emulator = ollama_emulator(models=MODELS, version="0.9.6")
    result = doctor("--config", str(write_config(ollama_config(emulator.url))), "--json")
    assert result.exit_code == 0
    check = checks(result)["endpoint.ollama.supports"]
    assert (check["status"], check["fix"]) == ("warning", "upgrade Ollama")
    assert "added in 0.10.0" in check["summary"]


def test_ollama_host_that_disagrees_with_the_config_is_a_warning(
    doctor: DoctorFn, emu: OllamaEmulator, write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:11434")
    result = doctor("--config", str(write_config(ollama_config(emu.url))), "--json")
    check = checks(result)["config.endpoint.ollama"]
    assert check["status"] == "warning"
    assert "$OLLAMA_HOST sends the `ollama` command to http://gpu-box:11434" in check["summary"]
    assert check["fix"] == (
        'make them agree: set url = "http://gpu-box:11434" under [endpoints.ollama], or change OLLAMA_HOST'
    )


# -- LM Studio -----------------------------------------------------------------------------------------------------


def studio_config(url: str, extra: str = "") -> str:
    endpoint = f'[endpoints.studio]\nkind = "lmstudio"\nurl = "{url}"\n'
    return endpoint + f'[models.qwen]\nname = "{QWEN}"\nendpoint = "studio"\n{extra}'


def _with_greeting(studio: FakeLMStudio) -> Callable[[Request], Reply]:
    """The fake LM Studio plus its greeting (lmstudio-ai/lms src/createClient.ts checks it)."""

    def handle(request: Request) -> Reply:
        if request.path == "/lmstudio-greeting":
            return 200, {"lmstudio": True}
        return studio.handle(request.method, request.path, request.body)

    return handle


@pytest.mark.parametrize("missing_status", [200, 404])
def test_lmstudio_older_than_0_4_0_with_models_to_load_is_a_problem(
    doctor: DoctorFn, write_config: Callable[[str], Path], missing_status: int
) -> None:
    studio = FakeLMStudio(v1=False, v1_missing_status=missing_status)
    with serve(_with_greeting(studio)) as url:
        text = studio_config(url, "context_length = 16384\n")
        result = doctor("--config", str(write_config(text)), "--json")
    assert result.exit_code == 1
    found = checks(result)
    assert (
        found["endpoint.studio.server"]["summary"]
        == "LM Studio older than 0.4.0 (REST v0 only) (GET /lmstudio-greeting)"
    )
    check = found["endpoint.studio.supports"]
    assert check["status"] == "problem"
    assert (
        check["summary"]
        == f"LM Studio older than 0.4.0 cannot load or unload models over HTTP, and the config has {QWEN} on it"
    )
    assert check["fix"] == "upgrade LM Studio to 0.4.0 or later (until then load models with `lms load MODEL`)"
    assert not studio.posted("/api/v1/models/load")


def test_lmstudio_at_its_default_4096_context_is_a_warning_not_a_failure(
    doctor: DoctorFn, write_config: Callable[[str], Path]
) -> None:
    studio = FakeLMStudio(instances={QWEN: [(QWEN, 4096)]})
    with serve(_with_greeting(studio)) as url:
        text = studio_config(url)
        result = doctor("--config", str(write_config(text)), "--json")
    assert result.exit_code == 0
    found = checks(result)
    configured = found["model.qwen.context"]
    assert configured["status"] == "warning"
    assert configured["fix"] == "set context_length = 32768 under [models.qwen] (what your prompts need, up to 40960)"
    loaded = found[f"loaded.studio.{QWEN}.context"]
    assert loaded["status"] == "warning"
    assert loaded["summary"].startswith(f"{QWEN} is loaded with a 4096-token context (LM Studio's default)")
    assert found["endpoint.studio.supports"]["status"] == "ok"


# -- vLLM --------------------------------------------------------------------------------------------------------


def _vllm_with_version(server: FakeVLLM) -> Callable[[Request], Reply]:
    """The fake vLLM plus GET /version (vllm/entrypoints/openai/api_server.py: {"version": VLLM_VERSION})."""

    def handle(request: Request) -> Reply:
        if request.path == "/version":
            return 200, {"version": "0.11.0"}
        return server.handle(request)

    return handle


@pytest.mark.parametrize(
    ("server", "with_pipeline", "status", "missing"),
    [
        (FakeVLLM(dev_mode=False), True, "problem", "its sleep routes are off (VLLM_SERVER_DEV_MODE=1 is not set)"),
        (FakeVLLM(sleep_mode=False), False, "warning", "it was started without --enable-sleep-mode"),
    ],
    ids=["no-dev-mode-in-a-pipeline", "no-sleep-mode"],
)
def test_vllm_that_cannot_sleep(
    doctor: DoctorFn,
    emu: OllamaEmulator,
    write_config: Callable[[str], Path],
    server: FakeVLLM,
    with_pipeline: bool,
    status: str,
    missing: str,
) -> None:
    with serve(_vllm_with_version(server)) as url:
        text = (
            ollama_config(emu.url)
            + f'[endpoints.gpu]\nkind = "vllm"\nurl = "{url}/v1"\n'
            + f'[models.big]\nname = "{server.model}"\nendpoint = "gpu"\n'
            + f'[models.chat]\nname = "{QWEN4}"\nendpoint = "ollama"\n'
        )
        if with_pipeline:
            text += '[pipelines.mix]\nstages = [{ model = "big" }, { model = "chat" }]\n'
        result = doctor("--config", str(write_config(text)), "--json")
    found = checks(result)
    assert found["endpoint.gpu.server"]["summary"].startswith("vLLM 0.11.0")
    check = found["endpoint.gpu.supports"]
    assert check["status"] == status
    assert missing in check["summary"]
    assert check["fix"].startswith("restart it as `VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --enable-sleep-mode`")
    assert result.exit_code == (1 if status == "problem" else 0)
    assert found["model.big.fits"]["status"] == "skipped"  # vLLM reports no sizes


# -- config ---------------------------------------------------------------------------------------------------------


def test_an_invalid_config_is_a_problem_and_the_rest_is_skipped(
    doctor: DoctorFn, write_config: Callable[[str], Path]
) -> None:
    path = write_config('[endpoints.ollama]\nkind = "olama"\n')
    result = doctor("--config", str(path), "--json")
    assert result.exit_code == 1
    found = checks(result)
    assert found["config.found"]["status"] == "ok"
    assert found["config.valid"] == {
        "id": "config.valid",
        "status": "problem",
        "summary": f"{path}:2: endpoints.ollama.kind: unknown provider kind 'olama'",
        "fix": "did you mean 'ollama'?",
        "details": {"error": f"{path}:2: endpoints.ollama.kind: unknown provider kind 'olama'; did you mean 'ollama'?"},
    }
    assert found["endpoints"]["status"] == "skipped"
    assert found["hardware.gpu"]["status"] == "ok"  # the machine is still checked


def test_a_missing_config_file_is_a_problem(doctor: DoctorFn, tmp_path: Path) -> None:
    result = doctor("--config", str(tmp_path / "nope.toml"), "--json")
    assert result.exit_code == 1
    check = checks(result)["config.found"]
    assert check["summary"] == f"{tmp_path / 'nope.toml'} (named by --config) does not exist"
    assert check["fix"] == "create it (see models.example.toml) or point --config at the right file"


def test_endpoint_option_limits_the_checks_and_an_unknown_name_is_a_usage_error(
    doctor: DoctorFn, emu: OllamaEmulator, write_config: Callable[[str], Path]
) -> None:
    down = f"http://127.0.0.1:{unused_port()}"
    path = str(write_config(ollama_config(emu.url) + ollama_config(down, name="down")))
    result = doctor("--config", path, "--endpoint", "ollama", "--json")
    assert result.exit_code == 0
    assert not any(".down." in check_id for check_id in checks(result))
    wrong = doctor("--config", path, "--endpoint", "nope")
    assert wrong.exit_code == 2 and "no endpoint named 'nope'" in wrong.stderr


# -- a real llama-server -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("gguf", reason="the model generator needs the gguf package (pip install gguf)")
    from tests.realserver.make_gguf import PRESETS, write_model

    folder = tmp_path_factory.mktemp("doctor-gguf")
    return {
        name: write_model(folder / f"{name}.gguf", PRESETS["tiny"], seed=i)
        for i, name in enumerate(("tiny-a", "tiny-b"))
    }


def _llama_config(url: str) -> str:
    return (
        f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{url}"\n'
        '[models.a]\nname = "tiny-a"\nendpoint = "llama"\n[models.b]\nname = "tiny-b"\nendpoint = "llama"\n'
        '[pipelines.both]\nstages = [{ model = "a" }, { model = "b" }]\n'
    )


@pytest.mark.realserver
def test_a_single_model_llama_server_is_a_problem_for_a_config_with_two_models(
    doctor: DoctorFn, gguf_files: dict[str, Path], write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    from tests.realserver.router import llama_server, require_binary

    binary = require_binary()
    with llama_server(binary, tmp_path, "-m", str(gguf_files["tiny-a"]), "--alias", "tiny-a") as server:
        result = doctor("--config", str(write_config(_llama_config(server.url))), "--json")
    assert result.exit_code == 1
    found = checks(result)
    supports = found["endpoint.llama.supports"]
    assert supports["status"] == "problem"
    assert supports["summary"] == (
        "single-model llama-server (started with -m): it cannot load or unload models; it serves only tiny-a, "
        "not tiny-b"
    )
    assert supports["fix"] == (
        "restart llama-server in router mode: without -m, with --models-dir DIR holding the GGUF files "
        "(and --models-max N)"
    )
    assert found["model.b.present"]["status"] == "problem"
    assert found["model.a.present"]["status"] == "ok"


@pytest.mark.realserver
@pytest.mark.parametrize(("models_max", "status"), [(1, "problem"), (2, "ok")])
def test_a_llama_server_router_with_too_small_models_max(
    doctor: DoctorFn,
    gguf_files: dict[str, Path],
    write_config: Callable[[str], Path],
    tmp_path: Path,
    models_max: int,
    status: str,
) -> None:
    import shutil

    from tests.realserver.router import llama_server, require_binary

    binary = require_binary()
    folder = tmp_path / "models"
    folder.mkdir()
    for path in gguf_files.values():
        shutil.copy(path, folder / path.name)
    args = ("--models-dir", str(folder), "--models-max", str(models_max), "--no-models-autoload")
    with llama_server(binary, tmp_path, *args) as server:
        result = doctor("--config", str(write_config(_llama_config(server.url))), "--json")
        assert server.loaded() == set()  # doctor loaded nothing
    found = checks(result)
    assert found["endpoint.llama.supports"]["status"] == "ok"
    assert found["endpoint.llama.server"]["summary"].startswith("llama-server ")
    check = found["server.llama.max_loaded_models"]
    assert check["status"] == status
    assert result.exit_code == (1 if status == "problem" else 0), result.stdout
    if status == "problem":
        assert check["summary"].startswith("pipeline 'both' keeps 2 models together (tiny-a, tiny-b: ")
        assert check["fix"] == "restart llama-server with --models-max 2"


# -- the pieces, from recorded outputs ---------------------------------------------------------------------------


def test_env_fix_for_each_platform() -> None:
    assert env_fix("linux", "OLLAMA_KEEP_ALIVE", "30m") == (
        'run `sudo systemctl edit ollama`, add the two lines `[Service]` and `Environment="OLLAMA_KEEP_ALIVE=30m"`, '
        "then `sudo systemctl restart ollama` (started by hand instead? restart it as "
        "`OLLAMA_KEEP_ALIVE=30m ollama serve`)"
    )
    assert env_fix("windows", "OLLAMA_KEEP_ALIVE", "30m") == (
        "run `setx OLLAMA_KEEP_ALIVE 30m` (a user environment variable), then quit Ollama from its tray icon and "
        "start it again"
    )
    mac = env_fix("darwin", "OLLAMA_KEEP_ALIVE", "30m")
    assert mac.startswith(
        "run `launchctl setenv OLLAMA_KEEP_ALIVE 30m` and, so that it survives reboots and `brew upgrade`"
    )
    assert "~/Library/LaunchAgents/local.ollama.env.OLLAMA_KEEP_ALIVE.plist" in mac
    assert (
        env_fix("freebsd", "OLLAMA_KEEP_ALIVE", "30m")
        == "start `ollama serve` with OLLAMA_KEEP_ALIVE=30m in its environment"
    )
    linux = env_fix_details("linux", "OLLAMA_KEEP_ALIVE", "30m")
    assert linux["file"] == "/etc/systemd/system/ollama.service.d/override.conf"
    assert env_fix_details("windows", "OLLAMA_KEEP_ALIVE", "30m")["commands"][0] == "setx OLLAMA_KEEP_ALIVE 30m"


def test_psutil_processes_per_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"OLLAMA_HOST": "127.0.0.1:11434"}
    gone = FakeProc(77, "ollama", ["ollama", "serve"], "me", psutil.NoSuchProcess(77))
    runner = FakeProc(78, "ollama", ["ollama", "runner", "--model", "x"], "me", {})  # not the server
    recorded = [*mac_processes(env), *linux_systemd_processes(), *windows_processes(env), gone, runner]
    monkeypatch.setattr(psutil, "process_iter", lambda attrs=None: iter(recorded))
    found = PsutilProcesses().servers("ollama")
    assert [(proc.pid, proc.name, proc.environ is not None, proc.reason) for proc in found] == [
        (640, "ollama", True, None),
        (1187, "ollama", False, "access denied: it runs as ollama"),
        (9188, "ollama.exe", True, None),
    ]
    assert PsutilProcesses().servers("vllm") == []


def test_read_server_env_matches_the_port_and_says_why_it_infers() -> None:
    endpoint = Endpoint(name="ollama", kind="ollama", url="http://127.0.0.1:11500")
    other = ServerProcess(1, "ollama", ("ollama", "serve"), {"OLLAMA_HOST": "127.0.0.1:11434"})
    mine = ServerProcess(2, "ollama", ("ollama", "serve"), {"OLLAMA_HOST": "0.0.0.0:11500", "OLLAMA_KEEP_ALIVE": "1h"})
    env = read_server_env(endpoint, [other, mine])
    assert env.read and env.values["OLLAMA_KEEP_ALIVE"] == "1h" and env.note == "read from `ollama serve` (pid 2)"
    assert read_server_env(endpoint, [other]).note == "inferred: no local `ollama serve` process listens on port 11500"
    assert read_server_env(endpoint, []).note == "inferred: no local `ollama serve` process found"
    remote = Endpoint(name="box", kind="ollama", url="http://gpu-box:11434")
    assert read_server_env(remote, [mine]).note == "inferred: the server runs on another machine"


def test_apple_gpu_working_set_from_recorded_sysctl() -> None:
    # A 32 GB M1 Max with the default working set (2/3, hardware.md §1.2): 21.3 GiB.
    hardware = probe(apple_system("sysctl-apple-m2-max-64gb.txt", memory=(32 * GiB, 16 * GiB), metal=None))
    assert hardware.budget_source == "2/3 of RAM (fallback rule)"
    needs_more = check_apple_gpu(hardware, ("pipeline 'rag' on ollama", 22 * GiB), headroom=GiB)
    assert needs_more is not None and needs_more.status == "warning"
    assert needs_more.summary.startswith("GPU may use 22.9 GB (67% of 34.4 GB RAM, the macOS default): pipeline 'rag'")
    assert needs_more.fix == (
        "raise the GPU's share with `sudo sysctl iogpu.wired_limit_mb=24576` (lasts until a reboot), then restart the "
        "model server"
    )
    fits = check_apple_gpu(hardware, ("x", 4 * GiB), headroom=GiB)
    assert (
        fits is not None
        and fits.status == "ok"
        and "`sudo sysctl iogpu.wired_limit_mb=24576` would raise it" in fits.summary
    )
    raised = check_apple_gpu(probe(apple_system("sysctl-apple-m1-max-32gb-wired-limit.txt", metal=None)), None, GiB)
    assert raised is not None and raised.status == "ok" and raised.summary.endswith("raised by iogpu.wired_limit_mb")
    assert check_apple_gpu(probe(linux_nvidia()), None, GiB) is None


def test_nvidia_without_a_working_driver_is_a_problem() -> None:
    check = check_gpu(probe(FakeSystem(nvml=fake_nvml(init_error=9), commands={"nvidia-smi": psutil_error()})))
    assert check.status == "problem"
    assert check.summary.startswith("an NVIDIA GPU is there but not usable: ")
    assert check.fix is not None and check.fix.startswith("install or repair the NVIDIA driver until `nvidia-smi`")


def psutil_error() -> Exception:
    from sourceprep_models.hardware import CommandError

    return CommandError("nvidia-smi: Failed to initialize NVML: Driver/library version mismatch")


def test_identify_by_replies_only_that_server_gives() -> None:
    def answers(routes: dict[str, Any]) -> Callable[[str], HttpReply]:
        return lambda path: HttpReply(200, routes[path]) if path in routes else HttpReply(404, {"detail": "Not Found"})

    omlx = identify(answers({"/v1/models/status": {"models": [], "model_count": 0}}), "ollama")
    assert omlx.kind == "omlx"
    unknown = identify(answers({"/v1/models": {"data": [{"id": "m", "owned_by": "someone"}]}}), "vllm")
    assert unknown.kind is None
    # LM Studio answers every route with 200 and an error body: none of that is taken for another server.
    studio = identify(lambda path: HttpReply(200, {"error": f"Unexpected endpoint or method. (GET {path})"}), "ollama")
    assert studio.kind is None


def test_reuse_gaps_and_co_resident_need() -> None:
    runs = [("1-e", "embed", "e"), ("2-c", "chat", "c"), ("3-r", "rank", "r"), ("4-e", "embed", "e")]
    assert reuse_gaps("p", runs, {"2-c": 100.0, "3-r": 50.0}) == [Reuse("p", "embed", "e", 150.0)]
    assert reuse_gaps("p", runs, {"2-c": 100.0}) == [Reuse("p", "embed", "e", None)]
    assert reuse_gaps("p", runs[:2], {}) == []
    pins = [Sized("pin", "i-pin", 4, pinned=True)]
    need = co_resident_need(pins, {"pipeline 'p'": [Sized("a", "i-a", 3), Sized("b", "i-b", 5)]}, budget=10)
    assert need is not None and (need.count, need.models, need.bytes) == (2, ("pin", "a"), 7)


def test_json_and_table_say_the_same(
    doctor: DoctorFn, emu: OllamaEmulator, write_config: Callable[[str], Path]
) -> None:
    path = str(write_config(ollama_config(emu.url, '[models.reason]\nname = "qwen3:8b"\n')))
    data = doctor("--config", path, "--json").json()
    table = doctor("--config", path)
    rows = table.stdout.splitlines()[1:]
    assert [row.split()[:2] for row in rows] == [[c["status"], c["id"]] for c in data["checks"]]
    problem_row = next(row for row in rows if "model.reason.present" in row)
    assert "-> fix: did you mean 'qwen3:4b'?" in problem_row
    assert json.loads(json.dumps(data)) == data


def test_a_model_on_the_cpu_of_a_machine_without_a_gpu_is_no_problem(
    doctor: DoctorFn,
    ollama_emulator: Callable[..., OllamaEmulator],
    write_config: Callable[[str], Path],
    machine: UseMachine,
) -> None:
    machine(FakeSystem())  # no GPU: the CPU is where every model runs
    emulator = ollama_emulator(models=[EmulatedModel("small:1b", file_mib=4)], gpu_vram_mib=None)
    preload(emulator.url, "small:1b", options={"num_ctx": 2048})
    path = str(write_config(ollama_config(emulator.url, '[models.small]\nname = "small:1b"\ncontext_length = 2048\n')))

    result = doctor("--config", path, "--json")

    check = checks(result)["loaded.ollama.small:1b.offload"]
    assert check["status"] == "ok"
    assert check["details"]["size_vram"] == 0
    assert "no GPU" in check["summary"]
    assert [c["id"] for c in checks(result).values() if c["status"] == "problem"] == []
    assert result.exit_code == 0, result.stdout


@pytest.mark.parametrize("spelling", ["[::ffff:127.0.0.1]:{port}", "localhost:{port}", "http://127.0.0.1:{port}/"])
def test_ollama_host_spelling_the_same_server_otherwise_is_no_warning(
    doctor: DoctorFn,
    emu: OllamaEmulator,
    write_config: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    spelling: str,
) -> None:
    """The `ollama` command reaches the configured server through each of these, so they agree."""
    monkeypatch.setenv("OLLAMA_HOST", spelling.format(port=emu.port))
    result = doctor("--config", str(write_config(ollama_config(f"http://127.0.0.1:{emu.port}"))), "--json")
    assert checks(result)["config.endpoint.ollama"]["status"] == "ok"
