"""`doctor`: find the setups that make models swap (or crawl) silently, and say exactly what to change.

Each check is a small function from plain data (config records, the hardware record, what a server
answered) to one ``Check`` record: ok, warning, problem or skipped, a one-line summary, a one-line
fix for anything not ok, and details for ``--json``. ``run_doctor`` gathers that data through a
``DoctorSystem`` (the hardware probe, providers, raw GETs for detection, the local server
processes, the saved pipeline runs), so tests drive every branch from recorded outputs.

What this module relies on and the traps it avoids (section numbers: servers.md, ollama.md,
hardware.md):

- Detection, servers.md §7: a port may not hold what the config claims, and a bare 200 proves
  nothing (LM Studio answers unknown routes with 200 and an error body, §1.3). Each server is
  recognised by a reply only it gives: Ollama by ``GET /`` → ``Ollama is running`` (ollama.md §1)
  — not by ``/api/version``, which llama-swap's Ollama compatibility layer answers too
  (llama-swap ``internal/ollama/handlers.go``); llama-swap by ``GET /running``; LM Studio by
  ``GET /lmstudio-greeting`` → ``{"lmstudio": true}`` (the check ``lms`` itself makes,
  lmstudio-ai/lms ``src/createClient.ts``), then REST v1 (0.4.0+) or only v0; llama-server by
  ``GET /props`` (``role: router`` or a single model's settings, §2.2); vLLM by its model cards'
  ``owned_by: "vllm"``, version from ``GET /version``, sleep routes from ``/is_sleeping`` and the
  flag from ``/server_info`` (§4); oMLX by ``GET /v1/models/status`` (§5).
- Ollama's server settings (ollama.md §4.10) live in the server's environment and need a restart.
  They are read from the local ``ollama serve`` process (psutil) when allowed; the Linux install
  runs it as user ``ollama``, so reading is usually refused, and then the value is Ollama's
  default or what ``/api/ps`` shows, always labelled "inferred". ``OLLAMA_MAX_LOADED_MODELS`` 0
  means 3 x GPUs, at least 3 (§4.3); ``OLLAMA_KEEP_ALIVE`` is a Go duration or whole seconds,
  negative meaning forever (§3.1); ``OLLAMA_NUM_PARALLEL`` multiplies the KV cache (§4.8).
- Fixes for those settings are written for the platform (``env_fix``): a LaunchAgent of the
  user's own on macOS (edits to Homebrew's ``homebrew.mxcl.ollama.plist`` are lost on
  ``brew upgrade``), a systemd drop-in on Linux, a user environment variable on Windows.
- Apple Silicon: the GPU may use only Metal's working set, 2/3 of RAM up to 32 GB and 3/4 above
  by default; ``iogpu.wired_limit_mb`` raises it (hardware.md §1.2). It matters only when what
  the config keeps together does not fit the working set but would fit the raised one.
- Doctor never changes anything: it does not repair pins or load models (``status`` does that).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from sourceprep_models.errors import ModelNotFound, ServerUnreachable, SourceprepError
from sourceprep_models.units import format_seconds, human_bytes, parse_keep_alive, percent

if TYPE_CHECKING:
    import httpx
    from rich.table import Table

    from sourceprep_models.config.locate import ConfigLocation
    from sourceprep_models.config.schema import Config, Endpoint, ModelSpec
    from sourceprep_models.hardware import Hardware, ProbeSystem
    from sourceprep_models.memory.sizing import Budget, SizeBook
    from sourceprep_models.providers.base import LoadedModel, ModelInfo, Provider
    from sourceprep_models.swap.residency import Session

Status = Literal["ok", "warning", "problem", "skipped"]
STATUSES: tuple[Status, ...] = ("ok", "warning", "problem", "skipped")

GIB = 1024**3
MIB = 1024**2

LABELS = {
    "ollama": "Ollama",
    "lmstudio": "LM Studio",
    "llamacpp": "llama-server",
    "llamaswap": "llama-swap",
    "vllm": "vLLM",
    "omlx": "oMLX",
    "openai": "an OpenAI-compatible API",
}
DEFAULT_PORTS = {"ollama": 11434, "lmstudio": 1234, "llamacpp": 8080, "llamaswap": 8080, "vllm": 8000, "omlx": 8000}
START_HINTS = {
    "ollama": "start it with `ollama serve` (or open the Ollama app)",
    "lmstudio": "start its server with `lms server start` (or the app's Developer tab)",
    "llamacpp": "start `llama-server --models-dir DIR --port PORT`",
    "llamaswap": "start `llama-swap --config config.yaml`",
    "vllm": "start `vllm serve MODEL --enable-sleep-mode` with VLLM_SERVER_DEV_MODE=1",
    "omlx": "start `omlx serve --model-dir DIR`",
    "openai": "check the URL and the network",
}
# Ollama's context default on a small GPU or the CPU (ollama.md §4.8), and LM Studio's (servers.md §1.3).
SMALL_DEFAULT_CONTEXT = 4096
# What the Apple advice leaves to macOS and apps: at least 8 GiB or a quarter of RAM (hardware.md §1.2).
_MAC_RESERVE = 8 * GIB


# -- records ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One line of the checklist."""

    id: str
    status: Status
    summary: str
    fix: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "summary": self.summary, "fix": self.fix, "details": self.details}


def ok(check_id: str, summary: str, **details: Any) -> Check:
    return Check(check_id, "ok", summary, None, details)


def warning(check_id: str, summary: str, fix: str, **details: Any) -> Check:
    return Check(check_id, "warning", summary, fix, details)


def problem(check_id: str, summary: str, fix: str, **details: Any) -> Check:
    return Check(check_id, "problem", summary, fix, details)


def skipped(check_id: str, summary: str, **details: Any) -> Check:
    return Check(check_id, "skipped", summary, None, details)


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {status: sum(1 for check in self.checks if check.status == status) for status in STATUSES}

    @property
    def exit_code(self) -> int:
        """1 when any check is a problem; warnings alone do not fail (so CI can gate on it)."""
        return 1 if any(check.status == "problem" for check in self.checks) else 0

    def summary_line(self) -> str:
        counts = self.counts()
        line = (
            f"{counts['ok']} ok, {counts['warning']} warning{'' if counts['warning'] == 1 else 's'}, "
            f"{counts['problem']} problem{'' if counts['problem'] == 1 else 's'}"
        )
        return line + (f", {counts['skipped']} skipped" if counts["skipped"] else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "checks": [check.to_dict() for check in self.checks],
            "summary": self.counts(),
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class HttpReply:
    """A server's answer to a GET: the status and the JSON body (a ``str`` when it is not JSON)."""

    status: int
    body: Any

    @property
    def json(self) -> dict[str, Any] | None:
        """The body when it is a JSON object without an error in it; a 200 alone proves nothing (§7)."""
        if 200 <= self.status < 300 and isinstance(self.body, dict) and "error" not in self.body:
            return self.body
        return None


@dataclass(frozen=True)
class ServerProcess:
    """A local model-server process and its environment (None when the OS refused to show it)."""

    pid: int
    name: str
    cmdline: tuple[str, ...]
    environ: Mapping[str, str] | None
    reason: str | None = None  # why ``environ`` is None


@dataclass(frozen=True)
class ServerIdentity:
    """What really answers at an endpoint's URL."""

    kind: str | None  # None: none of the known signatures
    version: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)
    evidence: str = ""


@dataclass(frozen=True)
class DoctorInputs:
    location: ConfigLocation
    config_exists: bool
    config: Config | None
    config_error: str | None
    environ: Mapping[str, str]
    only_endpoint: str | None = None


class DoctorSystem(Protocol):
    """Everything ``run_doctor`` reads from the outside world."""

    def hardware(self) -> Hardware: ...

    def provider(self, endpoint: Endpoint) -> Provider: ...

    def fetch(self, endpoint: Endpoint, path: str) -> HttpReply:
        """GET ``path`` on the endpoint's server root; raises ``ServerUnreachable`` when nothing answers."""
        ...

    def server_processes(self, kind: str) -> list[ServerProcess]:
        """Local processes of that server kind (only "ollama" is looked for)."""
        ...

    def stage_durations(self, pipeline: str) -> dict[str, float]:
        """Seconds per stage run of the pipeline's last saved run ({} when it never ran)."""
        ...

    def size_book(self) -> SizeBook: ...


# -- platform fixes ------------------------------------------------------------------------------------


