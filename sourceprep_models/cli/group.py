"""The one error handler of every command: an expected failure becomes one stderr line and its exit code."""

from __future__ import annotations

from typing import Any, ClassVar

import typer
from typer._click import exceptions as click_errors
from typer.core import TyperGroup

from sourceprep_models.cli import plain_values
from sourceprep_models.cli.argv import hoist_global_options
from sourceprep_models.cli.context import AppContext
from sourceprep_models.cli.lazy_commands import Commands
from sourceprep_models.cli.options import refuse_undecodable, undecodable_argument, usage_message
from sourceprep_models.errors import Interrupted, SourceprepError, UsageError


class Group(TyperGroup):
    """Turns every expected failure into one stderr line and its exit code, in one place."""

    # The Typer app whose registered commands this group serves, built on demand (``Commands``).
    registry: ClassVar[typer.Typer | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.registry is not None:
            self.commands = Commands.of(self.registry, self.rich_markup_mode, self.commands)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names, without building every command

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta["undecodable"] = undecodable_argument(args)  # refused in invoke, where errors are handled
        # With --json, stdout gets a document even when the command fails before it parses its options.
        ctx.meta["json"] = "--json" in (args[: args.index("--")] if "--" in args else args)
        plain_values.install(self.get_params(ctx))
        return super().parse_args(ctx, hoist_global_options(args, self.params, self.commands))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            plain_values.install(command.get_params(ctx))
        return name, command, rest

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


def _output(ctx: Any) -> Any:
    from sourceprep_models.ui.output import Output

    obj = getattr(ctx, "obj", None)
    if isinstance(obj, AppContext):
        return obj.output
    # A failure before the root callback made the context's: one Output for the error and the document.
    return ctx.meta.setdefault("output", Output())
