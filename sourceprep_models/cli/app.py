"""The Typer application: global options, the shared context, and the one error handler.

Exit codes (documented in the README and ``errors``):
0 ok · 1 error · 2 usage · 3 model not found · 4 server unreachable · 5 bad config ·
6 does not fit in memory · 130 interrupted.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from typer._click import exceptions as click_errors
from typer.core import TyperGroup

from sourceprep_models import __version__
from sourceprep_models.cli import bench as bench_cmd
from sourceprep_models.cli import doctor as doctor_cmd
from sourceprep_models.cli import load as load_cmd
from sourceprep_models.cli import pin as pin_cmd
from sourceprep_models.cli import run_pipeline as run_pipeline_cmd
from sourceprep_models.cli import status as status_cmd
from sourceprep_models.cli import unload as unload_cmd
from sourceprep_models.cli import wait as wait_cmd
from sourceprep_models.cli.context import AppContext
from sourceprep_models.cli.options import env_count, refuse_undecodable, undecodable_argument, usage_message
from sourceprep_models.constants import ENV_CONFIG, ENV_QUIET, ENV_VERBOSE
from sourceprep_models.errors import Interrupted, SourceprepError, UsageError

EPILOG = (
    "Exit codes: 0 ok, 1 error, 2 usage, 3 model not found, 4 server unreachable, "
    "5 bad config, 6 does not fit in memory, 130 interrupted."
)


class _Group(TyperGroup):
    """Turns every expected failure into one stderr line and its exit code, in one place."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta["undecodable"] = undecodable_argument(args)  # refused in invoke, where errors are handled
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
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
    return obj.output if isinstance(obj, AppContext) else Output()


app = typer.Typer(
    cls=_Group,
    name="sourceprep-models",
    help="Decide and drive which LLMs are resident in memory on this machine's model servers.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sourceprep-models {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", envvar=ENV_CONFIG, help="Config file (TOML).", show_default=False),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More detail on stderr (repeatable).")
    ] = 0,
    quiet: Annotated[int, typer.Option("--quiet", "-q", count=True, help="Less chatter on stderr (repeatable).")] = 0,
    color: Annotated[
        bool | None, typer.Option("--color/--no-color", help="Force colour on or off (default: auto).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Decide and drive which LLMs are resident in memory on this machine's model servers."""
    from sourceprep_models.ui.output import Output

    verbosity = verbose - quiet + env_count(ENV_VERBOSE) - env_count(ENV_QUIET)
    ctx.obj = AppContext(output=Output(verbosity=verbosity, color=color), config_path=config, environ=os.environ)


app.command(name="status", epilog=EPILOG)(status_cmd.status)
app.command(name="load", epilog=EPILOG)(load_cmd.load)
app.command(name="unload", epilog=EPILOG)(unload_cmd.unload)
app.command(name="pin", epilog=EPILOG)(pin_cmd.pin)
app.command(name="run-pipeline", epilog=EPILOG)(run_pipeline_cmd.run_pipeline)
app.command(name="doctor", epilog=EPILOG)(doctor_cmd.doctor)
app.command(name="bench", epilog=EPILOG)(bench_cmd.bench)
app.command(name="wait", epilog=EPILOG)(wait_cmd.wait)


def main() -> None:
    app(prog_name="sourceprep-models")
