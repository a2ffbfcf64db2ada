"""The command line before Click reads it: the group's own options moved in front of the command."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def hoist_global_options(args: list[str], params: list[Any], commands: Mapping[str, Any]) -> list[str]:
    """``args`` with the group's own options that follow the command moved before it, so that
    ``status --config x.toml`` means ``--config x.toml status``. Click only reads a group's options before
    the command name; a command's own option values and everything after ``--`` stay where they are."""
    takes_value = {name: not (p.is_flag or p.count) for p in params for name in (*p.opts, *p.secondary_opts)}
    position = _command_position(args, takes_value, commands)
    if position is None:
        return args
    command = commands[args[position]]
    own_values = {
        name for p in command.params if not (getattr(p, "is_flag", True) or p.count) for name in getattr(p, "opts", ())
    }
    hoisted: list[str] = []
    rest: list[str] = []
    tail = args[position + 1 :]
    index = 0
    while index < len(tail):
        arg = tail[index]
        if arg == "--":
            rest.extend(tail[index:])
            break
        name = arg.split("=", 1)[0]
        if name in takes_value and name not in own_values:
            needs = takes_value[name] and "=" not in arg
            hoisted.extend(tail[index : index + 1 + needs])
            index += 1 + needs
            continue
        if _short_flags(arg, takes_value) and arg not in own_values:
            hoisted.append(arg)
        else:
            rest.append(arg)
            if name in own_values and "=" not in arg and index + 1 < len(tail):
                rest.append(tail[index + 1])  # the command's own option value, even one that looks like ours
                index += 1
        index += 1
    return [*args[:position], *hoisted, args[position], *rest]


def _command_position(args: list[str], takes_value: Mapping[str, bool], commands: Mapping[str, Any]) -> int | None:
    """Where the command name is: the first argument that is neither a group option nor its value."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return None
        if arg in commands:
            return index
        index += 2 if takes_value.get(arg) else 1
    return None


def _short_flags(arg: str, takes_value: Mapping[str, bool]) -> bool:
    """``-vv`` or ``-vq``: a bundle of the group's own short flags (none of which takes a value)."""
    return (
        len(arg) > 2
        and arg[0] == "-"
        and arg[1] != "-"
        and all(takes_value.get(f"-{char}") is False for char in arg[1:])
    )
