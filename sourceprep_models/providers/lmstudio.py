"""LM Studio, through its native REST API (section numbers refer to the project's servers.md notes).

What this module relies on and the traps it avoids:

- Two API generations. 0.4.0 added REST v1 with ``POST /api/v1/models/load`` and ``/unload``
  (servers.md §1.1, §1.3). Older servers only offer v0, which lists models and their ``state`` but
  cannot load or unload over HTTP (§1.2). The generation is detected from the listing: a v1 answer
  of the documented shape means v1; a 404 or a reply of the wrong shape from v1 followed by a
  well-formed v0 listing means an old server. On an old server, listing works and ``load`` /
  ``unload`` raise ``Unsupported`` naming the ``lms`` command to run instead (§1.5).
- A bare 200 proves nothing: LM Studio answers unknown routes with 200 (§1.3 errors, §7), so
  every reply is checked for the documented JSON shape and anything else is a ``ServerError``
  naming the endpoint and path.
- Loaded models are *instances* (``loaded_instances[].id``), and unload takes an instance id, not
  the model key (§1.3). ``unload(name)`` unloads every instance of that key.
- A second load of an already-loaded key may create another instance (§1.3), so ``load`` first
  looks at ``loaded_instances``: loaded with the wanted context already → nothing is sent; loaded
  with a different context → that key's instances are unloaded, then it is loaded again with the
  new context (the Ollama equivalent of a runner reload on a changed ``num_ctx``).
- Context length: ``request.options["num_ctx"]`` becomes the load body's ``context_length``
  (§1.3). Without it LM Studio uses its own default (4096 unless changed), too small for the
  8K-32K prompts of deep tasks, so configured models should set ``context_length``.
- Pins and TTL: the REST load documents no ``ttl`` (§1.3), and models loaded explicitly have no
  idle TTL and are ignored by JIT auto-evict (§1.4). So every load through this provider is
  already "always available"; ``keep_alive`` cannot be expressed and is ignored. The listing does
  not say whether an instance was JIT-loaded (with a TTL) or loaded explicitly, so
  ``LoadedModel.expires_at`` is always ``None`` (unknown).
- Memory: the listing reports the weights' file size (``size_bytes``) but nothing about resident
  or GPU memory, so ``reports_memory`` is False; ``LoadedModel.size`` carries the file size as
  the best lower bound available and ``size_vram`` stays unknown.
- Progress: ``POST /api/v1/models/load`` blocks until the model is loaded and reports nothing on the
  way (§1.3); ``model_load.progress`` events exist only in a streaming ``/api/v1/chat`` that has to
  load on the fly, and ``on_load_progress`` only through the Python SDK (§1.6). So a load never
  calls ``request.on_progress``; the progress line shows the seconds (and the weights' page-cache
  residency where their files are known).
- Auth: when "Require Authentication" is on, requests need ``Authorization: Bearer <token>``
  (§1.3); the token is read from the environment variable named by ``api_key_env`` and never
  appears in a message (server texts are scrubbed of it too).
- The URL may be given as the server root (``http://localhost:1234``) or as an API base
  (``…/v1``, ``…/api/v1``, ``…/api/v0``); the suffix is dropped.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.constants import CONNECT_TIMEOUT_S
from sourceprep_models.errors import (
    DoesNotFit,
    ModelNotFound,
    ServerBusy,
    ServerError,
    Unsupported,
)
from sourceprep_models.providers._http import (
    HTTPEndpoint,
    error_message,
    int_or_none,
    json_body,
    snippet,
    str_or_none,
    strip_api_base,
)
from sourceprep_models.providers.base import Capabilities, LoadedModel, LoadOutcome, LoadRequest, ModelInfo
from sourceprep_models.providers.diagnostics import EndpointUses, Fetch, Finding, ServerIdentity

V1_MODELS = "/api/v1/models"
V0_MODELS = "/api/v0/models"
V1_LOAD = "/api/v1/models/load"
V1_UNLOAD = "/api/v1/models/unload"

# Texts of a load refused for lack of memory: the guardrail refusal (servers.md §1.3) and OOM words.
_NO_MEMORY_MARKERS = ("insufficient system resources", "out of memory", "out-of-memory", "cudamalloc failed")
_API_SUFFIXES = ("/api/v1", "/api/v0", "/v1")


@dataclass(frozen=True)
class _Entry:
    """One model of the listing and the ids and context lengths of its loaded instances."""

    info: ModelInfo
    instances: tuple[tuple[str, int | None], ...] = ()


class LMStudioProvider(HTTPEndpoint):
    server_label: ClassVar[str] = "LM Studio"
    server_noun: ClassVar[str] = "an LM Studio server"
    unreachable_fix: ClassVar[str] = (
        "start its server with `lms server start` (or `lms daemon up`, or the app's Developer tab)"
    )
    kind: ClassVar[str] = "lmstudio"
    # The REST API's loaded_instances carry only their load config: no request or queue counts (servers.md
    # §1.3; `lms ps --json` has `status`/`queued`, but through the SDK's websocket, not HTTP), so no activity.
    capabilities = Capabilities(can_load=True, can_unload=True, can_pin=True, reports_memory=False)
    start_hint: ClassVar[str] = "start its server with `lms server start` (or the app's Developer tab)"
    default_port: ClassVar[int | None] = 1234
    get_hint: ClassVar[str] = "download it with `lms get {name}`"
    default_context: ClassVar[int | None] = 4096

    def __init__(self, endpoint: Endpoint, client: httpx.Client | None = None) -> None:
        self._connect(endpoint, client, server_root(endpoint.url))
        self._api: str | None = None  # "v1" or "v0", once the listing has told us

    # -- facts about LM Studio servers ---------------------------------------------------------

    @classmethod
    def detect(cls, fetch: Fetch) -> ServerIdentity | None:
        """``GET /lmstudio-greeting`` → ``{"lmstudio": true}`` (the check ``lms`` itself makes,
        lmstudio-ai/lms ``src/createClient.ts``), then REST v1 (0.4.0+) or only v0."""
        greeting = fetch("/lmstudio-greeting").json
        evidence = "GET /lmstudio-greeting"
        v1 = fetch(V1_MODELS).json
        if isinstance(v1, dict) and isinstance(v1.get("models"), list):
            return ServerIdentity(
                cls.kind, "0.4.0 or later (REST v1)", {"api": "v1"}, evidence if greeting else "REST v1"
            )
        v0 = fetch(V0_MODELS).json
        if (greeting and greeting.get("lmstudio") is True) or (
            isinstance(v0, dict) and isinstance(v0.get("data"), list)
        ):
            return ServerIdentity(cls.kind, "older than 0.4.0 (REST v0 only)", {"api": "v0"}, evidence)
        return None

    def support(self, identity: ServerIdentity, uses: EndpointUses) -> Finding:
        if identity.facts.get("api") == "v1":
            return Finding.ok("loads and unloads over HTTP (REST v1)")
        summary = "LM Studio older than 0.4.0 cannot load or unload models over HTTP"
        fix = "upgrade LM Studio to 0.4.0 or later (until then load models with `lms load MODEL`)"
        if uses.models:
            return Finding.problem(f"{summary}, and the config has {', '.join(uses.models)} on it", fix)
        return Finding.warning(summary, fix)

    # -- queries -------------------------------------------------------------------------------

    def api_version(self) -> str:
        """``"v1"`` (0.4.0+, can load/unload) or ``"v0"`` (older: list only)."""
        self._entries()
        assert self._api is not None
        return self._api

    def list_available(self) -> list[ModelInfo]:
        return [entry.info for entry in self._entries()]

    def describe(self, name: str) -> ModelInfo:
        return self._find(name, self._entries()).info

    def list_loaded(self) -> list[LoadedModel]:
        loaded = []
        for entry in self._entries():
            for _, context in entry.instances:
                loaded.append(LoadedModel(name=entry.info.name, size=entry.info.size, context_length=context))
        return loaded

    # -- actions -------------------------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadOutcome:
        started = time.monotonic()
        entry = self._find(request.name, self._entries())
        key = entry.info.name
        context = int_or_none(request.options.get("num_ctx"))
        if self._api != "v1":
            flag = f" --context-length {context}" if context is not None else ""
            raise Unsupported(
                f"LM Studio at {self.endpoint.url} (endpoint {self.endpoint.name!r}) is older than 0.4.0 and "
                f"cannot load models over HTTP; run `lms load {key}{flag}` instead, or upgrade LM Studio"
            )
        if entry.instances:
            if context is None or any(ctx == context for _, ctx in entry.instances):
                # Loading again could start a second instance (servers.md §1.3); it is already there.
                return LoadOutcome(name=request.name, wall_s=time.monotonic() - started)
            # Loaded with another context: replace it rather than keep two copies in memory.
            self._unload_instances(entry)
        body: dict[str, Any] = {"model": key}
        if context is not None:
            body["context_length"] = context
        # The load blocks until the model is ready (§1.3); only the caller's deadline bounds it.
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=request.deadline_s)
        reply = self._json("POST", V1_LOAD, json=body, model=key, timeout=timeout, action="load")
        status = reply.get("status") if isinstance(reply, dict) else None
        if (
            not isinstance(reply, dict)
            or not isinstance(reply.get("instance_id"), str)
            or status not in (None, "loaded")
        ):
            raise self._unexpected(V1_LOAD, reply)
        server_s = reply.get("load_time_seconds")
        return LoadOutcome(
            name=request.name,
            wall_s=time.monotonic() - started,
            server_load_s=float(server_s) if isinstance(server_s, int | float) else None,
        )

    def unload(self, name: str) -> None:
        entry = self._find(name, self._entries())
        if self._api != "v1":
            raise Unsupported(
                f"LM Studio at {self.endpoint.url} (endpoint {self.endpoint.name!r}) is older than 0.4.0 and "
                f"cannot unload models over HTTP; run `lms unload {entry.info.name}` (or `lms unload --all`) "
                "instead, or upgrade LM Studio"
            )
        self._unload_instances(entry)

    def _unload_instances(self, entry: _Entry) -> None:
        for instance_id, _ in entry.instances:
            reply = self._json("POST", V1_UNLOAD, json={"instance_id": instance_id}, model=entry.info.name)
            if not isinstance(reply, dict) or not isinstance(reply.get("instance_id"), str):
                raise self._unexpected(V1_UNLOAD, reply)

    # -- the listing, in either API generation ---------------------------------------------------

    def _entries(self) -> list[_Entry]:
        if self._api != "v0":
            response = self._send("GET", V1_MODELS)
            body = json_body(response)
            if response.is_success and isinstance(body, dict) and isinstance(body.get("models"), list):
                self._api = "v1"
                return [self._v1_entry(item) for item in body["models"]]
            if self._api == "v1" or not (response.is_success or response.status_code == 404):
                # A server known to be v1, or a real error (401, 500…): report it, do not fall back.
                self._raise_for(response, body, None)
                raise self._unexpected(V1_MODELS, body if body is not None else response.text)
        # No v1 listing: a pre-0.4.0 server answers v0 (servers.md §1.2, §7).
        response = self._send("GET", V0_MODELS)
        body = json_body(response)
        if response.is_success and isinstance(body, dict) and isinstance(body.get("data"), list):
            self._api = "v0"
            return [self._v0_entry(item) for item in body["data"]]
        if not response.is_success and response.status_code != 404:
            self._raise_for(response, body, None)
        raise ServerError(
            f"{self._where()} answered neither GET {V1_MODELS} nor GET {V0_MODELS} like LM Studio "
            f"({snippet(body if body is not None else response.text)}); is it really an LM Studio server?"
        )

    def _v1_entry(self, item: object) -> _Entry:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise self._unexpected(V1_MODELS, item)
        raw_instances = item.get("loaded_instances") or []
        if not isinstance(raw_instances, list):
            raise self._unexpected(V1_MODELS, raw_instances)
        instances = []
        for instance in raw_instances:
            if not isinstance(instance, dict) or not isinstance(instance.get("id"), str):
                raise self._unexpected(V1_MODELS, instance)
            config = instance.get("config")
            context = int_or_none(config.get("context_length")) if isinstance(config, dict) else None
            instances.append((instance["id"], context))
        quantization = item.get("quantization")
        capabilities = item.get("capabilities")
        return _Entry(
            info=ModelInfo(
                name=item["key"],
                identity=f"lmstudio:{item['key']}",
                size=int_or_none(item.get("size_bytes")),
                family=str_or_none(item.get("architecture")),
                parameter_size=str_or_none(item.get("params_string")),
                quantization=str_or_none(quantization.get("name")) if isinstance(quantization, dict) else None,
                trained_context=int_or_none(item.get("max_context_length")),
                capabilities=_capabilities(item.get("type"), capabilities if isinstance(capabilities, dict) else {}),
            ),
            instances=tuple(instances),
        )

    def _v0_entry(self, item: object) -> _Entry:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise self._unexpected(V0_MODELS, item)
        flags = item.get("capabilities")
        extra = {str(flag): True for flag in flags} if isinstance(flags, list) else {}
        return _Entry(
            info=ModelInfo(
                name=item["id"],
                identity=f"lmstudio:{item['id']}",
                family=str_or_none(item.get("arch")),
                quantization=str_or_none(item.get("quantization")),
                trained_context=int_or_none(item.get("max_context_length")),
                capabilities=_capabilities(item.get("type"), extra),
            ),
            # v0 says only loaded / not-loaded; the instance id is unknown and unused (no unload in v0).
            instances=((item["id"], None),) if item.get("state") == "loaded" else (),
        )

    def _find(self, name: str, entries: list[_Entry]) -> _Entry:
        for entry in entries:
            if entry.info.name == name:
                return entry
        for entry in entries:  # an instance id (e.g. one set with `lms load --identifier`)
            if any(instance_id == name for instance_id, _ in entry.instances):
                return entry
        names = [entry.info.name for entry in entries]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        if not close:
            close = [other for other in names if other.lower() == name.lower() or name in other][:1]
        hint = f"did you mean {close[0]!r}?" if close else f"see `lms ls`; download it with `lms get {name}`"
        raise ModelNotFound(f"model {name!r} not found on endpoint {self.endpoint.name!r}; {hint}")

    # -- one choke point for HTTP and its errors ----------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        model: str | None = None,
        timeout: httpx.Timeout | None = None,
        action: str = "request",
    ) -> Any:
        response = self._send(method, path, json=json, model=model, timeout=timeout, action=action)
        body = json_body(response)
        self._raise_for(response, body, model)
        if body is None:
            raise self._unexpected(path, response.text)
        return body

    def _raise_for(self, response: httpx.Response, body: object, model: str | None) -> None:
        """Raise the error a reply stands for; return when it is a success without an error field."""
        message = error_message(body)
        if response.is_success and message is None:
            return
        where = self._where()
        status = response.status_code
        if message is None:
            message = response.text.strip()[:200] or response.reason_phrase
        message = self._scrub(message)
        path = response.request.url.path
        if response.is_success:  # "Returning 200 anyway" (servers.md §1.3): an error in a 200
            raise ServerError(f"{where} answered {path} with an error: {message}", status)
        if status in (401, 403):
            if self.endpoint.api_key_env:
                fix = f"check the API token in the environment variable {self.endpoint.api_key_env}"
            else:
                fix = "set api_key_env in the endpoint's config to the name of an env var holding an API token"
            raise ServerError(f"{where} refused the request (HTTP {status}: {message}); {fix}", status)
        lowered = message.lower()
        if status == 404 and model is not None and "not found" in lowered:
            raise self._find_error(model)
        if any(marker in lowered for marker in _NO_MEMORY_MARKERS):
            raise DoesNotFit(
                f"{model or 'the model'} does not fit in memory on {where}: {message}; unload other models or "
                "load it with a smaller context (--ctx)"
            )
        if "model_load_failed" in lowered:
            raise ServerError(
                f"{where} failed to load {model or 'the model'}: {message}; the engine often fails like this when "
                "memory runs out, so try a smaller context (--ctx) or unload other models",
                status,
            )
        if status == 503:
            raise ServerBusy(f"{where} is busy ({message}); retry in a moment", status)
        raise ServerError(f"{where} answered {status} to {response.request.method} {path}: {message}", status)

    def _find_error(self, model: str) -> ModelNotFound:
        try:
            self._find(model, self._entries())
        except ModelNotFound as exc:
            return exc
        except Exception:  # the suggestion is a courtesy; the not-found error stands regardless
            pass
        return ModelNotFound(f"model {model!r} not found on endpoint {self.endpoint.name!r}; see `lms ls`")


def server_root(url: str) -> str:
    """The server's root URL, whether the config gave the root or one of its API bases."""
    return strip_api_base(url, _API_SUFFIXES)


def _capabilities(kind: object, flags: dict[str, Any]) -> tuple[str, ...]:
    """LM Studio's model type and flags in the words ``ModelInfo`` uses (Ollama's)."""
    found = ["embedding"] if kind in ("embedding", "embeddings") else ["completion"]
    if kind == "vlm" or flags.get("vision"):
        found.append("vision")
    if flags.get("trained_for_tool_use") or flags.get("tool_use"):
        found.append("tools")
    return tuple(found)
