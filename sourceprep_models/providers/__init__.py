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

    from sourceprep_models.config.schema import Endpoint
    from sourceprep_models.providers.base import Provider

_REGISTRY: dict[str, str] = {
    "ollama": "sourceprep_models.providers.ollama.provider:OllamaProvider",
    "lmstudio": "sourceprep_models.providers.lmstudio:LMStudioProvider",
    "openai": "sourceprep_models.providers.openai:OpenAIProvider",
    "llamacpp": "sourceprep_models.providers.llamacpp:LlamaCppProvider",
    "vllm": "sourceprep_models.providers.vllm:VLLMProvider",
    "llamaswap": "sourceprep_models.providers.llamaswap:LlamaSwapProvider",
    "omlx": "sourceprep_models.providers.omlx:OMLXProvider",
}


def register(kind: str, target: str) -> None:
    """Register a provider class as ``"package.module:ClassName"`` for an endpoint kind."""
    _REGISTRY[kind] = target


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)


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
