"""Model-server providers behind one Protocol (``base``), created through one registry.

The registry maps a provider kind (the ``kind`` of an endpoint in the config) to the module and
class that speak that server's protocol; modules are imported only when an endpoint of that kind
is used, so the CLI starts fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from sourceprep_models.errors import Unsupported

if TYPE_CHECKING:
    import httpx

    from sourceprep_models.config.schema import Endpoint
    from sourceprep_models.providers.base import Provider

_REGISTRY: dict[str, str] = {
    "ollama": "sourceprep_models.providers.ollama:OllamaProvider",
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


def create_provider(endpoint: Endpoint, client: httpx.Client | None = None) -> Provider:
    """The provider for an endpoint; ``client`` lets tests inject an httpx client or transport."""
    target = _REGISTRY.get(endpoint.kind)
    if target is None:
        raise Unsupported(
            f"endpoint {endpoint.name!r} is of kind {endpoint.kind!r}, which this version cannot drive yet; "
            f"supported kinds: {', '.join(registered_kinds())}"
        )
    module_name, _, class_name = target.partition(":")
    cls = getattr(import_module(module_name), class_name)
    provider: Provider = cls(endpoint, client=client)
    return provider
