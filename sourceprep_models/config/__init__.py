"""The TOML configuration: typed records (``schema``), locating and validating (``loader``)."""

from sourceprep_models.config.loader import load_config, locate_config, parse_config
from sourceprep_models.config.schema import (
    Config,
    Endpoint,
    MemoryPolicy,
    ModelSpec,
    Pipeline,
    Stage,
)

__all__ = [
    "Config",
    "Endpoint",
    "MemoryPolicy",
    "ModelSpec",
    "Pipeline",
    "Stage",
    "load_config",
    "locate_config",
    "parse_config",
]