def launch_agent_label(variable: str) -> str:
    return f"local.ollama.env.{variable}"


def launch_agent_plist(variable: str, value: str) -> str:
    """A LaunchAgent that sets one variable for the user's launchd session at every login."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
        '<plist version="1.0">\n<dict>\n'
        f"  <key>Label</key><string>{launch_agent_label(variable)}</string>\n"
        "  <key>ProgramArguments</key>\n"
        f"  <array><string>/bin/launchctl</string><string>setenv</string><string>{variable}</string>"
        f"<string>{value}</string></array>\n"
        "  <key>RunAtLoad</key><true/>\n"
        "</dict>\n</plist>\n"
    )


def env_fix(os_name: str, variable: str, value: str) -> str:
    """One line: how to give the Ollama server ``variable=value`` so that it survives restarts and upgrades."""
    if os_name == "darwin":
        plist = f"~/Library/LaunchAgents/{launch_agent_label(variable)}.plist"
        return (
            f"run `launchctl setenv {variable} {value}` and, so that it survives reboots and `brew upgrade` "
            f"(which rewrites homebrew.mxcl.ollama.plist), save a LaunchAgent {plist} that runs "
            f"`/bin/launchctl setenv {variable} {value}` at load (RunAtLoad; `sourceprep-models doctor --json` "
            "shows the file); then restart Ollama (quit and reopen the menu-bar app, or "
            "`brew services restart ollama`)"
        )
    if os_name == "linux":
        return (
            f'run `sudo systemctl edit ollama`, add the two lines `[Service]` and `Environment="{variable}={value}"`, '
            f"then `sudo systemctl restart ollama` (started by hand instead? restart it as "
            f"`{variable}={value} ollama serve`)"
        )
    if os_name == "windows":
        return (
            f"run `setx {variable} {value}` (a user environment variable), then quit Ollama from its tray icon "
            "and start it again"
        )
    return f"start `ollama serve` with {variable}={value} in its environment"


def env_fix_details(os_name: str, variable: str, value: str) -> dict[str, Any]:
    """The exact file and commands behind ``env_fix`` (for ``--json``)."""
    setting = {"variable": variable, "value": value}
    if os_name == "darwin":
        return {
            **setting,
            "file": f"~/Library/LaunchAgents/{launch_agent_label(variable)}.plist",
            "file_content": launch_agent_plist(variable, value),
            "commands": [
                f"launchctl setenv {variable} {value}",
                f"launchctl load ~/Library/LaunchAgents/{launch_agent_label(variable)}.plist",
                "brew services restart ollama  # or quit and reopen the Ollama app",
            ],
        }
    if os_name == "linux":
        return {
            **setting,
            "file": "/etc/systemd/system/ollama.service.d/override.conf",
            "file_content": f'[Service]\nEnvironment="{variable}={value}"\n',
            "commands": ["sudo systemctl edit ollama", "sudo systemctl restart ollama"],
        }
    if os_name == "windows":
        return {**setting, "commands": [f"setx {variable} {value}", "quit Ollama from the tray icon and start it"]}
    return setting


# -- config ------------------------------------------------------------------------------------------------


def check_config_found(location: ConfigLocation, exists: bool) -> Check:
    if location.path is None:
        return ok(
            "config.found",
            "no config file: built-in defaults (one Ollama endpoint at $OLLAMA_HOST or 127.0.0.1:11434)",
            layer=location.layer,
            path=None,
        )
    if not exists:
        return problem(
            "config.found",
            f"{location.path} (named by {location.layer}) does not exist",
            f"create it (see models.example.toml) or point {location.layer} at the right file",
            layer=location.layer,
            path=str(location.path),
        )
    return ok("config.found", f"{location.path} (from {location.layer})", layer=location.layer, path=str(location.path))


def check_config_valid(config: Config | None, error: str | None) -> Check:
    if config is None:
        message = error or "the config could not be read"
        reason, sep, fix = message.rpartition("; ")
        return problem("config.valid", reason if sep else message, fix if sep else "fix the config file", error=error)
    return ok(
        "config.valid",
        f"valid: {_count(len(config.endpoints), 'endpoint')}, {_count(len(config.models), 'model')}, "
        f"{_count(len(config.pipelines), 'pipeline')}",
        endpoints=list(config.endpoints),
        models=list(config.models),
        pipelines=list(config.pipelines),
    )


def check_endpoint_source(endpoint: Endpoint, config: Config, environ: Mapping[str, str]) -> Check:
    """Which precedence layer supplied the endpoint, and whether OLLAMA_HOST disagrees with it."""
    from sourceprep_models.config.ollama_host import ollama_base_url

    check_id = f"config.endpoint.{endpoint.name}"
    where = {
        "config": f"from {config.path}" if config.path else "from the config",
        "OLLAMA_HOST": "from $OLLAMA_HOST (no endpoints in the config)",
        "default": "built-in default ($OLLAMA_HOST is not set)",
    }.get(endpoint.source, endpoint.source)
    summary = f"{endpoint.kind} at {endpoint.url}, {where}"
    host = environ.get("OLLAMA_HOST")
    if endpoint.kind == "ollama" and endpoint.source == "config" and host:
        cli_url = ollama_base_url(host)
        if cli_url.rstrip("/") != endpoint.url.rstrip("/"):
            return warning(
                check_id,
                f"{summary}, but $OLLAMA_HOST sends the `ollama` command to {cli_url}: the two talk to different "
                "servers",
                f'make them agree: set url = "{cli_url}" under [endpoints.{endpoint.name}], or change OLLAMA_HOST',
                source=endpoint.source,
                url=endpoint.url,
                ollama_host=cli_url,
            )
    return ok(check_id, summary, source=endpoint.source, url=endpoint.url, kind=endpoint.kind)


# -- hardware -----------------------------------------------------------------------------------------------


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


# -- server detection -----------------------------------------------------------------------------------


Fetch = Callable[[str], HttpReply]


def identify(fetch: Fetch, configured: str) -> ServerIdentity:
    """Which server answers, by replies only that server gives (servers.md §7); the configured kind first.

    Raises ``ServerUnreachable`` (or the first error) when nothing answers at all."""
    probes: dict[str, Callable[[Fetch], ServerIdentity | None]] = {
        "llamaswap": _probe_llamaswap,  # before Ollama: llama-swap mimics Ollama's /api/version and /api/ps
        "ollama": _probe_ollama,
        "lmstudio": _probe_lmstudio,
        "llamacpp": _probe_llamacpp,
        "vllm": _probe_vllm,
        "omlx": _probe_omlx,
    }
    order = ([configured] if configured in probes else []) + [kind for kind in probes if kind != configured]
    answered = False
    refused: list[int] = []

    def guarded(path: str) -> HttpReply:
        nonlocal answered
        try:
            reply = fetch(path)
        except SourceprepError:
            if not answered:
                raise  # refused or stuck on the first request: the next probes would fare no better
            return HttpReply(599, None)  # one route failing only rules that server out
        answered = True
        if reply.status in (401, 403):
            refused.append(reply.status)
        return reply

    for kind in order:
        found = probes[kind](guarded)
        if found is not None:
            return found
    if refused:
        return ServerIdentity(
            None, facts={"refused": refused[0]}, evidence=f"it refused requests with HTTP {refused[0]}"
        )
    return ServerIdentity(None, evidence="none of the known servers' replies")


def _probe_ollama(fetch: Fetch) -> ServerIdentity | None:
    root = fetch("/")
    if root.status != 200 or not isinstance(root.body, str) or "Ollama is running" not in root.body:
        return None
    body = fetch("/api/version").json
    version = body.get("version") if body else None
    return ServerIdentity("ollama", version if isinstance(version, str) else None, {}, "GET / says 'Ollama is running'")


def _probe_lmstudio(fetch: Fetch) -> ServerIdentity | None:
    greeting = fetch("/lmstudio-greeting").json
    evidence = "GET /lmstudio-greeting"
    v1 = fetch("/api/v1/models").json
    if isinstance(v1, dict) and isinstance(v1.get("models"), list):
        return ServerIdentity(
            "lmstudio", "0.4.0 or later (REST v1)", {"api": "v1"}, evidence if greeting else "REST v1"
        )
    v0 = fetch("/api/v0/models").json
    if (greeting and greeting.get("lmstudio") is True) or (isinstance(v0, dict) and isinstance(v0.get("data"), list)):
        return ServerIdentity("lmstudio", "older than 0.4.0 (REST v0 only)", {"api": "v0"}, evidence)
    return None


def _probe_llamacpp(fetch: Fetch) -> ServerIdentity | None:
    props = fetch("/props").json
    if not props or not (props.get("role") == "router" or "default_generation_settings" in props):
        return None
    router = props.get("role") == "router"
    limit = props.get("max_instances")
    facts = {
        "role": "router" if router else "single-model",
        "max_models": limit if router and isinstance(limit, int) and limit > 0 else None,
        "model_path": props.get("model_path") if not router else None,
    }
    build = props.get("build_info")
    return ServerIdentity("llamacpp", build if isinstance(build, str) else None, facts, "GET /props")


def _probe_llamaswap(fetch: Fetch) -> ServerIdentity | None:
    running = fetch("/running").json
    if not running or not isinstance(running.get("running"), list):
        return None
    body = fetch("/api/version").json
    version = body.get("version") if body else None
    return ServerIdentity("llamaswap", version if isinstance(version, str) else None, {}, "GET /running")


def _probe_vllm(fetch: Fetch) -> ServerIdentity | None:
    models = fetch("/v1/models").json
    cards = models.get("data") if models else None
    if not isinstance(cards, list) or not any(isinstance(c, dict) and c.get("owned_by") == "vllm" for c in cards):
        return None
    body = fetch("/version").json
    version = body.get("version") if body else None
    sleeping = fetch("/is_sleeping")
    dev_mode = isinstance(sleeping.json, dict) and isinstance(sleeping.json.get("is_sleeping"), bool)
    sleep_mode: bool | None = None
    if dev_mode:
        info = fetch("/server_info?config_format=json").json
        config = info.get("vllm_config") if info else None
        model_config = config.get("model_config") if isinstance(config, dict) else None
        flag = model_config.get("enable_sleep_mode") if isinstance(model_config, dict) else None
        sleep_mode = flag if isinstance(flag, bool) else None
    facts = {"dev_mode": dev_mode, "sleep_mode": sleep_mode}
    return ServerIdentity("vllm", version if isinstance(version, str) else None, facts, "model cards owned by vllm")


def _probe_omlx(fetch: Fetch) -> ServerIdentity | None:
    status = fetch("/v1/models/status").json
    pool_keys = ("final_ceiling", "max_model_memory", "loaded_count", "model_count")
    if not status or not isinstance(status.get("models"), list) or not any(key in status for key in pool_keys):
        return None
    return ServerIdentity("omlx", None, {}, "GET /v1/models/status")


def check_reachable(endpoint: Endpoint, error: SourceprepError | None) -> Check:
    check_id = f"endpoint.{endpoint.name}.reachable"
    if error is None:
        return ok(check_id, f"answers at {endpoint.url}")
    details = {"exit_code": int(error.exit_code)}
    if isinstance(error, ServerUnreachable) and "; " in error.message:
        reason, fix = error.message.split("; ", 1)
        return problem(check_id, reason, fix, **details)
    # It answered something, or nothing in time: the server itself is in trouble.
    return problem(check_id, error.message, "check the server's log and restart it", **details)


def check_server(endpoint: Endpoint, identity: ServerIdentity) -> Check:
    check_id = f"endpoint.{endpoint.name}.server"
    details = {"detected": identity.kind, "version": identity.version, **identity.facts, "evidence": identity.evidence}
    configured = LABELS.get(endpoint.kind, endpoint.kind)
    if identity.kind is None:
        if endpoint.kind == "openai":
            return ok(check_id, "an OpenAI-compatible server", **details)
        if identity.facts.get("refused"):
            fix = (
                f"set api_key_env under [endpoints.{endpoint.name}] to the name of the environment variable that "
                "holds its API key" + (" (and check that variable)" if endpoint.api_key_env else "")
            )
        else:
            fix = f"check endpoints.{endpoint.name}.url; {START_HINTS.get(endpoint.kind, 'start the server')}"
        return warning(
            check_id,
            f"something answers at {endpoint.url} but it does not look like {configured} ({identity.evidence})",
            fix,
            **details,
        )
    found = LABELS[identity.kind]
    version = f" {identity.version}" if identity.version else ""
    if identity.kind == endpoint.kind:
        return ok(check_id, f"{found}{version} ({identity.evidence})", **details)
    if endpoint.kind == "openai":
        return warning(
            check_id,
            f"endpoint {endpoint.name!r} is kind openai but the server is {found}{version}: its models cannot be "
            "loaded, unloaded or pinned that way",
            f'set kind = "{identity.kind}" under [endpoints.{endpoint.name}]',
            **details,
        )
    port = DEFAULT_PORTS.get(endpoint.kind)
    elsewhere = f" (its default port is {port})" if port else ""
    if endpoint.source == "config":
        fix = (
            f'set kind = "{identity.kind}" under [endpoints.{endpoint.name}], or point its url at the {configured} '
            f"server{elsewhere}"
        )
    else:
        fix = (
            f"point OLLAMA_HOST at the Ollama server{elsewhere}, or add [endpoints.{endpoint.name}] with "
            f'kind = "{identity.kind}" and url = "{endpoint.url}" to the config'
        )
    return problem(
        check_id,
        f"the server at {endpoint.url} is {found}{version}, not {configured} as endpoint {endpoint.name!r} says",
        fix,
        **details,
    )


def _version_tuple(version: str | None) -> tuple[int, ...] | None:
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version or "")
    return tuple(int(part) for part in match.groups()) if match else None


def check_supports(endpoint: Endpoint, identity: ServerIdentity, uses: EndpointUses) -> Check | None:
    """Whether this server (and version) can do what the config asks of it."""
    check_id = f"endpoint.{endpoint.name}.supports"
    kind, facts = identity.kind, identity.facts
    if kind != endpoint.kind:
        return None
    if kind == "ollama":
        parsed = _version_tuple(identity.version)
        if parsed is not None and (0, 0, 0) < parsed < (0, 10, 0):  # 0.0.0 is a build from source
            return warning(
                check_id,
                f"Ollama {identity.version} does not report loaded context lengths (added in 0.10.0), so context "
                "problems go unseen",
                "upgrade Ollama",
                version=identity.version,
            )
        return ok(check_id, "loads, unloads and pins over HTTP; reports memory and context", version=identity.version)
    if kind == "lmstudio":
        if facts.get("api") == "v1":
            return ok(check_id, "loads and unloads over HTTP (REST v1)")
        summary = "LM Studio older than 0.4.0 cannot load or unload models over HTTP"
        fix = "upgrade LM Studio to 0.4.0 or later (until then load models with `lms load MODEL`)"
        if uses.models:
            return problem(check_id, f"{summary}, and the config has {', '.join(uses.models)} on it", fix)
        return warning(check_id, summary, fix)
    if kind == "llamacpp":
        if facts.get("role") == "router":
            limit = facts.get("max_models")
            return ok(
                check_id, "router mode: loads and unloads over HTTP" + (f", at most {limit} models" if limit else "")
            )
        served = facts.get("served")
        others = [name for name in uses.models if name != served]
        summary = "single-model llama-server (started with -m): it cannot load or unload models"
        fix = (
            "restart llama-server in router mode: without -m, with --models-dir DIR holding the GGUF files "
            "(and --models-max N)"
        )
        if others:
            return problem(check_id, f"{summary}; it serves only {served}, not {', '.join(others)}", fix, served=served)
        return warning(check_id, f"{summary}; it serves {served}", fix, served=served)
    if kind == "vllm":
        if facts.get("dev_mode") and facts.get("sleep_mode") is not False:
            return ok(check_id, "sleep mode: unload parks the model, load wakes it")
        missing = (
            "its sleep routes are off (VLLM_SERVER_DEV_MODE=1 is not set)"
            if not facts.get("dev_mode")
            else "it was started without --enable-sleep-mode, so a sleep frees nothing"
        )
        summary = f"vLLM cannot put its model to sleep: {missing}"
        fix = (
            'restart it as `VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --enable-sleep-mode`, or set kind = "openai" '
            f"under [endpoints.{endpoint.name}] if it should never be unloaded"
        )
        if uses.shares_pipeline:
            return problem(
                check_id, f"{summary}; pipeline {uses.shares_pipeline!r} swaps between it and other servers", fix
            )
        return warning(check_id, summary, fix)
    return ok(check_id, f"{LABELS.get(kind or '', kind)} can load and unload over HTTP")


@dataclass(frozen=True)
class EndpointUses:
    """What the config asks of one endpoint."""

    models: tuple[str, ...] = ()  # server names of the configured models and pipeline stages on it
    shares_pipeline: str | None = None  # a pipeline that also uses another memory-holding endpoint


# -- models ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sized:
    name: str
    identity: str
    bytes: int
    pinned: bool = False


_SUGGESTION = re.compile(r"did you mean (['\"])(.+?)\1\?")
GET_HINTS = {
    "ollama": "pull it with `ollama pull {name}`",
    "lmstudio": "download it with `lms get {name}`",
    "llamacpp": "put its GGUF in the router's --models-dir",
    "llamaswap": "add it to llama-swap's config.yaml",
    "vllm": "serve it with its own vLLM endpoint",
    "omlx": "put it in oMLX's model directory",
}


def check_present(
    key: str, name: str, endpoint: Endpoint, error: SourceprepError | None, *, configured: bool = True
) -> Check:
    """``configured`` False: a raw model name that a pipeline stage uses, with no models.<key> table."""
    check_id = f"model.{key}.present"
    where = f"endpoint {endpoint.name!r}"
    details = {"endpoint": endpoint.name, "name": name}
    if error is None:
        return ok(check_id, f"{name} is on {where}", **details)
    if not isinstance(error, ModelNotFound):
        return problem(
            check_id, f"could not look up {name} on {where}: {error.message}", "fix the endpoint first", **details
        )
    reason = error.message.split("; ", 1)[0]
    get = GET_HINTS.get(endpoint.kind, "put it on the server").format(name=name)
    match = _SUGGESTION.search(error.message)
    if match:
        suggestion = match.group(2)
        rename = f"under [models.{key}]" if configured else f"in the pipeline stages that use {name}"
        what = "name" if configured else "model"
        fix = f'did you mean {suggestion!r}? set {what} = "{suggestion}" {rename}; or {get}'
        return problem(check_id, reason, fix, suggestion=suggestion, **details)
    tail = error.message.split("; ", 1)[1] if "; " in error.message else ""
    return problem(check_id, reason, tail or f"{get}, or fix its name in the config", **details)


def _beside_pins(name: str, allow_evict_pinned: bool) -> str:
    """What `load` does with a model that fits only if a pin leaves (planner rule 5)."""
    if allow_evict_pinned:
        return f"loading {name} evicts a pin (reloaded afterwards)"
    return f"`load {name}` is refused (exit 6) while the pins are loaded"


def _unpin_fix(names: str, allow_evict_pinned: bool) -> str:
    tail = "" if allow_evict_pinned else ", or set memory.allow_evict_pinned = true (pins come back afterwards)"
    return f"unpin one of {names}{tail}"


def check_fits(
    key: str,
    model: Sized,
    source: str,
    context: int,
    budget: Budget,
    pins: list[Sized],
    allow_evict_pinned: bool = False,
) -> Check:
    """Predicted size against the budget, alone and beside the endpoint's pins."""
    check_id = f"model.{key}.fits"
    details = {
        "predicted": model.bytes,
        "prediction_source": source,
        "context_length": context,
        "budget": budget.bytes,
    }
    predicted = f"{human_bytes(model.bytes)} ({source}, context {context})"
    if model.bytes > budget.bytes:
        return problem(
            check_id,
            f"{model.name} needs {predicted}, more than the {human_bytes(budget.bytes)} budget: it can never be "
            "fully resident",
            f"give models.{key} a smaller context_length or quantization, or raise memory.budget if the machine "
            "has more",
            **details,
        )
    others = [pin for pin in pins if pin.identity != model.identity]
    pinned = sum(pin.bytes for pin in others)
    if not model.pinned and others and model.bytes + pinned > budget.bytes:
        names = ", ".join(pin.name for pin in others)
        return warning(
            check_id,
            f"{model.name} ({human_bytes(model.bytes)}) does not fit beside the pinned {names} "
            f"({human_bytes(pinned)}) in {human_bytes(budget.bytes)}: {_beside_pins(key, allow_evict_pinned)}",
            f"give models.{key} a smaller context_length, raise memory.budget, or "
            + _unpin_fix(names, allow_evict_pinned),
            pinned=pinned,
            **details,
        )
    return ok(check_id, f"{model.name} needs {predicted} of {human_bytes(budget.bytes)}", **details)


