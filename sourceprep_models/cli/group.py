"""The one error handler of every command: an expected failure becomes one stderr line and its exit code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer
from typer._click import exceptions as click_errors
from typer.core import TyperGroup

from sourceprep_models.cli.context import AppContext
from sourceprep_models.cli.options import refuse_undecodable, undecodable_argument, usage_message
from sourceprep_models.errors import Interrupted, SourceprepError, UsageError


class Group(TyperGroup):
    """Turns every expected failure into one stderr line and its exit code, in one place."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta["undecodable"] = undecodable_argument(args)  # refused in invoke, where errors are handled
        # With --json, stdout gets a document even when the command fails before it parses its options.
        ctx.meta["json"] = "--json" in (args[: args.index("--")] if "--" in args else args)
        return super().parse_args(ctx, hoist_global_options(args, self.params, self.commands))

    def invoke(self, ctx: Any) -> Any:
        exit_code = 1
        try:
            result = self._invoke(ctx)
            exit_code = 0
            return result
        except typer.Exit as exc:
            exit_code = exc.exit_code
            raise
        except click_errors.NoArgsIsHelpError:
            exit_code = 0  # the help, not a failure
            raise
        finally:
            if ctx.meta.get("json"):
                _output(ctx).finish_json(exit_code)

    def _invoke(self, ctx: Any) -> Any:
        failure: SourceprepError
        try:
            refuse_undecodable(ctx.meta.get("undecodable"))
            return super().invoke(ctx)
        except click_errors.UsageError as exc:  # a bad option value, a missing argument: one line, no usage block
            if isinstance(exc, click_errors.NoArgsIsHelpError):
                raise
            failure = UsageError(usage_message(exc.format_message(), exc.ctx.command_path if exc.ctx else None))
        except SourceprepError as exc:
            failure = exc
        except KeyboardInterrupt:
            failure = Interrupted("interrupted; see what is loaded now with `sourceprep-models status`")
        _output(ctx).error(failure.message)
        raise typer.Exit(int(failure.exit_code))


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


def _output(ctx: Any) -> Any:
    from sourceprep_models.ui.output import Output

    obj = getattr(ctx, "obj", None)
    if isinstance(obj, AppContext):
        return obj.output
    # A failure before the root callback made the context's: one Output for the error and the document.
    return ctx.meta.setdefault("output", Output())
