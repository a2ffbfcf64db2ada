"""How llama-server will read a model's weights, from the arguments its router reports.

The router lists each model's child command line in ``GET /models`` (``status.args``) and the preset
section it was built from (``status.preset``). The router's own arguments are copied into every
child's: a router started with ``-lm dio`` lists ``--load-mode dio`` for each model, and a preset
section's ``load-mode = dio`` shows up the same way. A mode set only through the environment
(``LLAMA_ARG_LOAD_MODE``, the option's ``set_env`` in arg.cpp) appears in neither: each child inherits
the router's environment, and an argument wins over the variable (arg.cpp reads the environment first).
When the router runs on this machine, its environment is read from the process; elsewhere, or when it is
another user's process, the variable cannot be seen and the mode is taken as the arguments say.

The load modes are those of llama.cpp's common/arg.cpp (``common_params_parser_init``, the
``-lm/--load-mode`` option): ``dio`` reads with direct I/O, bypassing the page cache, so warming the
cache before such a load is wasted reading and RAM. Every other mode (``auto``, ``none``, ``mmap``,
``mlock``, ``mmap+mlock``) reads through the page cache.

The older flags that arg.cpp marks "DEPRECATED in favor of ``--load-mode``" each set the same one
mode, so the last of them all wins: ``--mmap`` is ``mmap`` and ``--no-mmap`` is ``none`` (plain reads,
still through the page cache: not direct I/O), ``--mlock`` is ``mlock``, ``-dio/--direct-io`` is
``dio`` and ``-ndio/--no-direct-io`` is ``none``. Newer builds reject them ("invalid argument"),
older routers may still list them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

DIRECT_IO = "dio"
ENV_LOAD_MODE = "LLAMA_ARG_LOAD_MODE"
_DEFAULT_PORT = 8080  # llama-server's --port default (common/common.h, common_params::port)

# Flags that take the mode as their value.
_VALUED = ("--load-mode", "-lm")
# Deprecated switches and the mode each sets (common/arg.cpp, the options marked DEPRECATED).
_SWITCHES = {
    "--mmap": "mmap",
    "--no-mmap": "none",
    "--mlock": "mlock",
    "-dio": DIRECT_IO,
    "--direct-io": DIRECT_IO,
    "-ndio": "none",
    "--no-direct-io": "none",
}


def load_mode(args: Sequence[str], preset: str | None = None) -> str | None:
    """The load mode the child gets: the last mode-setting argument, else the preset's ``load-mode``.

    >>> load_mode(["--model", "a.gguf", "-lm", "dio"])
    'dio'
    >>> load_mode(["--load-mode=dio", "--no-mmap"])
    'none'
    >>> load_mode([], "[a]\\nload-mode = dio\\n")
    'dio'
    >>> load_mode(["--model", "a.gguf"]) is None
    True
    """
    mode = None
    for index, arg in enumerate(args):
        flag, has_value, value = arg.partition("=")
        if flag in _VALUED:
            if has_value:
                mode = value.strip()
            elif index + 1 < len(args):
                mode = args[index + 1].strip()
        elif arg in _SWITCHES:
            mode = _SWITCHES[arg]
    if mode is None and not args and preset:
        mode = _preset_mode(preset)
    return mode.lower() if mode else None


def direct_io_flag(
    args: Sequence[str], preset: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The setting that makes the child read with direct I/O (for messages); None: it reads through the cache.

    ``environ`` is the router's environment where it could be read.

    >>> direct_io_flag(["--model", "a.gguf"], environ={"LLAMA_ARG_LOAD_MODE": "dio"})
    'LLAMA_ARG_LOAD_MODE=dio'
    >>> direct_io_flag(["-lm", "mmap"], environ={"LLAMA_ARG_LOAD_MODE": "dio"}) is None
    True
    """
    mode = load_mode(args, preset)
    if mode is None and environ and environ.get(ENV_LOAD_MODE, "").strip().lower() == DIRECT_IO:
        return f"{ENV_LOAD_MODE}={DIRECT_IO}"
    return f"--load-mode {DIRECT_IO}" if mode == DIRECT_IO else None


def router_environ(port: int) -> dict[str, str] | None:
    """The environment of the llama-server on this machine that listens on ``port`` (not one of its model
    children, which carry ``--alias``); None when there is none, or it is not readable."""
    import psutil

    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            command = list(process.info.get("cmdline") or ())
            if not command or "llama-server" not in Path(command[0]).name or "--alias" in command:
                continue
            environ = process.environ()
            if _listening_port(command, environ) == port:
                return environ
        except psutil.Error:
            continue  # gone meanwhile, or another user's: nothing can be read of it
    return None


def _listening_port(command: Sequence[str], environ: Mapping[str, str]) -> int | None:
    """The port a llama-server command line listens on: its last ``--port``, else LLAMA_ARG_PORT, else 8080."""
    value = None
    for index, arg in enumerate(command[:-1]):
        if arg == "--port":
            value = command[index + 1]
    value = value if value is not None else environ.get("LLAMA_ARG_PORT")
    if value is None:
        return _DEFAULT_PORT
    return int(value) if value.strip().isdigit() else None


def _preset_mode(preset: str) -> str | None:
    """``load-mode = X`` (or a deprecated key) in a preset section, the last one winning."""
    mode = None
    for line in preset.splitlines():
        key, equals, value = line.partition("=")
        if not equals:
            continue
        key, value = key.strip(), value.strip()
        if key in ("load-mode", "lm"):
            mode = value
        elif f"--{key}" in _SWITCHES and value.lower() in ("1", "true", "on", "yes"):
            mode = _SWITCHES[f"--{key}"]
    return mode
