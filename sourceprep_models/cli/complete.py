"""Values the shell offers on TAB, through Typer's own ``autocompletion`` callbacks.

TAB must answer at once: the callbacks read the config file only (never a server), and any
problem with it (missing, broken) means no suggestions rather than an error in the user's shell.
The config path is the one the command line gives (``--config``, before or after the command, or
its environment variable), as the command itself would read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Config


def _config(ctx: typer.Context) -> Config | None:
    import os

    from sourceprep_models.config import load_config
    from sourceprep_models.errors import SourceprepError
    from sourceprep_models.providers import endpoint_kinds

    path = ctx.find_root().params.get("config")
    try:
        return load_config(path if isinstance(path, str) else None, os.environ, kinds=endpoint_kinds())
    except (SourceprepError, OSError, ValueError):
        return None


def models(ctx: typer.Context) -> list[tuple[str, str]]:
    """Model keys from the config, each with its server name and endpoint as the help text."""
    config = _config(ctx)
    if config is None:
        return []
    return [(key, f"{spec.name} on {spec.endpoint}") for key, spec in config.models.items()]


def pipelines(ctx: typer.Context) -> list[tuple[str, str]]:
    config = _config(ctx)
    if config is None:
        return []
    return [
        (name, pipeline.description or f"{len(pipeline.stages)} stages") for name, pipeline in config.pipelines.items()
    ]


def endpoints(ctx: typer.Context) -> list[tuple[str, str]]:
    config = _config(ctx)
    if config is None:
        return []
    return [(name, f"{endpoint.kind} at {endpoint.url}") for name, endpoint in config.endpoints.items()]


# The names run-pipeline accepts (planning.lookahead.STRATEGIES, which the CLI layer may not import;
# tests/test_completion.py keeps the two equal).
STRATEGIES = ("lookahead", "lru", "ollama", "unload-all")


def strategies() -> list[str]:
    return list(STRATEGIES)


# run-pipeline's completable parameters, declared here so its module stays a short list of options.
PipelineArgument = Annotated[
    str, typer.Argument(help="A pipeline from the config ([pipelines.NAME]).", autocompletion=pipelines)
]
StrategyOption = Annotated[
    str,
    typer.Option(
        "--strategy",
        help="Eviction strategy: lookahead (ours), lru, ollama or unload-all, to compare.",
        autocompletion=strategies,
    ),
]


EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        "-e",
        help="Endpoint name from the config (default: all / the default one).",
        autocompletion=endpoints,
    ),
]
