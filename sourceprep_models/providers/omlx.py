"""oMLX (MLX on Apple Silicon), through its model-status, load/unload and admin settings routes.

Section numbers refer to the project's servers.md notes; "source" means the upstream server code
(``omlx/server.py``, ``omlx/admin/routes.py``, ``omlx/admin/auth.py``, ``omlx/engine_pool.py``).

What this module relies on and the traps it avoids:

- State comes only from ``GET /v1/models/status`` (servers.md §5): one entry per model with
  ``loaded``, ``is_loading``, ``estimated_size``, ``actual_size`` (newer), ``pinned``,
  ``max_context_window``, plus the pool's ``final_ceiling`` and ``current_model_memory``.
  Servers from before the memory guard (§5: ``--max-model-memory`` era) report
  ``max_model_memory`` instead of ``final_ceiling`` and no ``actual_size``; both shapes are read.
  Plain ``/v1/models`` hides the load state (§5), so it is never used.
- The status listing also carries entries that are not models of their own: the built-in
  MarkItDown converter (``model_path`` ``builtin://…``, always "loaded", holds no memory) and
  exposed settings profiles (``source_model_id`` names the real model). Neither is reported as
  loaded; a profile shares its model's identity, and load/unload address the real model, because
  the routes look ids up without resolving profiles or aliases (source: ``get_entry(model_id)``).
- ``POST /v1/models/{id}/load`` blocks until the model is loaded (§5, added by PR #998) and answers
  "Already loaded" for a loaded model; a model the listing shows loaded is not sent again. Errors:
  404 unknown, 507 does not fit under the memory ceiling, 409 loading/busy, 500 other (the first
  version of the route answered every failure with 500, so memory words in a 500 still mean
  "does not fit"). A server older than the route answers FastAPI's generic 404 ``{"detail":
  "Not Found"}`` (or 405): that is ``Unsupported``, naming the upgrade and the admin UI.
- ``POST /v1/models/{id}/unload`` (§5): 400 "not loaded" means done; newer servers refuse a model
  that is serving requests with 409 (``model_busy``) after a short drain wait, and may answer 202
  "unloading" while it drains; both leave the waiting to the executor. Requests are never aborted.
- Activity (``reports_activity``): ``is_loading`` in the status listing is a load in progress. Requests
  are counted only for the whole server: ``GET /api/status`` answers ``active_requests`` and
  ``waiting_requests`` summed over every loaded engine (source: ``server_status``); the status
  listing has no per-model count (``EnginePool.get_status``). So a model is idle when that sum is 0,
  serving that sum when it is the only model loaded, and unknown otherwise (never guessed). A server
  without ``/api/status`` makes the requests unknown too.
- Errors on ``/v1/*`` come as OpenAI's ``{"error": {"message", "type", …}}``; admin routes and
  routes that do not exist answer FastAPI's ``{"detail": …}``. Every success is checked for its
  documented shape: a bare 200 proves nothing (§7).
- Context: oMLX allocates the KV cache as prompts grow; its per-model ``max_context_window`` is
  only the longest prompt it accepts (source: ``validate_context_window``). So a different
  context is never a reason to reload (``sets_context`` False); a load asking for more than the
  model's limit raises the limit through the settings API before loading.
- Pins and settings go through ``PUT /admin/api/models/{id}/settings`` (§5), which wants an admin
  session cookie, not a Bearer key (source: ``require_admin``). The session is obtained from
  ``POST /admin/api/login {"api_key": …}`` with the endpoint's API key (the server's main key; sub
  keys cannot log in) and kept in memory only. Without a key, or on a server with no API key set,
  these raise ``Unsupported`` naming the admin UI. A pin does not load the model; oMLX preloads
  pinned models at startup and never evicts them (§5).
- Auth: ``Authorization: Bearer <value of the env var named by api_key_env>``; the key and the
  session cookie never appear in a message (server texts are scrubbed of both).
- The URL may be the server root or its OpenAI base (``…/v1``); the suffix is dropped.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.constants import CONNECT_TIMEOUT_S, DEFAULT_UNLOAD_TIMEOUT_S
from sourceprep_models.errors import (
    DoesNotFit,
    ModelNotFound,
    ServerBusy,
    ServerError,
    Unsupported,
)
from sourceprep_models.providers import secrets
from sourceprep_models.providers._http import (
    HTTPEndpoint,
    error_message,
    int_or_none,
    json_body,
    str_or_none,
    strip_api_base,
)
from sourceprep_models.providers.base import (
    Activity,
    Capabilities,
    LoadedModel,
    LoadOutcome,
    LoadRequest,
    ModelInfo,
)
from sourceprep_models.providers.diagnostics import Fetch, ServerIdentity

STATUS = "/v1/models/status"
STATUS_SUMMARY = "/api/status"  # the server's own figures, requests summed over its models
LOGIN = "/admin/api/login"
SESSION_COOKIE = "omlx_admin_session"  # source: omlx/admin/auth.py SESSION_COOKIE_NAME

# Words of a load refused for memory: ModelTooLargeError / InsufficientMemoryError texts (source:
# omlx/exceptions.py), which the first version of the load route returned as a plain 500.
_NO_MEMORY_MARKERS = ("does not fit", "insufficient memory", "not enough memory", "out of memory")
_API_SUFFIXES = ("/v1",)


@dataclass(frozen=True)
class _Entry:
    """One entry of the status listing, with what load/unload need beyond ``ModelInfo``."""

    info: ModelInfo
    model_id: str  # the id the routes take: a profile's real model
    loaded: bool
    loading: bool
    size: int | None
    pinned: bool
    context: int | None  # max_context_window: the longest prompt the server accepts
    alias: str | None
    profile: bool
    builtin: bool

    @property
    def holds_memory(self) -> bool:
        """Its model is loaded or loading (a built-in converter holds nothing)."""
        return not self.builtin and (self.loaded or self.loading)

    @property
    def resident(self) -> bool:
        """Listed as loaded: a real model, not a profile of it (which would count it twice)."""
        return self.holds_memory and not self.profile


class OMLXProvider(HTTPEndpoint):
    server_label: ClassVar[str] = "oMLX"
    server_noun: ClassVar[str] = "an oMLX server"
    unreachable_fix: ClassVar[str] = "start it with `omlx serve` (or the oMLX menu-bar app)"
    after_deadline: ClassVar[str] = "oMLX keeps loading it in the background (check `sourceprep-models status`)"
    kind: ClassVar[str] = "omlx"
    capabilities = Capabilities(
        can_load=True,
        can_unload=True,
        can_pin=True,
        reports_memory=True,
        sets_context=False,
        pins_on_server=True,
        reports_activity=True,  # is_loading per model; requests only summed over the server (/api/status)
    )
    start_hint: ClassVar[str] = "start `omlx serve --model-dir DIR`"
    default_port: ClassVar[int | None] = 8000
    get_hint: ClassVar[str] = "put it in oMLX's model directory"

    def __init__(self, endpoint: Endpoint, client: httpx.Client | None = None) -> None:
        self._connect(endpoint, client, server_root(endpoint.url))
        self._session: str | None = None  # the admin session cookie, once logged in
        self._pool: dict[str, Any] = {}  # the pool figures of the last status listing
        self._cache: list[_Entry] = []

    @classmethod
    def detect(cls, fetch: Fetch) -> ServerIdentity | None:
        """``GET /v1/models/status`` with the pool's figures (servers.md §5)."""
        status = fetch("/v1/models/status").json
        pool_keys = ("final_ceiling", "max_model_memory", "loaded_count", "model_count")
        if not status or not isinstance(status.get("models"), list) or not any(key in status for key in pool_keys):
            return None
        return ServerIdentity(cls.kind, None, {}, "GET /v1/models/status")

    # -- queries -------------------------------------------------------------------------------

    def list_available(self) -> list[ModelInfo]:
        return [entry.info for entry in self._entries()]

    def describe(self, name: str) -> ModelInfo:
        # Identities never change, so a name already seen needs no new listing (the executor asks
        # for every loaded model's identity on each poll).
        for entry in self._cache:
            if name in (entry.info.name, entry.alias):
                return entry.info
        return self._find(name, self._entries()).info

    def list_loaded(self) -> list[LoadedModel]:
        return [
            LoadedModel(
                name=entry.info.name,
                size=entry.size,
                # Unified memory: MLX keeps all of it where the GPU works on it.
                size_vram=entry.size,
                context_length=entry.context,
                state="loaded" if entry.loaded else "loading",
                server_pinned=entry.pinned,
            )
            for entry in self._entries()
            if entry.resident
        ]

    def memory_ceiling(self) -> int | None:
        """The pool's memory ceiling in bytes (``final_ceiling``; ``max_model_memory`` on older servers).

        None when the server sets none (it reports 0 or null for "no limit")."""
        self._entries()
        return self._ceiling()

    def server_facts(self) -> dict[str, Any]:
        """What ``status`` can show about the server itself: its memory pool (from the last listing)."""
        if not self._pool:
            self._entries()
        return {
            "memory_ceiling": self._ceiling(),
            "model_memory": int_or_none(self._pool.get("current_model_memory")),
            "loaded_count": int_or_none(self._pool.get("loaded_count")),
            "model_count": int_or_none(self._pool.get("model_count")),
        }

    def _ceiling(self) -> int | None:
        ceiling = int_or_none(self._pool.get("final_ceiling"))
        if ceiling is None:
            ceiling = int_or_none(self._pool.get("max_model_memory"))
        return ceiling if ceiling is not None and ceiling > 0 else None

    def activity(self, name: str) -> Activity:
        """Loading from the status listing; requests where the server-wide count can only be this model's."""
        entries = self._entries()
        entry = self._find(name, entries)
        if entry.loading:
            return Activity(name, loading=True)
        if not entry.loaded:
            return Activity(name, requests=0)
        response = self._send("GET", STATUS_SUMMARY)
        body = json_body(response) if response.is_success else None
        counts = (
            [int_or_none(body.get(key)) for key in ("active_requests", "waiting_requests")]
            if isinstance(body, dict)
            else []
        )
        if not counts or None in counts:
            return Activity(name, requests=None)
        total = sum(count or 0 for count in counts)
        alone = {other.model_id for other in entries if other.resident} == {entry.model_id}
        return Activity(name, requests=total if total == 0 or alone else None)

    # -- actions -------------------------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadOutcome:
        started = time.monotonic()
        entry = self._find(request.name, self._entries())
        if entry.builtin:
            return LoadOutcome(name=request.name, wall_s=time.monotonic() - started)  # always ready
        wanted = int_or_none(request.options.get("num_ctx"))
        raised = False
        if wanted is not None and entry.context is not None and wanted > entry.context:
            self._put_settings(
                entry,
                {"max_context_window": wanted},
                purpose=f"raising the context limit of {entry.model_id} from {entry.context} to {wanted} tokens",
                manual=f"raise Max Context Window to {wanted} in {entry.model_id}'s settings in the admin UI at "
                f"{self._root}/admin, or load it with a smaller --ctx (at most {entry.context})",
            )
            raised = True
        if entry.loaded and not raised:
            return LoadOutcome(name=request.name, wall_s=time.monotonic() - started)
        # After a settings change the server may have unloaded it (a load-time setting), and
        # "Already loaded" is a success, so the load is sent either way.
        path = _model_path(entry.model_id, "load")
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=request.deadline_s)
        response = self._send("POST", path, model=entry.model_id, timeout=timeout, action="load")
        body = json_body(response)
        self._raise_for(response, body, entry.model_id, missing_route=self._no_load_route(entry.model_id))
        if not isinstance(body, dict) or body.get("status") != "ok":
            raise self._unexpected(path, body if body is not None else response.text)
        return LoadOutcome(name=request.name, wall_s=time.monotonic() - started)

    def unload(self, name: str) -> None:
        entry = self._find(name, self._entries())
        if not entry.holds_memory:
            return  # nothing loaded: nothing to send (and 400 "not loaded" would mean the same)
        path = _model_path(entry.model_id, "unload")
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=self.endpoint.unload_timeout_s or DEFAULT_UNLOAD_TIMEOUT_S)
        response = self._send("POST", path, model=entry.model_id, timeout=timeout)
        body = json_body(response)
        if response.status_code == 400 and "not loaded" in (self._text(body) or "").lower():
            return  # unloaded meanwhile (TTL, eviction, another client)
        if response.status_code == 409:
            raise ServerBusy(
                f"{self._where()} refused to unload {entry.model_id} ({self._text(body) or 'busy'}): it is loading "
                "or serving requests; retry when they finish",
                409,
            )
        self._raise_for(
            response,
            body,
            entry.model_id,
            missing_route=f"upgrade oMLX, or unload it from the admin UI at {self._root}/admin",
        )
        # 200 {"status": "ok"}, or 202 {"status": "unloading"} while its requests drain.
        if not isinstance(body, dict) or body.get("status") not in ("ok", "unloading"):
            raise self._unexpected(path, body if body is not None else response.text)

    def set_pinned(self, name: str, pinned: bool) -> None:
        """Mark the model pinned on the server (never evicted, preloaded at startup) or not; loads nothing."""
        entry = self._find(name, self._entries())
        verb = "pinning" if pinned else "unpinning"
        self._put_settings(
            entry,
            {"is_pinned": pinned},
            purpose=f"{verb} {entry.model_id}",
            manual=f"{'pin' if pinned else 'unpin'} it in its model settings in the admin UI at {self._root}/admin",
        )

    # -- the admin settings API ------------------------------------------------------------------

    def _put_settings(self, entry: _Entry, settings: dict[str, Any], *, purpose: str, manual: str) -> None:
        if entry.builtin:
            raise Unsupported(f"{entry.model_id} is built into oMLX at {self.endpoint.url} and has no settings")
        path = _model_path(entry.model_id, "settings", admin=True)
        response = self._send("PUT", path, json=settings, model=entry.model_id)
        if _needs_session(response):
            # require_admin accepts only the session cookie (or a server without key checks).
            self._login(purpose, manual)
            response = self._send("PUT", path, json=settings, model=entry.model_id)
        body = json_body(response)
        self._raise_for(response, body, entry.model_id, missing_route=f"upgrade oMLX, or {manual}")
        if not isinstance(body, dict) or body.get("success") is not True:
            raise self._unexpected(path, body if body is not None else response.text)
        self._cache = []  # the listing changed (pinned, max_context_window)

    def _login(self, purpose: str, manual: str) -> None:
        where = self._where()
        if self._secret() is None:
            raise Unsupported(
                f"{purpose} on {where} needs oMLX's admin settings API, which takes an admin login with the "
                "server's main API key; set api_key_env in the endpoint's config to an env var holding it (set one "
                f"on the server first if it has none), or {manual}"
            )
        response = self._send("POST", LOGIN, json={"api_key": self._secret(), "remember": False})
        body = json_body(response)
        if response.status_code == 400:  # "No API key configured": admin login is impossible
            raise Unsupported(
                f"{purpose} on {where} needs an admin login, but the server has no API key set "
                f"({self._text(body) or 'HTTP 400'}); set one in the admin UI and name its env var in api_key_env, "
                f"or {manual}"
            )
        if response.status_code in (401, 403):
            raise ServerError(
                f"{where} refused the admin login for {purpose} (HTTP {response.status_code}: "
                f"{self._text(body) or response.reason_phrase}); admin login takes the server's main API key, "
                f"not a sub key: check {self.endpoint.api_key_env}",
                response.status_code,
            )
        self._raise_for(response, body, None, missing_route=manual)
        self._session = _cookie(response, SESSION_COOKIE)
        if self._session is not None:
            secrets.remember(self._session)  # a secret like the key: scrubbed wherever text leaves
        self._client.cookies.clear()  # the session is sent explicitly, from memory only
        if self._session is None or not isinstance(body, dict) or body.get("success") is not True:
            raise self._unexpected(LOGIN, body if body is not None else response.text)

    # -- the listing -------------------------------------------------------------------------------

    def _entries(self) -> list[_Entry]:
        response = self._send("GET", STATUS)
        body = json_body(response)
        if response.status_code in (404, 405) and self._is_generic(body):
            raise ServerError(
                f"{self._where()} has no GET {STATUS} ({self._text(body)}); is it really an oMLX server? "
                "(point the endpoint's url at the server root, e.g. http://localhost:8000)"
            )
        self._raise_for(response, body, None)
        if not isinstance(body, dict) or not isinstance(body.get("models"), list):
            raise self._unexpected(STATUS, body if body is not None else response.text)
        self._pool = {key: value for key, value in body.items() if key != "models"}
        entries = [self._entry(item) for item in body["models"]]
        self._cache = entries
        return entries

    def _entry(self, item: object) -> _Entry:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise self._unexpected(STATUS, item)
        name: str = item["id"]
        source = str_or_none(item.get("source_model_id"))
        real = source or name
        model_type = str_or_none(item.get("model_type")) or "llm"
        builtin = str(item.get("model_path") or "").startswith("builtin://")
        estimated = int_or_none(item.get("estimated_size"))
        actual = int_or_none(item.get("actual_size"))
        return _Entry(
            info=ModelInfo(
                name=name,
                # A profile is another name for its model's one loaded instance.
                identity=f"omlx:{self._root}:{real}",
                size=estimated or actual or None,
                family=str_or_none(item.get("config_model_type")) or None,
                trained_context=int_or_none(item.get("model_context_length")),
                capabilities=_capabilities(model_type),
            ),
            model_id=real,
            loaded=item.get("loaded") is True,
            loading=item.get("is_loading") is True,
            size=actual or estimated or None,
            pinned=item.get("pinned") is True,
            context=int_or_none(item.get("max_context_window")),
            alias=str_or_none(item.get("model_alias")),
            profile=source is not None and source != name,
            builtin=builtin,
        )

    def _find(self, name: str, entries: list[_Entry]) -> _Entry:
        for entry in entries:
            if entry.info.name == name:
                return entry
        for entry in entries:  # the alias set in the model's settings
            if entry.alias == name:
                return entry
        names = [entry.info.name for entry in entries] + [entry.alias for entry in entries if entry.alias]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        if not close:
            close = [other for other in names if other.lower() == name.lower() or name in other][:1]
        hint = (
            f"did you mean {close[0]!r}?"
            if close
            else f"oMLX serves the models in its model directory; download it from the admin UI at {self._root}/admin"
        )
        raise ModelNotFound(f"model {name!r} not found on endpoint {self.endpoint.name!r}; {hint}")

    # -- one choke point for HTTP and its errors ----------------------------------------------

    def _raise_for(
        self, response: httpx.Response, body: object, model: str | None, *, missing_route: str | None = None
    ) -> None:
        """Raise the error a reply stands for; return when it is a success without an error field."""
        if response.is_success and error_message(body) is None:
            return
        message = self._text(body)
        where = self._where()
        status = response.status_code
        method, path = response.request.method, response.request.url.path
        if message is None:
            message = response.text.strip()[:200] or response.reason_phrase
        if response.is_success:
            raise ServerError(f"{where} answered {path} with an error: {message}", status)
        if status in (404, 405) and missing_route is not None and self._is_generic(body):
            raise Unsupported(
                f"{where} has no {method} {path} (HTTP {status}: {message}): this oMLX predates the route; "
                f"{missing_route}"
            )
        if status in (401, 403):
            if self.endpoint.api_key_env:
                fix = f"check the API key in the environment variable {self.endpoint.api_key_env}"
            else:
                fix = "set api_key_env in the endpoint's config to the name of an env var holding the API key"
            raise ServerError(f"{where} refused the request (HTTP {status}: {message}); {fix}", status)
        if status == 404 and model is not None:
            raise self._find_error(model, message)
        lowered = message.lower()
        if status == 507 or (status == 500 and any(marker in lowered for marker in _NO_MEMORY_MARKERS)):
            raise DoesNotFit(
                f"{model or 'the model'} does not fit in memory on {where}: {message.rstrip('.')}; unload other "
                "models or raise oMLX's --memory-guard tier"
            )
        if status == 409:
            raise ServerBusy(f"{where} is busy with {model or 'that model'} ({message}); retry in a moment", status)
        if status == 503:
            raise ServerBusy(f"{where} is not ready ({message}); retry in a moment", status)
        raise ServerError(f"{where} answered {status} to {method} {path}: {message}", status)

    def _text(self, body: object) -> str | None:
        """The server's error text: OpenAI's ``error`` on /v1 routes, FastAPI's ``detail`` elsewhere."""
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text: str | None = error["message"]  # the type ("server_error", …) adds nothing for a user
        else:
            text = error_message(body)
        if text is None and isinstance(body, dict) and "detail" in body:
            text = str(body["detail"])
        return self._scrub(text) if text is not None else None

    @staticmethod
    def _is_generic(body: object) -> bool:
        """FastAPI's answer for a route that does not exist, not one of oMLX's own errors."""
        return not (isinstance(body, dict) and "error" in body) and not (
            isinstance(body, dict) and "model" in str(body.get("detail", "")).lower()
        )

    def _no_load_route(self, model: str) -> str:
        return (
            f"upgrade oMLX (the load route came with PR #998, May 2026), or load {model} from the admin UI at "
            f"{self._root}/admin (or send it one request)"
        )

    def _find_error(self, model: str, message: str) -> ModelNotFound:
        try:
            self._find(model, self._entries())
        except ModelNotFound as exc:
            return exc
        except Exception:  # the suggestion is a courtesy; the not-found error stands regardless
            pass
        return ModelNotFound(f"model {model!r} not found on endpoint {self.endpoint.name!r}: {message}")

    def _headers(self, path: str) -> dict[str, str]:
        headers = super()._headers(path)
        if self._session and path.startswith("/admin/"):
            headers["Cookie"] = f"{SESSION_COOKIE}={self._session}"
        return headers