def check_pins(
    endpoint: Endpoint, pins: list[Sized], largest: Sized | None, budget: Budget, allow_evict_pinned: bool = False
) -> Check | None:
    """The pins together, and the pins beside the largest model that is not pinned."""
    if not pins:
        return None
    check_id = f"pins.{endpoint.name}.fit"
    total = sum(pin.bytes for pin in pins)
    names = ", ".join(pin.name for pin in pins)
    details = {"pins": [pin.name for pin in pins], "pinned_bytes": total, "budget": budget.bytes}
    if total > budget.bytes:
        return problem(
            check_id,
            f"the pins on {endpoint.name} ({names}) need {human_bytes(total)} together, more than the "
            f"{human_bytes(budget.bytes)} budget: they evict each other",
            "unpin one (`always_available = false`), or give them smaller context lengths",
            **details,
        )
    if largest is not None and total + largest.bytes > budget.bytes:
        return warning(
            check_id,
            f"the pinned {names} ({human_bytes(total)}) beside {largest.name} ({human_bytes(largest.bytes)}) need "
            f"{human_bytes(total + largest.bytes)}, more than the {human_bytes(budget.bytes)} budget: "
            f"{_beside_pins(largest.name, allow_evict_pinned)}",
            f"use a smaller {largest.name} (or context), raise memory.budget, or "
            + _unpin_fix(names, allow_evict_pinned),
            largest=largest.name,
            largest_bytes=largest.bytes,
            **details,
        )
    room = budget.bytes - total
    return ok(check_id, f"the pins ({names}) take {human_bytes(total)}, leaving {human_bytes(room)}", **details)


