"""How llama-server will read a model's weights, from the arguments its router reports.

The router lists each model's child command line in ``GET /models`` (``status.args``) and the preset
section it was built from (``status.preset``). The router's own arguments are copied into every
child's: a router started with ``-lm dio`` lists ``--load-mode dio`` for each model, and a preset
section's ``load-mode = dio`` shows up the same way. A mode set only through the environment
(``LLAMA_ARG_LOAD_MODE``) appears in neither, so it cannot be seen from here.

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

from collections.abc import Sequence

DIRECT_IO = "dio"

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


def direct_io_flag(args: Sequence[str], preset: str | None = None) -> str | None:
    """The argument that makes the child read with direct I/O (for messages); None: it reads through the cache."""
    return f"--load-mode {DIRECT_IO}" if load_mode(args, preset) == DIRECT_IO else None


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