def server_root(url: str) -> str:
    """The server's root URL, whether the config gave the root or its OpenAI base (``…/v1``)."""
    return strip_api_base(url, _API_SUFFIXES)


def _model_path(model_id: str, action: str, *, admin: bool = False) -> str:
    prefix = "/admin/api/models" if admin else "/v1/models"
    return f"{prefix}/{quote(model_id, safe='')}/{action}"


def _needs_session(response: httpx.Response) -> bool:
    """require_admin's refusal: 401, or a redirect to the login page for a browser-like request."""
    return response.status_code == 401 or (
        response.is_redirect and response.headers.get("location", "").rstrip("/").endswith("/admin")
    )


def _cookie(response: httpx.Response, name: str) -> str | None:
    """A cookie's value from the reply's Set-Cookie headers (read directly: a cookie jar may refuse
    cookies from a bare IP or ``localhost``)."""
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key.strip() == name:
            value = rest.split(";", 1)[0].strip().strip('"')
            return value or None
    return None


def _capabilities(model_type: str) -> tuple[str, ...]:
    """oMLX's model type in the words ``ModelInfo`` uses (Ollama's)."""
    if model_type == "embedding":
        return ("embedding",)
    if model_type == "reranker":
        return ("rerank",)
    if model_type == "vlm":
        return ("completion", "vision")
    if model_type == "llm":
        return ("completion",)
    return (model_type,)  # audio_stt, audio_tts, …: not for chat completions
