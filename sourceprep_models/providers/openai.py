"""A cloud API or any other OpenAI-compatible endpoint: nothing to load, always ready.

Such an endpoint (OpenAI itself, a hosted gateway, or a local server used only through its
``/v1`` API, such as Jan, servers.md §6) serves models without anyone managing their residency,
and the OpenAI API has no load, unload or "what is loaded" call. So:

- ``list_available`` is ``GET {url}/models`` (``{"object": "list", "data": [{"id": …}, …]}``);
  ``describe`` checks the model is in that list (``ModelNotFound`` with "did you mean" otherwise).
- ``list_loaded`` returns ``[]`` without any request: a cloud model is never "resident", and
  ``status`` must not fail (or need the key) just to say so.
- ``load`` and ``unload`` are no-ops that return at once without a request; the class attribute
  ``always_ready = True`` lets the commands say "cloud endpoint: always ready, nothing to load"
  instead of timing or verifying anything.
- Capabilities (a choice): ``can_load`` and ``can_unload`` are False because nothing can be
  loaded or unloaded (the no-op methods exist so that a caller that ignores capabilities does
  not fail); ``can_pin`` is False (there is nothing to keep resident); ``reports_memory`` is False
  (no memory on this machine is involved). ``status`` therefore shows the endpoint as reachable
  and ready with no resident models and no memory figures.
- The URL is the API base that ``/models`` hangs off, e.g. ``https://api.openai.com/v1``.
- Auth: ``Authorization: Bearer <value>``, the value read from the environment variable named by
  the endpoint's ``api_key_env`` at the moment of each request and never stored on the provider.
  No ``api_key_env`` means no header (local servers without a key). A named variable that is
  unset or empty is a ``SourceprepError`` (exit 1, general failure: neither the config file nor
  the server is at fault) naming the variable. The key's value never appears in a message: server
  texts that echo it are scrubbed.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

import httpx

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.constants import CONNECT_TIMEOUT_S, READ_TIMEOUT_S
from sourceprep_models.errors import (
    DeadlineExceeded,
    ModelNotFound,
    ServerBusy,
    ServerError,
    ServerUnreachable,
    SourceprepError,
)
from sourceprep_models.providers import secrets
from sourceprep_models.providers._http import error_message, new_client
from sourceprep_models.providers.base import Capabilities, LoadedModel, LoadOutcome, LoadRequest, ModelInfo, Provider

MODELS_PATH = "/models"


class OpenAIProvider(Provider):
    kind: ClassVar[str] = "openai"
    capabilities = Capabilities(
        can_load=False, can_unload=False, can_pin=False, reports_memory=False, always_ready=True
    )
    server_label: ClassVar[str] = "an OpenAI-compatible API"
    start_hint: ClassVar[str] = "check the URL and the network"
    accepts_any_server: ClassVar[bool] = True
    url_is_api_base: ClassVar[bool] = True

    def __init__(self, endpoint: Endpoint, client: httpx.Client | None = None) -> None:
        self.endpoint = endpoint
        self._client = client or new_client(
            endpoint.url.rstrip("/"), httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        )
        self._models: dict[str, ModelInfo] | None = None

    def __repr__(self) -> str:
        return f"OpenAIProvider(endpoint={self.endpoint.name!r}, url={self.endpoint.url!r})"

    def close(self) -> None:
        self._client.close()

    # -- queries -------------------------------------------------------------------------------

    def list_available(self) -> list[ModelInfo]:
        body = self._request("GET", MODELS_PATH)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise self._unexpected(body)
        models = []
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise self._unexpected(item)
            owner = item.get("owned_by")
            models.append(
                ModelInfo(
                    name=item["id"],
                    identity=f"openai:{self.endpoint.name}:{item['id']}",
                    family=owner if isinstance(owner, str) else None,
                    remote=True,
                )
            )
        self._models = {model.name: model for model in models}
        return models

    def describe(self, name: str) -> ModelInfo:
        if self._models is None or name not in self._models:
            self.list_available()
        assert self._models is not None
        found = self._models.get(name)
        if found is not None:
            return found
        close = difflib.get_close_matches(name, list(self._models), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"it serves {len(self._models)} models; check the name"
        raise ModelNotFound(f"model {name!r} is not offered by endpoint {self.endpoint.name!r}; {hint}")

    def list_loaded(self) -> list[LoadedModel]:
        return []  # nothing is ever resident on our side; no request needed

    # -- actions: nothing to do --------------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadOutcome:
        return LoadOutcome(name=request.name, wall_s=0.0)

    def unload(self, name: str) -> None:
        return None

    # -- one choke point for HTTP and its errors ----------------------------------------------

    def _headers(self) -> dict[str, str]:
        variable = self.endpoint.api_key_env
        if not variable:
            return {}
        value = secrets.api_key(self.endpoint)  # a key no header can carry is a config error naming the variable
        if not value:
            raise SourceprepError(
                f"endpoint {self.endpoint.name!r} needs an API key, but the environment variable {variable} "
                f"(its api_key_env) is not set; export {variable}=<your key> and retry"
            )
        return {"Authorization": f"Bearer {value}"}

    def _request(self, method: str, path: str) -> Any:
        where = self._where()
        headers = self._headers()
        try:
            response = self._client.request(method, path, headers=headers)
        except (UnicodeEncodeError, httpx.LocalProtocolError):
            raise SourceprepError(
                f"the value of {self.endpoint.api_key_env} (the API key for endpoint {self.endpoint.name!r}) "
                "cannot be sent as an HTTP header; check it for stray characters"
            ) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServerUnreachable(
                f"cannot reach {where} ({self._scrub(str(exc))}); check the endpoint's url and the network"
            ) from None
        except httpx.TimeoutException:
            raise DeadlineExceeded(f"{where} did not answer {method} {path} within {READ_TIMEOUT_S:g}s") from None
        except httpx.TransportError as exc:
            raise ServerError(f"talking to {where} failed during {method} {path}: {self._scrub(str(exc))}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            if body is None:
                raise self._unexpected(response.text)
            return body
        status = response.status_code
        message = self._scrub(error_message(body) or response.text.strip()[:200] or response.reason_phrase)
        if status in (401, 403):
            variable = self.endpoint.api_key_env
            fix = (
                f"check the key in the environment variable {variable}"
                if variable
                else "set api_key_env in the endpoint's config to the name of an env var holding the key"
            )
            raise ServerError(f"{where} rejected the API key (HTTP {status}: {message}); {fix}", status)
        if status == 404:
            raise ServerError(
                f"{where} has no {path} (HTTP 404: {message}); the url must be the API base, e.g. "
                "https://api.openai.com/v1",
                status,
            )
        if status in (429, 503):
            raise ServerBusy(f"{where} is busy or rate-limited (HTTP {status}: {message}); retry later", status)
        raise ServerError(f"{where} answered {status} to {method} {path}: {message}", status)

    def _unexpected(self, body: object) -> ServerError:
        return ServerError(
            f"{self.endpoint.url}{MODELS_PATH} did not answer like an OpenAI-compatible API "
            f"({self._scrub(str(body))[:80]!r}); is endpoint {self.endpoint.name!r}'s url the API base (…/v1)?"
        )

    def _where(self) -> str:
        return f"the OpenAI-compatible API at {self.endpoint.url} (endpoint {self.endpoint.name!r})"

    def _scrub(self, text: str) -> str:
        """Some APIs quote the key they were sent in their error text; it never reaches a message."""
        return secrets.scrub(text)
