"""A pipeline's stages as they run: repeats and groups expanded into stage runs with stable ids, each
bound to its model and endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from sourceprep_models.config.schema import Config, Endpoint, ModelSpec, Pipeline, Stage, StageGroup
from sourceprep_models.errors import UsageError


@dataclass(frozen=True)
class StageRun:
    """One execution of a stage: ``rerank#3`` is the third repeat, ``query[2]/embed`` a grouped stage."""

    id: str
    stage: Stage


def expand(pipeline: Pipeline) -> list[StageRun]:
    runs: list[StageRun] = []

    def add(stage: Stage, prefix: str) -> None:
        for repeat in range(1, stage.repeat + 1):
            suffix = f"#{repeat}" if stage.repeat > 1 else ""
            runs.append(StageRun(f"{prefix}{stage.name}{suffix}", stage))

    for item in pipeline.stages:
        if isinstance(item, StageGroup):
            for round_ in range(1, item.repeat + 1):
                for stage in item.stages:
                    add(stage, f"{item.name}[{round_}]/" if item.repeat > 1 else f"{item.name}/")
        else:
            add(item, "")
    return runs


@dataclass(frozen=True)
class Target:
    """A stage's model, resolved against the config: the server's name for it and its endpoint."""

    key: str
    name: str
    spec: ModelSpec | None
    endpoint: Endpoint


def resolve_target(config: Config, model: str) -> Target:
    from sourceprep_models.providers import server_facts

    specs = config.find_models(model, folds_case=lambda kind: server_facts(kind).names_fold_case)
    if len({spec.endpoint for spec in specs}) > 1:
        where = ", ".join(sorted({spec.endpoint for spec in specs}))
        raise UsageError(f"{model!r} is configured on several endpoints ({where}); use its models.<key> in the stage")
    if specs:
        spec = specs[0]
        return Target(spec.key, spec.name, spec, config.endpoints[spec.endpoint])
    return Target(model, model, None, config.endpoints[config.default_endpoint])
