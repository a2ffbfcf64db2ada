"""The TOML configuration: typed records (``schema``), which file (``locate``), reading it (``loader``,
``validate``, ``keylines``, ``urls``), changing it in place (``edit``), and ``OLLAMA_HOST`` (``ollama_host``)."""

from sourceprep_models.config.loader import load_config, parse_config
from sourceprep_models.config.locate import ConfigLocation, locate_config
from sourceprep_models.config.schema import (
    Config,
    Endpoint,
    EndpointKinds,
    MemoryPolicy,
    ModelSpec,
    Pipeline,
    Stage,
)

__all__ = [
    "Config",
    "ConfigLocation",
    "Endpoint",
    "EndpointKinds",
    "MemoryPolicy",
    "ModelSpec",
    "Pipeline",
    "Stage",
    "load_config",
    "locate_config",
    "parse_config",
]