def check_lmstudio_context(key: str, spec: ModelSpec | None, name: str, info: ModelInfo | None) -> Check | None:
    """LM Studio loads at its own default context (4096 unless changed) when no context is asked for (§1.3)."""
    if spec is not None and spec.runner_options().get("num_ctx") is not None:
        return None
    trained = info.trained_context if info else None
    suggestion = min(trained, 32768) if trained else 32768
    where = f"under [models.{key}]" if spec is not None else f"in a [models.{key}] table for it"
    return warning(
        f"model.{key}.context",
        f"no context_length for {name}: LM Studio loads it at its default ({SMALL_DEFAULT_CONTEXT} unless changed), "
        "too short for long prompts",
        f"set context_length = {suggestion} {where} (what your prompts need, up to {trained or 'its maximum'})",
        trained_context=trained,
    )


# -- what is loaded -----------------------------------------------------------------------------------------


def check_offload(endpoint: Endpoint, model: LoadedModel, spec: ModelSpec | None) -> Check | None:
    """``size_vram < size``: part of the model runs on the CPU (ollama.md §2.4), several times slower."""
    if not model.size or model.size_vram is None:
        return None
    check_id = f"loaded.{endpoint.name}.{model.name}.offload"
    gpu = percent(model.size_vram, model.size)
    details = {"size": model.size, "size_vram": model.size_vram, "gpu_percent": gpu}
    if model.size_vram >= model.size:
        return ok(check_id, f"{model.name} runs 100% on the GPU", **details)
    if model.size_vram == 0:
        where = f"{model.name} runs 100% on the CPU"
    else:
        where = f"{model.name} runs {100 - gpu}% on the CPU ({gpu}% GPU): partly offloaded"
    if spec is not None and "num_gpu" in spec.options and spec.options.get("num_gpu") != -1:
        return warning(check_id, f"{where}, as its num_gpu option asks", "remove num_gpu from its options", **details)
    name = spec.key if spec is not None else model.name
    return problem(
        check_id,
        f"{where}, much slower than fully on the GPU",
        f"free GPU memory (unload other models) or give {name} a smaller context_length, then reload it: "
        f"`sourceprep-models unload {name}` and `sourceprep-models load {name}`",
        **details,
    )


