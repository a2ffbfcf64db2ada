"""Model-server providers behind one base class (``base``), created through one registry.

The registry maps a provider kind (the ``kind`` of an endpoint in the config) to the module and
class that speak that server's protocol; modules are imported only when an endpoint of that kind
is used, so the CLI starts fast. It is the only list of kinds: code outside this package reads a
provider class's facts (``provider_class``) instead of comparing kind strings.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from sourceprep_models.errors import Unsupported

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from sourceprep_models.config.schema import Endpoint, EndpointKinds
    from sourceprep_models.providers.base import Provider

# In the order the config's error messages list the kinds.
_REGISTRY: dict[str, str] = {
    "ollama": "sourceprep_models.providers.ollama.provider:OllamaProvider",
    "lmstudio": "sourceprep_models.providers.lmstudio:LMStudioProvider",
    "llamacpp": "sourceprep_models.providers.llamacpp:LlamaCppProvider",
    "llamaswap": "sourceprep_models.providers.llamaswap:LlamaSwapProvider",
    "vllm": "sourceprep_models.providers.vllm:VLLMProvider",
    "omlx": "sourceprep_models.providers.omlx:OMLXProvider",
    "openai": "sourceprep_models.providers.openai:OpenAIProvider",
    "production-stack": "sourceprep_models.providers.production_stack:ProductionStackProvider",
}

# What the config checks per kind. It sits below this package in the layers, so it is handed these
# rules (``endpoint_kinds``) rather than importing them; kept here so no provider module is imported
# just to read a config.
#
# Ollama's own client resolves OLLAMA_HOST to its server's address (ollama.md §1): an endpoint of
# this kind without a url, and the one endpoint of a config that names none, go there.
_OLLAMA_HOST_KIND = "ollama"
# vLLM unloads by sleeping (servers.md §4): level 1 parks the weights in host RAM, level 2 discards them.
# Not "production-stack": its router cannot reload weights after level 2, so that provider uses level 1 only.
_SLEEP_LEVEL_KINDS = frozenset({"vllm"})


def register(kind: str, target: str) -> None:
    """Register a provider class as ``"package.module:ClassName"`` for an endpoint kind."""
    _REGISTRY[kind] = target


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)


def endpoint_kinds() -> EndpointKinds:
    """The registered kinds and their config rules: what every config read is validated against."""
    from sourceprep_models.config.schema import EndpointKinds

    return EndpointKinds(
        names=tuple(_REGISTRY),
        ollama_host_kind=_OLLAMA_HOST_KIND,
        sleep_level_kinds=_SLEEP_LEVEL_KINDS,
    )


def provider_class(kind: str, *, endpoint: str | None = None) -> type[Provider]:
    """The class that drives servers of ``kind``: its class attributes are what is known of that kind of
    server before connecting (its name, how to start it, how to recognise it)."""
    target = _REGISTRY.get(kind)
    if target is None:
        what = f"endpoint {endpoint!r} is of kind {kind!r}" if endpoint is not None else f"kind {kind!r}"
        raise Unsupported(
            f"{what}, which this version cannot drive yet; supported kinds: {', '.join(registered_kinds())}"
        )
    module_name, _, class_name = target.partition(":")
    cls: type[Provider] = getattr(import_module(module_name), class_name)
    return cls


def provider_classes() -> dict[str, type[Provider]]:
    """Every registered kind's class, in registration order (imports every provider module)."""
    return {kind: provider_class(kind) for kind in _REGISTRY}


def server_facts(kind: str) -> type[Provider]:
    """What is known of a kind of server: its provider class, or for a kind no provider drives the base
    class, whose defaults say nothing particular ("start the server")."""
    if kind in _REGISTRY:
        return provider_class(kind)
    from sourceprep_models.providers.base import Provider

    return Provider


def server_label(kind: str) -> str:
    """How messages name a kind of server ("LM Studio"); the kind itself when it has no label."""
    return server_facts(kind).server_label or kind


def create_provider(endpoint: Endpoint, client: httpx.Client | None = None) -> Provider:
    """The provider for an endpoint; ``client`` lets tests inject an httpx client or transport."""
    # Every provider class takes (endpoint, client=...); the base class declares no constructor.
    factory: Callable[..., Provider] = provider_class(endpoint.kind, endpoint=endpoint.name)
    return factory(endpoint, client=client)
