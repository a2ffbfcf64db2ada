"""llama-swap, the proxy that starts and stops one model-server process per model (section numbers
refer to the project's servers.md notes; file names to llama-swap's own source).

What this module relies on and the traps it avoids:

- The models are those of llama-swap's config.yaml. ``GET /v1/models`` hides ``unlisted`` models
  and, with ``includeAliasesInList``, lists each alias as if it were a model of its own (§3.3).
  The whole table (ids, ``aliases``, ``unlisted``, peers' models) is in the first ``modelStatus``
  event of ``GET /api/events``, the stream the web UI reads (``apigroup.go``); the provider reads
  that one event, closes the stream, and falls back to ``/v1/models`` on a server without it.
  An alias resolves to its model, so both names share one identity and one resident instance.
- What runs: ``GET /running`` → ``{"running": [{"model", "state", …}]}`` (§3.3). ``ready`` is
  loaded, ``starting`` is loading; ``stopping``, ``stopped`` and ``shutdown`` are left out. The
  gin-based builds with group routing list ready processes only (``proxymanager.go``).
- Load: llama-swap has no load endpoint (§3.3). ``GET /upstream/<model>/health`` makes it swap
  the model in (stopping whatever its group or matrix rules say), wait for the upstream's health
  check, then proxy that upstream's own ``/health``; the maintainer recommends this for
  preloading (llama-swap#156). The swap runs on llama-swap's side, so a client that gives up does
  not cancel it. The upstream's answer decides nothing: the load succeeded when ``/running`` then
  lists the model as ready (a server without ``/health`` answers 404 but is loaded). A model that
  is already ready is not requested again.
- Unknown models: 404 "model not found" (400 "model id required in path" on gin-based builds);
  both become ``ModelNotFound`` with "did you mean". A failed start (the ``cmd`` exits, or the
  health check gives up after ``healthCheckTimeout``) is a 502/500 "unable to start process: …".
  llama-swap has no out-of-memory error and does not say why, so the message points at its
  upstream log, where the model server's own output is.
- Unload: ``POST /api/models/unload/<model>`` → 200 ``OK`` once the process has stopped, 404
  "model not found". ``unload_all()`` sends ``POST /api/models/unload`` → ``{"msg": "ok"}``, or
  the legacy ``GET /unload`` → ``OK`` on builds without the ``/api`` group. The single-model route
  arrived in v161 (Sept 2025); older builds answer it with a bare 404, so a bare 404 for a model
  the server lists means an old server → ``Unsupported`` naming the upgrade and ``GET /unload``.
- Activity (``reports_activity``): ``starting`` in ``/running`` is a load in progress. Requests in
  flight come from the ``inflight`` event of ``/api/events``: since the router rewrite (#790, May
  2026) its first one is ``{"operation": "snapshot", "requests": [{"model", …}]}``, one entry per
  request with the model's real id (``internal/server/inflight.go``, ``inflightTracker.Current``;
  sent at connect by ``apigroup.go``, ``handleAPIEvents``); builds from #516 (Feb 2026) send only
  ``{"total": n}`` over all models, which proves idleness at 0 and nothing per model otherwise. An
  explicit unload does not wait for them: the scheduler's ``OnUnload``
  (``internal/router/scheduler/fifo.go``) stops the process at once and the requests die with it;
  only llama-swap's own swaps wait (``conflictsWithInFlight``).
- Pins: llama-swap's pin is a ``persistent`` group in config.yaml (§3.2), and no API exposes
  groups: not ``/running``, ``/v1/models`` (``meta.llamaswap`` is only the model's own
  ``metadata`` block), ``/api/events`` nor ``/api/version``. So ``server_pinned`` is always False
  and pins stay in config.yaml (``can_pin`` False).
- Context: fixed by each model's ``cmd`` (``sets_context`` False). Builds whose ``/running``
  includes ``cmd`` show it: ``--ctx-size`` (llama-server) or ``--max-model-len`` (vLLM) is read
  from there. Nothing reports memory (``reports_memory`` False).
- Plain text: several routes answer ``OK``; those bodies are checked too, so a 200 HTML page from
  something else on that port is a ``ServerError``. Errors are JSON ``{"error": …}`` because
  every request asks for ``Accept: application/json`` (gin builds answer plain text otherwise).
- Auth: with ``apiKeys`` in config.yaml every route but ``/health`` wants a key; it is sent as
  ``Authorization: Bearer`` from the environment variable named by ``api_key_env``, never stored
  or shown (server texts are scrubbed of it).
- The URL is llama-swap's root; a trailing ``/v1`` (or ``/openai/v1``) is dropped.
"""

