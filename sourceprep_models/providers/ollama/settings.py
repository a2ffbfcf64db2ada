"""The Ollama server settings that make models swap, read from the server's process, and their fixes.

The settings (ollama.md §4.10) live in the server's environment and need a restart. They are read
from the local ``ollama serve`` process (psutil) when allowed; the Linux install runs it as user
``ollama``, so reading is usually refused, and then the value is Ollama's default or what
``/api/ps`` shows, always labelled "inferred". ``OLLAMA_MAX_LOADED_MODELS`` 0 means 3 x GPUs, at
least 3 (§4.3); ``OLLAMA_KEEP_ALIVE`` is a Go duration or whole seconds, negative meaning forever
(§3.1); ``OLLAMA_NUM_PARALLEL`` multiplies the KV cache (§4.8).

Fixes are written for the platform (``env_fix``): a LaunchAgent of the user's own on macOS (edits
to Homebrew's ``homebrew.mxcl.ollama.plist`` are lost on ``brew upgrade``), a systemd drop-in on
Linux, a user environment variable on Windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sourceprep_models.providers.diagnostics import Finding, Need, Reuse, ServerProcess, is_local, port_of
from sourceprep_models.units import format_seconds, human_bytes, parse_keep_alive

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Endpoint
    from sourceprep_models.providers.diagnostics import SettingsQuestion


# -- fixes per platform ---------------------------------------------------------------------------------


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


# -- reading the server's environment -------------------------------------------------------------------


@dataclass(frozen=True)
class ServerEnv:
    """The Ollama server's environment as far as it could be read."""

    values: Mapping[str, str]
    read: bool  # False: inferred (defaults and /api/ps)
    note: str


def read_server_env(endpoint: Endpoint, processes: list[ServerProcess]) -> ServerEnv:
    """The environment of the ``ollama serve`` behind this endpoint, or why it is inferred instead."""
    from sourceprep_models.config.ollama_host import ollama_base_url

    if not is_local(endpoint.url):
        return ServerEnv({}, False, "inferred: the server runs on another machine")
    if not processes:
        return ServerEnv({}, False, "inferred: no local `ollama serve` process found")
    port = port_of(endpoint.url)
    readable = [proc for proc in processes if proc.environ is not None]
    for proc in readable:
        assert proc.environ is not None
        try:
            bind = ollama_base_url(proc.environ.get("OLLAMA_HOST"))
        except ValueError:  # a server started with an OLLAMA_HOST it could not bind either
            continue
        if port_of(bind) == port:
            return ServerEnv(dict(proc.environ), True, f"read from `ollama serve` (pid {proc.pid})")
    unreadable = [proc for proc in processes if proc.environ is None]
    if len(processes) == 1 and unreadable:
        proc = unreadable[0]
        return ServerEnv(
            {}, False, f"inferred: the environment of `ollama serve` (pid {proc.pid}) is not readable ({proc.reason})"
        )
    return ServerEnv({}, False, f"inferred: no local `ollama serve` process listens on port {port}")


def loaded_limit_in_effect(
    endpoint: Endpoint, processes: list[ServerProcess], gpu_count: int
) -> tuple[int, str] | None:
    """OLLAMA_MAX_LOADED_MODELS as the running server has it (0 or unset: 3 x GPUs, at least 3; ollama.md
    §4.3, server/sched.go InitScheduler), and how it was read; None when its environment is not readable."""
    env = read_server_env(endpoint, processes)
    if not env.read:
        return None
    configured = _env_int(env.values.get("OLLAMA_MAX_LOADED_MODELS"))
    if configured:
        return configured, f"OLLAMA_MAX_LOADED_MODELS={configured}, {env.note}"
    return 3 * max(1, gpu_count), f"OLLAMA_MAX_LOADED_MODELS unset: 3 x GPUs, at least 3; {env.note}"