def check_loaded_context(endpoint: Endpoint, model: LoadedModel, spec: ModelSpec | None) -> Check | None:
    """The context the server really loaded against the one the config asks for."""
    wanted = spec.runner_options().get("num_ctx") if spec is not None else None
    if model.context_length is None:
        return None
    check_id = f"loaded.{endpoint.name}.{model.name}.context"
    details = {"loaded": model.context_length, "wanted": wanted}
    if spec is None or not isinstance(wanted, int):
        if endpoint.kind == "lmstudio" and model.context_length <= SMALL_DEFAULT_CONTEXT:
            return warning(
                check_id,
                f"{model.name} is loaded with a {model.context_length}-token context (LM Studio's default), too "
                "short for long prompts",
                f"configure it with a context_length and reload it (`sourceprep-models load {model.name}`)",
                **details,
            )
        return ok(check_id, f"{model.name} loaded with a {model.context_length}-token context", **details)
    key = spec.key
    if model.context_length < wanted:
        if endpoint.kind == "llamacpp":
            fix = f"restart llama-server with --ctx-size {wanted} (or ctx-size = {wanted} in its preset for it)"
        elif endpoint.kind == "vllm":
            fix = f"restart vLLM with --max-model-len {wanted}"
        elif endpoint.kind == "llamaswap":
            fix = f"raise --ctx-size to {wanted} in its cmd in llama-swap's config.yaml"
        else:
            fix = f"reload it with the configured context: `sourceprep-models load {key}`"
        return problem(
            check_id,
            f"{model.name} is loaded with a {model.context_length}-token context, less than the {wanted} models.{key} "
            "asks for",
            fix,
            **details,
        )
    if model.context_length > wanted and endpoint.kind == "ollama":
        # A different num_ctx is a reload on the first request from this config (ollama.md §4.7).
        return warning(
            check_id,
            f"{model.name} is loaded with a {model.context_length}-token context, not the {wanted} models.{key} "
            "asks for: the next request from this config reloads it",
            f"reload it with the configured context now: `sourceprep-models load {key}`",
            **details,
        )
    return ok(check_id, f"{model.name} loaded with a {model.context_length}-token context", **details)


def check_pin_kept(spec: ModelSpec, state: str, model: LoadedModel | None, now: datetime) -> Check:
    check_id = f"pin.{spec.key}.kept"
    if state == "missing":
        return problem(
            check_id,
            f"pinned {spec.name} is not loaded on {spec.endpoint}",
            f"`sourceprep-models status` reloads lost pins (or `sourceprep-models load {spec.key}`); if it keeps "
            "disappearing, check the server's model limit and memory",
            state=state,
        )
    if state == "expiring" and model is not None and model.expires_at is not None:
        left = format_seconds(max(0.0, (model.expires_at - now).total_seconds()))
        return problem(
            check_id,
            f"pinned {spec.name} lost its keep_alive: it unloads in {left} (another client sent a finite keep_alive)",
            "find the client that sends keep_alive for it (e.g. a UI's per-model setting) and remove it; "
            "`sourceprep-models status` pins it again",
            state=state,
            expires_at=model.expires_at.isoformat(),
        )
    return ok(check_id, f"pinned {spec.name} is loaded and kept", state="kept")


# -- server settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerEnv:
    """The Ollama server's environment as far as it could be read."""

    values: Mapping[str, str]
    read: bool  # False: inferred (defaults and /api/ps)
    note: str