from __future__ import annotations

import difflib
import json
import re
import time
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.constants import CONNECT_TIMEOUT_S, DEFAULT_UNLOAD_TIMEOUT_S
from sourceprep_models.errors import ModelNotFound, ServerBusy, ServerError, SourceprepError, Unsupported
from sourceprep_models.providers._http import (
    HTTPEndpoint,
    error_message,
    json_body,
    snippet,
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
    ModelState,
)
from sourceprep_models.providers.diagnostics import Fetch, ServerIdentity

V1_MODELS = "/v1/models"
RUNNING = "/running"
EVENTS = "/api/events"
UNLOAD_ALL = "/api/models/unload"
LEGACY_UNLOAD = "/unload"

_STATES: dict[str, ModelState] = {"ready": "loaded", "starting": "loading"}
_API_SUFFIXES = ("/openai/v1", "/v1")
# llama-swap's own "no such model" texts (apigroup.go, api.go; proxymanager.go on gin builds).
_NOT_FOUND_MARKERS = ("model not found", "model id required in path")
# The first events carry the log history; give up on the stream rather than read it for ever.
_EVENTS_MAX_CHARS = 8_000_000
_EVENTS_READ_TIMEOUT_S = 5.0
_CTX_FLAG = re.compile(r"(?:--ctx-size|--max-model-len)(?:=|\s+)(\d+)")
_SHORT_CTX_FLAG = re.compile(r"(?<!\S)-c(?:=|\s+)(\d+)")


@dataclass(frozen=True)
class _Entry:
    """One model of llama-swap's config, or of a peer's."""

    info: ModelInfo
    aliases: tuple[str, ...] = ()
    peer: str | None = None


