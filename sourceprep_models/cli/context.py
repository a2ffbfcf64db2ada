"""What every command shares: the output layer, the config (loaded on first use), providers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sourceprep_models.errors import UsageError

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Config, Endpoint, EndpointKinds, ModelSpec
    from sourceprep_models.swap.hooks import Hooks
    from sourceprep_models.ui.output import Output


@dataclass
class AppContext:
    output: Output
    config_path: str | None
    environ: Mapping[str, str]
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            from sourceprep_models.config import load_config

            self._config = load_config(self.config_path, self.environ, kinds=self.endpoint_kinds)
        return self._config

    @property
    def endpoint_kinds(self) -> EndpointKinds:
        """The provider registry's kinds and per-kind rules, which every config read is checked against."""
        from sourceprep_models.providers import endpoint_kinds

        return endpoint_kinds()

    def editable_config_path(self) -> Path:
        """The file `pin` writes: the one in use, else where the next run will look for one."""
        from sourceprep_models.config.locate import locate_config
        from sourceprep_models.paths import user_config_file

        location = locate_config(self.config_path, self.environ)
        return location.path if location.path is not None else user_config_file()

    def reload_config(self) -> Config:
        self._config = None
        return self.config

    def endpoint(self, name: str | None) -> Endpoint:
        config = self.config
        if name is None:
            return config.endpoints[config.default_endpoint]
        if name not in config.endpoints:
            known = ", ".join(config.endpoints)
            raise UsageError(f"no endpoint named {name!r} in the config; known endpoints: {known}")
        return config.endpoints[name]

    def endpoints(self, name: str | None) -> list[Endpoint]:
        return [self.endpoint(name)] if name else list(self.config.endpoints.values())

    def hooks(self) -> Hooks:
        from sourceprep_models.swap.hooks import Hooks

        return Hooks(info=self.output.info, warn=self.output.warn, debug=self.output.debug)

    def resolve_model(self, name: str, endpoint: str | None) -> tuple[ModelSpec | None, Endpoint]:
        """A configured model (by key or server name) and its endpoint, else the raw name on one."""
        from sourceprep_models.cli.options import check_model_name
        from sourceprep_models.swap.placement import locate

        check_model_name(name)
        if endpoint is not None:
            self.endpoint(endpoint)  # an unknown --endpoint is a usage error first
        return locate(self.config, name, endpoint)