def _env_int(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


# -- the checks ------------------------------------------------------------------------------------------


def settings_findings(endpoint: Endpoint, question: SettingsQuestion) -> dict[str, Finding]:
    """The three settings that decide what stays loaded, each against what the config needs."""
    os_name = question.os_name
    env = read_server_env(endpoint, question.processes())
    seen = None
    if not env.read and (suggested := question.limit_seen()) is not None:
        count, pin = suggested
        seen = (count, f"/api/ps lists {count} while pinned {pin}, which fits beside, is not loaded")
    return {
        "max_loaded_models": check_max_loaded(os_name, env, question.need, question.gpu_count, seen),
        "keep_alive": check_keep_alive(os_name, env, question.reuses(), list(question.relying)),
        "num_parallel": check_num_parallel(os_name, env),
    }


def check_max_loaded(
    os_name: str, env: ServerEnv, need: Need | None, gpu_count: int, seen: tuple[int, str] | None = None
) -> Finding:
    """OLLAMA_MAX_LOADED_MODELS against what the config keeps together (ollama.md §4.3, §4.10).

    ``seen``: when the environment is not readable, a limit /api/ps suggests (count, why)."""
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
        return Finding.ok(f"at most {limit} models loaded ({how}){together}", **details)
    value = str(need.count)
    summary = (
        f"{need.reason} keeps {need.count} models together ({', '.join(need.models)}: {human_bytes(need.bytes)}, "
        f"they fit) but Ollama keeps at most {limit} ({how}): the rest swap"
    )
    fix = env_fix(os_name, "OLLAMA_MAX_LOADED_MODELS", value)
    details.update(fix_details=env_fix_details(os_name, "OLLAMA_MAX_LOADED_MODELS", value), models=list(need.models))
    if env.read or seen is not None:
        return Finding.problem(summary, fix, **details)
    # Only Ollama's default is known: the real setting may already be high enough.
    return Finding.warning(summary, f"make sure OLLAMA_MAX_LOADED_MODELS is at least {value}: {fix}", **details)


def _keep_alive_seconds(raw: str | None) -> float | None:
    """OLLAMA_KEEP_ALIVE: a Go duration or whole seconds, negative = forever (None) (ollama.md §3.1)."""
    if raw is None or not raw.strip():
        return 300.0
    try:
        return parse_keep_alive(raw.strip()).seconds
    except ValueError:
        return 300.0  # the server falls back to its default too


def check_keep_alive(os_name: str, env: ServerEnv, reuses: list[Reuse], relying: list[tuple[str, str]]) -> Finding:
    """OLLAMA_KEEP_ALIVE against the idle gaps of models the pipelines use again (ollama.md §3.2, §3.3).

    ``relying``: (key, name) of the configured models that set no keep_alive of their own."""
    raw = env.values.get("OLLAMA_KEEP_ALIVE") if env.read else None
    seconds = _keep_alive_seconds(raw)
    shown = "forever" if seconds is None else format_seconds(seconds)
    if raw:
        how = f"OLLAMA_KEEP_ALIVE={raw}, {env.note}"
    else:
        how = f"OLLAMA_KEEP_ALIVE unset, {env.note}" if env.read else f"Ollama's default, {env.note}"
    details: dict[str, Any] = {"keep_alive_s": seconds, "read": env.read, "source": env.note}
    if seconds is None:
        return Finding.ok(f"models stay loaded forever ({how})", **details)
    if seconds == 0 and relying:
        key = relying[0][0]
        value = "30m"
        details.update(
            models=[name for _key, name in relying], fix_details=env_fix_details(os_name, "OLLAMA_KEEP_ALIVE", value)
        )
        return Finding.warning(
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
        return Finding.ok(f"idle models unload after {shown} ({how}){tail}", **details)
    worst = max(short, key=lambda reuse: reuse.gap_s or 0.0)
    gap = worst.gap_s or 0.0
    value = _go_duration(max(600.0, gap * 1.5))
    details.update(
        models=sorted({reuse.model for reuse in short}),
        gap_s=gap,
        fix_details=env_fix_details(os_name, "OLLAMA_KEEP_ALIVE", value),
    )
    return Finding.warning(
        f"pipeline {worst.pipeline!r} uses {worst.model} again after {format_seconds(gap)} of other stages, but "
        f"idle models unload after {shown} ({how}): it is reloaded every time",
        f'set keep_alive = "{value}" under [models.{worst.key}], or {env_fix(os_name, "OLLAMA_KEEP_ALIVE", value)}',
        **details,
    )


def _go_duration(seconds: float) -> str:
    minutes = max(1, int(-(-seconds // 60)))
    return f"{minutes // 60}h{minutes % 60}m" if minutes >= 60 else f"{minutes}m"


def check_num_parallel(os_name: str, env: ServerEnv) -> Finding:
    """OLLAMA_NUM_PARALLEL > 1 multiplies every model's KV cache (ollama.md §4.8)."""
    raw = env.values.get("OLLAMA_NUM_PARALLEL") if env.read else None
    parallel = _env_int(raw) or 1
    details = {"num_parallel": parallel, "read": env.read, "source": env.note}
    if parallel <= 1:
        if raw:
            how = f"OLLAMA_NUM_PARALLEL={raw}, {env.note}"
        else:
            how = f"OLLAMA_NUM_PARALLEL unset, {env.note}" if env.read else f"Ollama's default, {env.note}"
        return Finding.ok(f"one request slot per model ({how})", **details)
    return Finding.warning(
        f"OLLAMA_NUM_PARALLEL={parallel} ({env.note}) gives every model {parallel} request slots, so its KV cache "
        f"is {parallel} times larger than these predictions and fewer models fit together",
        f"unless parallel requests matter more than residency, {env_fix(os_name, 'OLLAMA_NUM_PARALLEL', '1')}",
        fix_details=env_fix_details(os_name, "OLLAMA_NUM_PARALLEL", "1"),
        **details,
    )