def is_local(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1", "0.0.0.0", "::") or host.startswith("127.")


def _port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def read_server_env(endpoint: Endpoint, processes: list[ServerProcess]) -> ServerEnv:
    """The environment of the ``ollama serve`` behind this endpoint, or why it is inferred instead."""
    from sourceprep_models.config.ollama_host import ollama_base_url

    if not is_local(endpoint.url):
        return ServerEnv({}, False, "inferred: the server runs on another machine")
    if not processes:
        return ServerEnv({}, False, "inferred: no local `ollama serve` process found")
    port = _port_of(endpoint.url)
    readable = [proc for proc in processes if proc.environ is not None]
    for proc in readable:
        assert proc.environ is not None
        bind = ollama_base_url(proc.environ.get("OLLAMA_HOST"))
        if _port_of(bind) == port:
            return ServerEnv(dict(proc.environ), True, f"read from `ollama serve` (pid {proc.pid})")
    unreadable = [proc for proc in processes if proc.environ is None]
    if len(processes) == 1 and unreadable:
        proc = unreadable[0]
        return ServerEnv(
            {}, False, f"inferred: the environment of `ollama serve` (pid {proc.pid}) is not readable ({proc.reason})"
        )
    return ServerEnv({}, False, f"inferred: no local `ollama serve` process listens on port {port}")


@dataclass(frozen=True)
class Need:
    """How many models the config wants resident together on one endpoint, and which."""

    count: int
    models: tuple[str, ...]
    bytes: int
    reason: str


def co_resident_need(pins: list[Sized], groups: Mapping[str, list[Sized]], budget: int) -> Need | None:
    """The most models any use of the endpoint keeps together, as far as they fit the budget.

    ``groups`` maps a reason ("pipeline 'rag'") to the models that use needs; the pins always stay."""
    best: Need | None = None
    for reason, models in groups.items():
        chosen = list(pins)
        total = sum(pin.bytes for pin in pins)
        seen = {pin.identity for pin in pins}
        for model in sorted(models, key=lambda m: m.bytes):
            if model.identity in seen:
                continue
            seen.add(model.identity)
            if total + model.bytes <= budget:
                chosen.append(model)
                total += model.bytes
        need = Need(len(chosen), tuple(m.name for m in chosen), total, reason)
        if best is None or need.count > best.count:
            best = need
    return best


def _env_int(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


def check_max_loaded(
    endpoint: Endpoint,
    os_name: str,
    env: ServerEnv,
    need: Need | None,
    gpu_count: int,
    seen: tuple[int, str] | None = None,
) -> Check:
    """OLLAMA_MAX_LOADED_MODELS against what the config keeps together (ollama.md §4.3, §4.10).

    ``seen``: when the environment is not readable, a limit /api/ps suggests (count, why)."""
    check_id = f"server.{endpoint.name}.max_loaded_models"
    auto = 3 * max(1, gpu_count)  # 0 = automatic: 3 x GPUs, at least 3
    configured = _env_int(env.values.get("OLLAMA_MAX_LOADED_MODELS"))
    if env.read and configured:
        limit, how = configured, f"OLLAMA_MAX_LOADED_MODELS={configured}, {env.note}"
    elif env.read:
        limit, how = auto, f"OLLAMA_MAX_LOADED_MODELS unset: 3 x GPUs, at least 3; {env.note}"
    elif seen is not None:
        limit, how = seen[0], f"probably: {seen[1]}; {env.note}"
    else:
        limit, how = auto, f"Ollama's default, 3 x GPUs, at least 3; {env.note}"
    details: dict[str, Any] = {
        "limit": limit,
        "read": env.read,
        "source": env.note,
        "needed": need.count if need else None,
    }
    if need is None or need.count <= limit:
        together = f"; the config keeps at most {need.count} together" if need else ""
        return ok(check_id, f"at most {limit} models loaded ({how}){together}", **details)
    value = str(need.count)
    summary = (
        f"{need.reason} keeps {need.count} models together ({', '.join(need.models)}: {human_bytes(need.bytes)}, "
        f"they fit) but Ollama keeps at most {limit} ({how}): the rest swap"
    )
    fix = env_fix(os_name, "OLLAMA_MAX_LOADED_MODELS", value)
    details.update(fix_details=env_fix_details(os_name, "OLLAMA_MAX_LOADED_MODELS", value), models=list(need.models))
    if env.read or seen is not None:
        return problem(check_id, summary, fix, **details)
    # Only Ollama's default is known: the real setting may already be high enough.
    return warning(check_id, summary, f"make sure OLLAMA_MAX_LOADED_MODELS is at least {value}: {fix}", **details)


def check_models_max(endpoint: Endpoint, limit: int | None, need: Need | None) -> Check:
    """llama-server's --models-max (servers.md §2.1): the same question as Ollama's model limit."""
    check_id = f"server.{endpoint.name}.max_loaded_models"
    if limit is None:
        return ok(check_id, "no limit on loaded models (--models-max 0)")
    details = {"limit": limit, "needed": need.count if need else None}
    if need is None or need.count <= limit:
        return ok(check_id, f"--models-max {limit}", **details)
    return problem(
        check_id,
        f"{need.reason} keeps {need.count} models together ({', '.join(need.models)}: {human_bytes(need.bytes)}, "
        f"they fit) but llama-server runs at most {limit} (--models-max): the rest swap",
        f"restart llama-server with --models-max {need.count}",
        models=list(need.models),
        **details,
    )


@dataclass(frozen=True)
class Reuse:
    """A model a pipeline uses again after other stages, and the longest idle gap between its uses."""

    pipeline: str
    model: str
    key: str
    gap_s: float | None  # None: the stages in between have no timings yet (the pipeline never ran)


def reuse_gaps(pipeline: str, runs: list[tuple[str, str, str]], durations: Mapping[str, float]) -> list[Reuse]:
    """Models used again after other stages ran, from (stage id, model name, key) in run order; a gap is
    the time the stages in between took in the pipeline's last run."""
    last: dict[str, int] = {}
    gaps: dict[str, list[float | None]] = {}
    keys: dict[str, str] = {}
    for index, (_stage, model, key) in enumerate(runs):
        keys[model] = key
        if model in last and last[model] < index - 1:
            between = [durations.get(runs[i][0]) for i in range(last[model] + 1, index)]
            known = [value for value in between if value is not None]
            gaps.setdefault(model, []).append(sum(known) if len(known) == len(between) else None)
        last[model] = index
    result = []
    for model, values in gaps.items():
        known = [value for value in values if value is not None]
        result.append(Reuse(pipeline, model, keys[model], max(known) if known else None))
    return result


def _keep_alive_seconds(raw: str | None) -> float | None:
    """OLLAMA_KEEP_ALIVE: a Go duration or whole seconds, negative = forever (None) (ollama.md §3.1)."""
    if raw is None or not raw.strip():
        return 300.0
    try:
        return parse_keep_alive(raw.strip()).seconds
    except ValueError:
        return 300.0  # the server falls back to its default too


def check_keep_alive(
    endpoint: Endpoint, os_name: str, env: ServerEnv, reuses: list[Reuse], relying: list[tuple[str, str]]
) -> Check:
    """OLLAMA_KEEP_ALIVE against the idle gaps of models the pipelines use again (ollama.md §3.2, §3.3).

    ``relying``: (key, name) of the configured models that set no keep_alive of their own."""
    check_id = f"server.{endpoint.name}.keep_alive"
    raw = env.values.get("OLLAMA_KEEP_ALIVE") if env.read else None
    seconds = _keep_alive_seconds(raw)
    shown = "forever" if seconds is None else format_seconds(seconds)
    if raw:
        how = f"OLLAMA_KEEP_ALIVE={raw}, {env.note}"
    else:
        how = f"OLLAMA_KEEP_ALIVE unset, {env.note}" if env.read else f"Ollama's default, {env.note}"
    details: dict[str, Any] = {"keep_alive_s": seconds, "read": env.read, "source": env.note}
    if seconds is None:
        return ok(check_id, f"models stay loaded forever ({how})", **details)
    if seconds == 0 and relying:
        key = relying[0][0]
        value = "30m"
        details.update(
            models=[name for _key, name in relying], fix_details=env_fix_details(os_name, "OLLAMA_KEEP_ALIVE", value)
        )
        return warning(
            check_id,
            f"idle models unload at once ({how}): {', '.join(name for _k, name in relying)} set no keep_alive, so "
            "a preload does not stay and every use reloads",
            f'set keep_alive = "{value}" under [models.{key}] (and the others), or '
            f"{env_fix(os_name, 'OLLAMA_KEEP_ALIVE', value)}",
            **details,
        )
    short = [reuse for reuse in reuses if reuse.gap_s is not None and reuse.gap_s > seconds]
    if not short:
        unknown = sorted({reuse.model for reuse in reuses if reuse.gap_s is None})
        tail = (
            f"; how long {', '.join(unknown)} waits between its stages is known once its pipeline has run"
            if unknown
            else ""
        )
        return ok(check_id, f"idle models unload after {shown} ({how}){tail}", **details)
    worst = max(short, key=lambda reuse: reuse.gap_s or 0.0)
    gap = worst.gap_s or 0.0
    value = _go_duration(max(600.0, gap * 1.5))
    details.update(
        models=sorted({reuse.model for reuse in short}),
        gap_s=gap,
        fix_details=env_fix_details(os_name, "OLLAMA_KEEP_ALIVE", value),
    )
    return warning(
        check_id,
        f"pipeline {worst.pipeline!r} uses {worst.model} again after {format_seconds(gap)} of other stages, but "
        f"idle models unload after {shown} ({how}): it is reloaded every time",
        f'set keep_alive = "{value}" under [models.{worst.key}], or {env_fix(os_name, "OLLAMA_KEEP_ALIVE", value)}',
        **details,
    )


def _go_duration(seconds: float) -> str:
    minutes = max(1, int(-(-seconds // 60)))
    return f"{minutes // 60}h{minutes % 60}m" if minutes >= 60 else f"{minutes}m"


def check_num_parallel(endpoint: Endpoint, os_name: str, env: ServerEnv) -> Check:
    """OLLAMA_NUM_PARALLEL > 1 multiplies every model's KV cache (ollama.md §4.8)."""
    check_id = f"server.{endpoint.name}.num_parallel"
    raw = env.values.get("OLLAMA_NUM_PARALLEL") if env.read else None
    parallel = _env_int(raw) or 1
    details = {"num_parallel": parallel, "read": env.read, "source": env.note}
    if parallel <= 1:
        if raw:
            how = f"OLLAMA_NUM_PARALLEL={raw}, {env.note}"
        else:
            how = f"OLLAMA_NUM_PARALLEL unset, {env.note}" if env.read else f"Ollama's default, {env.note}"
        return ok(check_id, f"one request slot per model ({how})", **details)
    return warning(
        check_id,
        f"OLLAMA_NUM_PARALLEL={parallel} ({env.note}) gives every model {parallel} request slots, so its KV cache "
        f"is {parallel} times larger than these predictions and fewer models fit together",
        f"unless parallel requests matter more than residency, {env_fix(os_name, 'OLLAMA_NUM_PARALLEL', '1')}",
        fix_details=env_fix_details(os_name, "OLLAMA_NUM_PARALLEL", "1"),
        **details,
    )


# -- the whole run ------------------------------------------------------------------------------------------


def run_doctor(inputs: DoctorInputs, system: DoctorSystem, *, now: datetime | None = None) -> DoctorReport:
    """Every check, in order: config, hardware, then each endpoint with its models and settings."""
    from sourceprep_models.memory.sizing import memory_budget

    report = DoctorReport()
    checks = report.checks
    checks.append(check_config_found(inputs.location, inputs.config_exists))
    checks.append(check_config_valid(inputs.config, inputs.config_error))
    hardware = system.hardware()
    checks.append(check_memory(hardware))
    checks.append(check_gpu(hardware))
    config = inputs.config
    if config is None:
        checks.append(skipped("endpoints", "endpoint and model checks need a valid config"))
        return report
    budget = memory_budget(config.memory, hardware.to_dict())
    checks.append(check_budget(budget, config.memory.headroom_bytes))
    apple_at = len(checks)
    names = [inputs.only_endpoint] if inputs.only_endpoint else list(config.endpoints)
    targets = [config.endpoints[name] for name in names]
    for endpoint in targets:
        checks.append(check_endpoint_source(endpoint, config, inputs.environ))
    plans = _pipeline_targets(config, checks)
    demand: tuple[str, int] | None = None
    for endpoint in targets:
        run = _EndpointRun(endpoint, config, hardware, budget, plans, system, now or datetime.now(UTC), checks)
        try:
            found = run.checks()
        except Exception as exc:  # a bug in one check must not hide the other endpoints
            checks.append(
                problem(
                    f"endpoint.{endpoint.name}.doctor",
                    f"doctor could not finish the checks of endpoint {endpoint.name!r}: {type(exc).__name__}: {exc}",
                    "report this as a bug; the other endpoints were checked",
                )
            )
            found = None
        if found is not None and (demand is None or found[1] > demand[1]):
            demand = found
    apple = check_apple_gpu(hardware, demand, config.memory.headroom_bytes)
    if apple is not None:
        checks.insert(apple_at, apple)
    return report


@dataclass(frozen=True)
class _Target:
    """A model the config asks for on an endpoint: a models.<key>, or a raw name a pipeline stage uses."""

    key: str
    name: str
    spec: ModelSpec | None


# Per pipeline: (stage run id, target, endpoint name) in run order.
_Plans = Mapping[str, list[tuple[str, _Target, str]]]


def _pipeline_targets(config: Config, checks: list[Check]) -> dict[str, list[tuple[str, _Target, str]]]:
    from sourceprep_models.pipeline.stages import expand, resolve_target

    plans: dict[str, list[tuple[str, _Target, str]]] = {}
    for name, pipeline in config.pipelines.items():
        rows = []
        try:
            for run in expand(pipeline):
                target = resolve_target(config, run.stage.model)
                key = target.spec.key if target.spec else target.name
                rows.append((run.id, _Target(key, target.name, target.spec), target.endpoint.name))
        except SourceprepError as exc:
            checks.append(
                problem(f"pipeline.{name}.models", exc.message, "name each stage's model by its models.<key>")
            )
            continue
        plans[name] = rows
    return plans


@dataclass
class _ModelFacts:
    target: _Target
    error: SourceprepError | None = None
    info: ModelInfo | None = None
    sized: Sized | None = None
    source: str = ""
    context: int = 0
    size_unknown: str | None = None


@dataclass
class _EndpointRun:
    """The checks of one endpoint: reachability and identity, its models, what is loaded, its settings."""

    endpoint: Endpoint
    config: Config
    hardware: Hardware
    budget: Budget
    plans: _Plans
    system: DoctorSystem
    now: datetime
    out: list[Check]

    def checks(self) -> tuple[str, int] | None:
        """Adds the checks; returns what this endpoint keeps resident together (for the Apple GPU check)."""
        endpoint = self.endpoint
        targets = self._targets()
        provider: Provider | None = None
        try:
            if endpoint.kind == "openai" and not is_local(endpoint.url):
                identity = ServerIdentity("openai", evidence="a remote API")
                provider = self.system.provider(endpoint)
                provider.list_available()  # reachable, and the key is accepted
            else:
                identity = identify(lambda path: self.system.fetch(endpoint, path), endpoint.kind)
        except SourceprepError as exc:
            if provider is not None:
                provider.close()
            self.out.append(check_reachable(endpoint, exc))
            self.out.append(
                skipped(f"endpoint.{endpoint.name}.models", "model and setting checks skipped: unreachable")
            )
            return None
        self.out.append(check_reachable(endpoint, None))
        self.out.append(check_server(endpoint, identity))
        if identity.kind is not None and identity.kind != endpoint.kind:
            if provider is not None:
                provider.close()
            self.out.append(
                skipped(f"endpoint.{endpoint.name}.models", "model and setting checks skipped: another server answers")
            )
            return None
        provider = provider or self.system.provider(endpoint)
        try:
            return self._with_provider(provider, identity, targets)
        finally:
            provider.close()

    def _targets(self) -> list[_Target]:
        """The configured models on the endpoint, then the raw model names its pipeline stages use."""
        name = self.endpoint.name
        targets = [_Target(spec.key, spec.name, spec) for spec in self.config.models.values() if spec.endpoint == name]
        keys = {target.key for target in targets}
        for rows in self.plans.values():
            for _stage, target, where in rows:
                if where == name and target.key not in keys:
                    keys.add(target.key)
                    targets.append(target)
        return targets

    def _shared_pipeline(self) -> str | None:
        """A pipeline that uses this endpoint and another one that holds memory (a swap between servers)."""
        holding = {name for name, ep in self.config.endpoints.items() if ep.kind != "openai"}
        for pipeline, rows in self.plans.items():
            used = {where for _stage, _target, where in rows}
            if self.endpoint.name in used and len(used & holding) > 1:
                return pipeline
        return None

    def _with_provider(
        self, provider: Provider, identity: ServerIdentity, targets: list[_Target]
    ) -> tuple[str, int] | None:
        from sourceprep_models.swap.residency import session_for

        endpoint = self.endpoint
        session = session_for(self.config, provider, self.hardware.to_dict(), self.system.size_book())
        router = identity.kind == "llamacpp" and identity.facts.get("role") == "router"
        if identity.kind == "llamacpp" and not router:
            with contextlib.suppress(SourceprepError, IndexError):
                identity = ServerIdentity(
                    identity.kind, identity.version, {**identity.facts, "served": provider.list_available()[0].name}
                )
        uses = EndpointUses(tuple(dict.fromkeys(t.name for t in targets)), self._shared_pipeline())
        supports = check_supports(endpoint, identity, uses)
        if supports is not None:
            self.out.append(supports)

        plan_memory = not provider.capabilities.always_ready and self.budget.total is not None
        pinned_keys = {spec.key for spec in session.pinned_specs()}
        facts = [self._facts(session, target, plan_memory, pinned_keys) for target in targets]
        sized = {fact.target.key: fact.sized for fact in facts if fact.sized is not None}
        pins = [model for key, model in sized.items() if key in pinned_keys]
        # A model too big on its own has its own problem; the pins are judged beside the largest that fits.
        unpinned = [
            model for key, model in sized.items() if key not in pinned_keys and model.bytes <= self.budget.bytes
        ]
        largest = max(unpinned, key=lambda model: model.bytes) if unpinned else None
        for fact in facts:
            self._model_checks(fact, pins)
        if plan_memory:
            pins_check = check_pins(endpoint, pins, largest, self.budget, self.config.memory.allow_evict_pinned)
            if pins_check is not None:
                self.out.append(pins_check)

        try:
            loaded = provider.list_loaded()
        except SourceprepError as exc:
            self.out.append(
                problem(f"endpoint.{endpoint.name}.loaded", exc.message, "fix the endpoint's problem first")
            )
            return None
        resident = [model for model in loaded if model.occupies_memory]
        self._loaded_checks(session, resident, targets, {fact.target.key for fact in facts if fact.info})

        need = co_resident_need(pins, self._groups(sized, pins, unpinned), self.budget.bytes) if plan_memory else None
        if endpoint.kind == "ollama":
            self._ollama_settings(session, resident, need, sized, pinned_keys)
        elif router:
            self.out.append(check_models_max(endpoint, session.max_loaded(), need))
        pinned_total = sum(pin.bytes for pin in pins)
        together = pinned_total + (largest.bytes if largest else 0)
        if need is not None and need.bytes >= together:
            return f"{need.reason} on {endpoint.name}", need.bytes
        if together == 0:
            return None
        what = f"the pins and {largest.name}" if pins and largest else (largest.name if largest else "the pins")
        return f"{what} on {endpoint.name}", together

    def _facts(self, session: Session, target: _Target, plan_memory: bool, pinned_keys: set[str]) -> _ModelFacts:
        fact = _ModelFacts(target)
        try:
            fact.info = session.provider.describe(target.name)
        except SourceprepError as exc:
            fact.error = exc
            return fact
        if not plan_memory:
            return fact
        try:
            prediction = session.predict(session.request(target.name, target.spec))
        except SourceprepError as exc:
            fact.size_unknown = exc.message
            return fact
        if prediction.bytes <= 0:
            fact.size_unknown = f"{LABELS.get(self.endpoint.kind, self.endpoint.kind)} does not report it"
            return fact
        identity = session.identity(target.name)
        fact.sized = Sized(target.name, identity, prediction.bytes, pinned=target.key in pinned_keys)
        fact.source, fact.context = prediction.source, prediction.num_ctx
        return fact

    def _model_checks(self, fact: _ModelFacts, pins: list[Sized]) -> None:
        target = fact.target
        present = check_present(target.key, target.name, self.endpoint, fact.error, configured=target.spec is not None)
        self.out.append(present)
        if fact.error is not None:
            return
        if self.endpoint.kind == "lmstudio":
            context = check_lmstudio_context(target.key, target.spec, target.name, fact.info)
            if context is not None:
                self.out.append(context)
        if fact.size_unknown is not None:
            self.out.append(skipped(f"model.{target.key}.fits", f"size unknown: {fact.size_unknown}"))
        elif fact.sized is not None:
            allow = self.config.memory.allow_evict_pinned
            self.out.append(check_fits(target.key, fact.sized, fact.source, fact.context, self.budget, pins, allow))

    def _loaded_checks(
        self, session: Session, resident: list[LoadedModel], targets: list[_Target], present: set[str]
    ) -> None:
        endpoint = self.endpoint
        specs = {target.name: target.spec for target in targets if target.spec is not None}
        for model in resident:
            spec = specs.get(model.name) or _spec_for(session, self.config, endpoint, model.name)
            for check in (check_offload(endpoint, model, spec), check_loaded_context(endpoint, model, spec)):
                if check is not None:
                    self.out.append(check)
        lost = {spec.key: state for spec, state in session.lost_pins(resident)}
        by_identity = {session.identity(model.name): model for model in resident}
        for spec in session.pinned_specs():
            if spec.key in present:  # a pin the server does not have: model.<key>.present says so
                holder = by_identity.get(session.identity(spec.name))
                self.out.append(check_pin_kept(spec, lost.get(spec.key, "kept"), holder, self.now))

    def _groups(self, sized: Mapping[str, Sized], pins: list[Sized], unpinned: list[Sized]) -> dict[str, list[Sized]]:
        """What each use of the endpoint keeps together: each pipeline's models, the pins plus one more."""
        groups: dict[str, list[Sized]] = {}
        for name, rows in self.plans.items():
            models = [sized[t.key] for _s, t, where in rows if where == self.endpoint.name and t.key in sized]
            if models:
                groups[f"pipeline {name!r}"] = models
        if pins and unpinned:
            groups.setdefault("the pins plus one more model", [min(unpinned, key=lambda model: model.bytes)])
        elif len(pins) > 1:
            groups.setdefault("the pins", [])
        return groups

    def _ollama_settings(
        self,
        session: Session,
        resident: list[LoadedModel],
        need: Need | None,
        sized: Mapping[str, Sized],
        pinned_keys: set[str],
    ) -> None:
        endpoint, os_name = self.endpoint, self.hardware.os
        env = read_server_env(endpoint, self.system.server_processes("ollama"))
        seen = None
        if not env.read and resident:
            # A pin that would fit beside what is loaded, yet is gone: a count limit is the likely cause.
            loaded_bytes = sum(model.size or 0 for model in resident)
            for spec, state in session.lost_pins(resident):
                pin = sized.get(spec.key)
                if state == "missing" and pin is not None and loaded_bytes + pin.bytes <= self.budget.bytes:
                    why = f"/api/ps lists {len(resident)} while pinned {pin.name}, which fits beside, is not loaded"
                    seen = (len(resident), why)
                    break
        self.out.append(check_max_loaded(endpoint, os_name, env, need, len(self.hardware.gpus), seen))
        relying = [
            (spec.key, spec.name)
            for spec in self.config.models.values()
            if spec.endpoint == endpoint.name and spec.key not in pinned_keys and spec.keep_alive is None
        ]
        relying_keys = {key for key, _name in relying} | {
            t.key for rows in self.plans.values() for _s, t, where in rows if where == endpoint.name and t.spec is None
        }
        reuses: list[Reuse] = []
        for name, rows in self.plans.items():
            mine = {t.name for _s, t, where in rows if where == endpoint.name and t.key in relying_keys}
            if not mine:
                continue
            runs = [(stage, target.name, target.key) for stage, target, _where in rows]
            reuses += [
                reuse for reuse in reuse_gaps(name, runs, self.system.stage_durations(name)) if reuse.model in mine
            ]
        self.out.append(check_keep_alive(endpoint, os_name, env, reuses, relying))
        self.out.append(check_num_parallel(endpoint, os_name, env))


def _spec_for(session: Session, config: Config, endpoint: Endpoint, name: str) -> ModelSpec | None:
    """The configured model a loaded one is, matched by identity (aliases share one runner, ollama.md §4.1)."""
    identity = session.identity(name)
    for spec in config.models.values():
        if spec.endpoint == endpoint.name and session.identity(spec.name) == identity:
            return spec
    return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# -- output -------------------------------------------------------------------------------------------------


_STYLES = {"ok": "green", "warning": "yellow", "problem": "bold red", "skipped": "dim"}


def render_table(report: DoctorReport) -> Table:
    """STATUS, CHECK, DETAIL: one line per check, the fix after the summary."""
    from rich.table import Table

    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, show_edge=False)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("CHECK", no_wrap=True)
    table.add_column("DETAIL / FIX", no_wrap=True)
    for check in report.checks:
        detail = check.summary + (f" -> fix: {check.fix}" if check.fix else "")
        table.add_row(check.status, check.id, detail, style=_STYLES[check.status])
    return table


# -- the real machine -----------------------------------------------------------------------------------------

_API_SUFFIXES = ("/api/v1", "/api/v0", "/openai/v1", "/v1")
_OLLAMA_PROCESS_NAMES = ("ollama", "ollama.exe")


def server_root(url: str) -> str:
    root = url.rstrip("/")
    for suffix in _API_SUFFIXES:
        if root.endswith(suffix):
            return root[: -len(suffix)]
    return root


class ProcessTable(Protocol):
    def servers(self, kind: str) -> list[ServerProcess]: ...


class PsutilProcesses:
    """Local ``ollama serve`` processes and, where the OS allows, their environment."""

    def servers(self, kind: str) -> list[ServerProcess]:
        if kind != "ollama":
            return []
        import psutil

        found = []
        for proc in psutil.process_iter(["pid", "name", "cmdline", "username"]):
            info = proc.info
            name = str(info.get("name") or "")
            cmdline = tuple(str(part) for part in info.get("cmdline") or ())
            # The menu-bar / tray app is another process; only `ollama serve` holds the settings.
            if name.lower() not in _OLLAMA_PROCESS_NAMES or "serve" not in cmdline[1:]:
                continue
            environ: dict[str, str] | None
            reason = None
            try:
                environ = dict(proc.environ())
            except psutil.AccessDenied:
                environ = None
                owner = info.get("username")
                reason = f"access denied: it runs as {owner}" if owner else "access denied"
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            found.append(ServerProcess(int(info["pid"]), name, cmdline, environ, reason))
        return found


class LocalSystem:
    """The real machine; ``probe_system`` and ``processes`` can be replaced by recorded outputs."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        probe_system: ProbeSystem | None = None,
        processes: ProcessTable | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.environ = environ if environ is not None else os.environ
        self.probe_system = probe_system
        self.processes = processes or PsutilProcesses()
        self.timeout_s = timeout_s
        self._clients: dict[str, httpx.Client] = {}

    def hardware(self) -> Hardware:
        from sourceprep_models.hardware import probe

        return probe(self.probe_system)

    def provider(self, endpoint: Endpoint) -> Provider:
        from sourceprep_models.providers import create_provider

        return create_provider(endpoint)

    def fetch(self, endpoint: Endpoint, path: str) -> HttpReply:
        from sourceprep_models.providers._http import json_body, send

        client = self._client(endpoint)
        secret = self.environ.get(endpoint.api_key_env) if endpoint.api_key_env else None
        response = send(
            client,
            "GET",
            path,
            where=f"endpoint {endpoint.name!r} at {endpoint.url}",
            unreachable_fix=START_HINTS.get(endpoint.kind, "start the server") + ", or fix the endpoint's url",
            after_deadline="",
            headers={"Authorization": f"Bearer {secret}"} if secret else None,
            scrub=(lambda text: text.replace(secret, "***")) if secret else str,
        )
        body = json_body(response)
        return HttpReply(response.status_code, body if body is not None else response.text)

    def _client(self, endpoint: Endpoint) -> httpx.Client:
        import httpx

        if endpoint.name not in self._clients:
            self._clients[endpoint.name] = httpx.Client(
                base_url=server_root(endpoint.url), timeout=httpx.Timeout(self.timeout_s, connect=3.0)
            )
        return self._clients[endpoint.name]

    def server_processes(self, kind: str) -> list[ServerProcess]:
        try:
            return self.processes.servers(kind)
        except Exception:  # psutil itself failing only means the settings are inferred
            return []

    def stage_durations(self, pipeline: str) -> dict[str, float]:
        from sourceprep_models.pipeline.state import load_state, state_path

        try:
            state = load_state(state_path(pipeline))
        except SourceprepError:
            return {}
        if state is None:
            return {}
        durations = {}
        for stage, row in state.finished.items():
            total = row.get("total_s") if isinstance(row, dict) else None
            if isinstance(total, int | float) and not isinstance(total, bool):
                durations[stage] = float(total)
        return durations

    def size_book(self) -> SizeBook:
        from sourceprep_models.memory.sizing import default_size_book

        return default_size_book()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def gather_inputs(
    config_path: str | None, environ: Mapping[str, str], load: Callable[[], Config], only_endpoint: str | None
) -> DoctorInputs:
    """Where the config is and what it says (or why it cannot be read); never raises for a bad config."""
    from sourceprep_models.config.locate import locate_config
    from sourceprep_models.errors import ConfigError

    location = locate_config(config_path, environ)
    exists = location.path is None or location.path.is_file()
    config: Config | None = None
    error = None
    try:
        config = load()
    except ConfigError as exc:
        error = exc.message
    return DoctorInputs(location, exists, config, error, environ, only_endpoint)
