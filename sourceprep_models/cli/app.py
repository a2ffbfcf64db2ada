"""The Typer application: global options, the shared context, and the one error handler.

Exit codes (documented in the README and ``errors``):
0 ok · 1 error · 2 usage · 3 model not found · 4 server unreachable · 5 bad config ·
6 does not fit in memory · 130 interrupted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated

import typer

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
from sourceprep_models.cli.group import Group
from sourceprep_models.cli.options import env_count
from sourceprep_models.constants import ENV_CONFIG, ENV_QUIET, ENV_VERBOSE

EPILOG = (
    "Exit codes: 0 ok, 1 error, 2 usage, 3 model not found, 4 server unreachable, "
    "5 bad config, 6 does not fit in memory, 130 interrupted."
)


# The commands live on their own Typer app, which ``AppGroup`` serves: Typer builds each one only when a
# run names it (cli/lazy_commands.py), where registering them on ``app`` would build all of them per run.
commands = typer.Typer(rich_markup_mode=None)


class AppGroup(Group):
    registry = commands


app = typer.Typer(
    cls=AppGroup,
    name="sourceprep-models",
    help="Decide and drive which LLMs are resident in memory on this machine's model servers.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
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
    # hold_json: the document is written as the command ends, with the error if it fails (cli/group.py).
    output = Output(verbosity=verbosity, color=color, hold_json=True)
    ctx.obj = AppContext(output=output, config_path=config, environ=os.environ)


COMMANDS: dict[str, Callable[..., None]] = {
    "status": status_cmd.status,
    "load": load_cmd.load,
    "unload": unload_cmd.unload,
    "pin": pin_cmd.pin,
    "run-pipeline": run_pipeline_cmd.run_pipeline,
    "doctor": doctor_cmd.doctor,
    "bench": bench_cmd.bench,
    "wait": wait_cmd.wait,
}
for _name, _command in COMMANDS.items():
    commands.command(name=_name, epilog=EPILOG)(_command)


def main() -> None:
    app(prog_name="sourceprep-models")