class LlamaSwapProvider(HTTPEndpoint):
    server_label: ClassVar[str] = "llama-swap"
    server_noun: ClassVar[str] = "a llama-swap server"
    unreachable_fix: ClassVar[str] = "start llama-swap (e.g. `llama-swap --config config.yaml --listen :8080`)"
    after_deadline: ClassVar[str] = "llama-swap keeps starting it (check `sourceprep-models status`)"
    kind: ClassVar[str] = "llamaswap"
    capabilities = Capabilities(
        can_load=True,
        can_unload=True,
        can_pin=False,
        reports_memory=False,
        sets_context=False,
        unloads_all_at_once=True,
        reports_activity=True,  # /running's "starting", and the inflight snapshot of /api/events
    )
    start_hint: ClassVar[str] = "start `llama-swap --config config.yaml`"
    default_port: ClassVar[int | None] = 8080
    get_hint: ClassVar[str] = "add it to llama-swap's config.yaml"
    # Its Ollama compatibility layer answers /api/version and /api/ps (llama-swap internal/ollama/handlers.go).
    detect_first: ClassVar[bool] = True

    def __init__(self, endpoint: Endpoint, client: httpx.Client | None = None) -> None:
        self._connect(endpoint, client, server_root(endpoint.url))
        self._catalogue: list[_Entry] | None = None  # the config's models, read once per provider
        self._no_inflight = False  # its /api/events has no inflight event (or no stream at all)

    @classmethod
    def detect(cls, fetch: Fetch) -> ServerIdentity | None:
        """``GET /running`` lists the running models (servers.md §3)."""
        running = fetch("/running").json
        if not running or not isinstance(running.get("running"), list):
            return None
        body = fetch("/api/version").json
        version = body.get("version") if body else None
        return ServerIdentity(cls.kind, version if isinstance(version, str) else None, {}, "GET /running")

    def context_fix(self, wanted: int) -> str | None:
        return f"raise --ctx-size to {wanted} in its cmd in llama-swap's config.yaml"

    def pin_advice(self, name: str) -> str:
        """What `pin` says instead: llama-swap's pins live in its own config (servers.md §3.2)."""
        model = self._find(name).info.name
        return (
            f"llama-swap decides what stays loaded by its own group rules and no API sets them; pin {model} in "
            f"llama-swap's config.yaml with a persistent group, e.g. groups: {{keep: {{persistent: true, swap: false, "
            f"exclusive: false, members: [{model}]}}}}"
        )

    # -- queries -------------------------------------------------------------------------------

    def list_available(self) -> list[ModelInfo]:
        return [entry.info for entry in self._entries()]

    def describe(self, name: str) -> ModelInfo:
        return self._find(name).info

    def list_loaded(self) -> list[LoadedModel]:
        body = self._json("GET", RUNNING)
        if not isinstance(body, dict) or not isinstance(body.get("running"), list):
            raise self._unexpected(RUNNING, body)
        loaded = []
        for item in body["running"]:
            if not isinstance(item, dict) or not isinstance(item.get("model"), str):
                raise self._unexpected(RUNNING, item)
            # Entries without a state come from builds that listed ready processes only.
            state = _STATES.get(str(item.get("state", "ready")))
            if state is None:
                continue  # stopping / stopped / shutdown: on its way out, or gone
            loaded.append(LoadedModel(name=item["model"], context_length=_context_from(item.get("cmd")), state=state))
        return loaded

    def activity(self, name: str) -> Activity:
        """Loading while ``/running`` says ``starting``; the requests in flight from ``/api/events``."""
        entry = self._find(name)
        model = entry.info.name
        state = self._state_of(model) if entry.peer is None else None
        if state == "loading":
            return Activity(name, loading=True)
        if state != "loaded":
            return Activity(name, requests=0)  # nothing of ours runs it (a peer's model is never evicted here)
        # Builds before #516 send no inflight event: the stream is then read to its timeout, so only once.
        snapshot = None if self._no_inflight else self._first_event("inflight")
        self._no_inflight = snapshot is None
        requests = snapshot.get("requests") if isinstance(snapshot, dict) else None
        if isinstance(requests, list):
            return Activity(name, requests=sum(1 for r in requests if isinstance(r, dict) and r.get("model") == model))
        total = snapshot.get("total") if isinstance(snapshot, dict) else None
        return Activity(name, requests=0 if total == 0 else None)  # a total over all models says no more

    # -- actions -------------------------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadOutcome:
        started = time.monotonic()
        entry = self._find(request.name)
        model = entry.info.name
        if entry.peer is not None:
            raise self._peer_model(request.name, entry.peer, "load")
        if self._state_of(model) == "loaded":
            return LoadOutcome(name=request.name, wall_s=time.monotonic() - started)
        path = f"/upstream/{quote(model, safe='/')}/health"
        # llama-swap answers once the model is ready (or its start failed); only our deadline bounds it.
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=request.deadline_s)
        response = self._send("GET", path, model=model, timeout=timeout, action="load")
        wall = time.monotonic() - started
        state = self._state_of(model)
        if state == "loaded":
            return LoadOutcome(name=request.name, wall_s=wall)
        self._raise_for(response, model, loading=True)
        raise ServerError(
            f"{self._where()} answered GET {path} with HTTP {response.status_code}, but /running lists {model} "
            f"as {'starting' if state == 'loading' else 'not running'}; it may have stopped at once, "
            f"{self._log_hint()}"
        )

    def unload(self, name: str) -> None:
        entry = self._find(name)
        model = entry.info.name
        if entry.peer is not None:
            raise self._peer_model(name, entry.peer, "unload")
        path = f"{UNLOAD_ALL}/{quote(model, safe='/')}"
        response = self._send("POST", path, model=model, timeout=self._unload_timeout())
        if response.status_code == 404 and self._bare_not_found(response):
            # The model is in the server's own table, so the route itself is missing (before v161).
            raise Unsupported(
                f"{self._where()} is older than v161 and cannot unload a single model; upgrade llama-swap, "
                f"or unload all its models with GET {self._root}{LEGACY_UNLOAD} "
                "(`sourceprep-models unload --all` on this endpoint)"
            )
        self._raise_for(response, model)
        if not _says_ok(response):
            raise self._unexpected(path, response.text)

    def unload_all(self) -> None:
        """Stop every model llama-swap runs, in one request (peers' models are not touched)."""
        timeout = self._unload_timeout()
        response = self._send("POST", UNLOAD_ALL, timeout=timeout)
        path = UNLOAD_ALL
        if response.status_code in (404, 405) and self._bare_not_found(response):
            # Builds before the /api group: the original route (llama-swap#58).
            response = self._send("GET", LEGACY_UNLOAD, timeout=timeout)
            path = LEGACY_UNLOAD
        self._raise_for(response, None)
        if not _says_ok(response):
            raise self._unexpected(path, response.text)

    def _unload_timeout(self) -> httpx.Timeout:
        # The unload answers only once the process has exited (up to the model's unloadTimeout).
        return httpx.Timeout(CONNECT_TIMEOUT_S, read=self.endpoint.unload_timeout_s or DEFAULT_UNLOAD_TIMEOUT_S)

    def _state_of(self, model: str) -> ModelState | None:
        return next((loaded.state for loaded in self.list_loaded() if loaded.name == model), None)

    def _peer_model(self, name: str, peer: str, action: str) -> Unsupported:
        return Unsupported(
            f"{name} on {self._where()} is served by its peer {peer!r} on another host, which this endpoint "
            f"cannot {action}; add an endpoint for that host and {action} it there"
        )

    # -- the model table -------------------------------------------------------------------------

    def _entries(self) -> list[_Entry]:
        if self._catalogue is None:
            models = self._config_models()
            self._catalogue = self._event_entries(models) if models is not None else None
            if self._catalogue is None:
                self._catalogue = self._listing_entries()
        return self._catalogue

    def _config_models(self) -> list[Any] | None:
        """The model table of the first ``modelStatus`` event, or None when the server has none to give.

        Any trouble (no such route, an old build, a refused key, a stream that never says it) is
        None: the ``/v1/models`` fallback then reports real errors the one usual way."""
        models = self._first_event("modelStatus")
        return models if isinstance(models, list) else None

    def _first_event(self, kind: str) -> Any:
        """The decoded data of the first ``kind`` event of ``/api/events``; None on any trouble."""
        read = 0
        try:
            timeout = httpx.Timeout(_EVENTS_READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
            with self._client.stream("GET", EVENTS, headers=self._headers(EVENTS), timeout=timeout) as response:
                if response.status_code != 200:
                    return None
                for line in response.iter_lines():
                    read += len(line)
                    if read > _EVENTS_MAX_CHARS:
                        return None
                    if not line.startswith("data:"):
                        continue
                    try:
                        envelope = json.loads(line[len("data:") :])
                    except ValueError:
                        continue
                    if isinstance(envelope, dict) and envelope.get("type") == kind:
                        data = envelope.get("data")
                        return json.loads(data) if isinstance(data, str) else None
        except (httpx.HTTPError, httpx.StreamError, ValueError, UnicodeEncodeError):
            return None
        return None

    def _event_entries(self, models: list[Any]) -> list[_Entry] | None:
        entries = []
        for item in models:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                return None  # not the table this module knows: use the listing instead
            aliases = item.get("aliases")
            entries.append(
                self._entry(
                    item["id"],
                    peer=str_or_none(item.get("peerID")) or None,
                    aliases=tuple(a for a in aliases if isinstance(a, str)) if isinstance(aliases, list) else (),
                )
            )
        return entries

    def _listing_entries(self) -> list[_Entry]:
        body = self._json("GET", V1_MODELS)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise self._unexpected(V1_MODELS, body)
        entries = []
        for item in body["data"]:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise self._unexpected(V1_MODELS, item)
            meta = item.get("meta")
            own = meta.get("llamaswap") if isinstance(meta, dict) else None
            peer = str_or_none(own.get("peerID")) if isinstance(own, dict) else None
            entries.append(self._entry(item["id"], peer=peer or None))
        return entries

    def _entry(self, model_id: str, *, peer: str | None, aliases: tuple[str, ...] = ()) -> _Entry:
        info = ModelInfo(name=model_id, identity=f"llamaswap:{self._root}:{model_id}", remote=peer is not None)
        return _Entry(info=info, aliases=aliases, peer=peer)

    def _find(self, name: str) -> _Entry:
        entries = self._entries()
        for entry in entries:
            if entry.info.name == name:
                return entry
        for entry in entries:
            if name in entry.aliases:
                return entry
        names = [entry.info.name for entry in entries] + [alias for entry in entries for alias in entry.aliases]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        if not close:
            close = [other for other in names if other.lower() == name.lower() or name in other][:1]
        hint = (
            f"did you mean {close[0]!r}?"
            if close
            else f"llama-swap serves only the models in its config.yaml (see GET {self._root}{V1_MODELS})"
        )
        raise ModelNotFound(f"model {name!r} not found on endpoint {self.endpoint.name!r}; {hint}")

    # -- one choke point for HTTP and its errors ----------------------------------------------

    def _json(self, method: str, path: str) -> Any:
        response = self._send(method, path)
        self._raise_for(response, None)
        body = json_body(response)
        if body is None:
            raise self._unexpected(path, response.text)
        return body

    def _raise_for(self, response: httpx.Response, model: str | None, *, loading: bool = False) -> None:
        """Raise the error a reply stands for; return when it is a success."""
        if response.is_success:
            return
        where = self._where()
        status = response.status_code
        message = self._scrub(self._message(response) or response.reason_phrase)
        request = response.request
        if status in (401, 403):
            if self.endpoint.api_key_env:
                fix = f"check the API key in the environment variable {self.endpoint.api_key_env}"
            else:
                fix = "set api_key_env in the endpoint's config to the name of an env var holding one of its apiKeys"
            raise ServerError(f"{where} refused the request (HTTP {status}: {message}); {fix}", status)
        if model is not None and status in (400, 404) and any(m in message.lower() for m in _NOT_FOUND_MARKERS):
            raise self._find_error(model)
        if status in (429, 503):
            raise ServerBusy(f"{where} is busy with {model or 'its models'} ({message}); retry in a moment", status)
        if loading and status >= 500:
            raise ServerError(
                f"{where} could not start {model} (HTTP {status}: {message}); its cmd exited or its health check "
                f"timed out (healthCheckTimeout), for example out of memory: {self._log_hint()}",
                status,
            )
        raise ServerError(f"{where} answered {status} to {request.method} {request.url.path}: {message}", status)

    def _message(self, response: httpx.Response) -> str:
        return (error_message(json_body(response)) or response.text).strip()[:200]

    def _bare_not_found(self, response: httpx.Response) -> bool:
        """A 404 from the router itself (no such route), not llama-swap's "model not found"."""
        return self._message(response).lower() in ("", "404 page not found", "not found", "405 method not allowed")

    def _find_error(self, model: str) -> ModelNotFound:
        self._catalogue = None  # the config may have been reloaded since it was read
        try:
            self._find(model)
        except ModelNotFound as exc:
            return exc
        except SourceprepError:  # the suggestion is a courtesy; the not-found error stands regardless
            pass
        return ModelNotFound(
            f"model {model!r} not found on endpoint {self.endpoint.name!r}; llama-swap refused it although it "
            "lists it: check its config.yaml"
        )

    def _unexpected(self, path: str, body: object) -> ServerError:
        return ServerError(
            f"{self._root}{path} did not answer like llama-swap ({snippet(self._scrub(str(body)))}); "
            f"is endpoint {self.endpoint.name!r} really a llama-swap server?"
        )

    def _log_hint(self) -> str:
        return (
            f"see the model server's output in llama-swap's upstream log (GET {self._root}/logs/stream/upstream, "
            "or the Logs page of its web UI)"
        )

    def _headers(self, path: str) -> dict[str, str]:
        # Error bodies are JSON only when asked for (llama-swap internal/shared/http.go).
        return {"Accept": "application/json", **super()._headers(path)}


def server_root(url: str) -> str:
    """llama-swap's root URL, whether the config gave the root or its OpenAI base."""
    return strip_api_base(url, _API_SUFFIXES)


def _says_ok(response: httpx.Response) -> bool:
    """``OK`` in plain text (the single-model and legacy unloads) or ``{"msg": "ok"}`` (unload all)."""
    body = json_body(response)
    if isinstance(body, dict):
        return str(body.get("msg", "")).lower() == "ok"
    return response.text.strip().upper() == "OK"


def _context_from(cmd: object) -> int | None:
    """The context length a model's ``cmd`` fixes, where /running shows the cmd and it names one."""
    if not isinstance(cmd, str):
        return None
    match = _CTX_FLAG.search(cmd)
    if match is None and "llama-server" in cmd:  # -c is llama-server's short form; other tools use it otherwise
        match = _SHORT_CTX_FLAG.search(cmd)
    return (int(match.group(1)) or None) if match else None  # llama-server's 0 means "the model's own"
