"""llama.cpp's ``llama-server``, in router mode or as a single-model server (servers.md §2,
real-engine.md §5 for the exact JSON of a real build).

What this module relies on and the traps it avoids:

- Two roles. ``GET /props`` on a router answers ``{"role": "router", "max_instances": N, …}``
  (servers.md §2.2, §7); a server started with ``-m FILE`` serves that one model and has no
  load/unload routes. Such a server is listed with state ``fixed`` and ``load``/``unload`` raise
  ``Unsupported`` naming the router-mode flags, instead of failing on a 404.
- Loading is asynchronous: ``POST /models/load`` answers ``{"success": true}`` once the child
  process is spawned (status ``loading``), not when it is ready (§2.2, real-engine.md §5). ``load``
  therefore waits for the router's ``loaded`` event on ``GET /models/sse`` (``llamacpp_events``),
  else polls ``GET /models`` until ``status.value`` is ``loaded``, or a crashed load shows
  ``unloaded`` with ``failed: true`` and an ``exit_code``.
- Unknown models are reported inconsistently: 404 on load, 400 "model is not found" on unload
  (real-engine.md §5 table). Both become ``ModelNotFound`` (exit 3). 400 "model is already running"
  on load and 400 "model is not running" on unload are successes (someone else got there first).
- A GGUF copied into ``--models-dir`` is listed only after ``GET /models?reload=1`` (§2.1), so a
  name that is not listed is looked up once more with a reload before it is called unknown.
- ``--models-max N`` evicts the least recently used child when a load would exceed N (§2.3). The
  limit is exposed by ``max_loaded()`` so the planner evicts explicitly, choosing a victim that is
  not pinned (the router has no pins, §7), and ``status`` shows the limit.
- The context length is fixed by the router's ``--ctx-size`` or the model's preset section (§2.1);
  the load call takes only the model name. ``capabilities.sets_context`` is False, so the executor
  does not treat a different ``--ctx`` as a reload and warns when the served context is smaller.
- Memory: a loaded model's ``meta.size`` is the weights' byte count; nothing reports KV or GPU use.
  So a prediction reads the GGUF header the router will open (``status.args`` names it) and sizes
  it with the memory formula at the context the router gives that model: ``meta.n_ctx`` once loaded,
  else ``--ctx-size`` in ``status.args`` (the router's flag or the model's preset), else the trained
  context (``--ctx-size 0``, llama-server's default). A loaded model's size is its child process's
  resident memory where the router runs on this machine (the child's ``--port`` and ``--alias`` in
  ``status.args`` find it), else the weights the router reports.
- Direct I/O: a model whose arguments say ``--load-mode dio`` (``providers/load_mode.py`` reads every
  spelling) bypasses the page cache; ``direct_io`` says so, and the core does not warm it.
- Auth: a router started with ``--api-key`` wants ``Authorization: Bearer <key>``; the key is read
  from the environment variable named by ``api_key_env`` for each request, never stored or shown.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.constants import CONNECT_TIMEOUT_S
from sourceprep_models.errors import (
    DeadlineExceeded,
    ModelNotFound,
    ServerBusy,
    ServerError,
    SourceprepError,
    Unsupported,
)
from sourceprep_models.providers._http import (
    HTTPEndpoint,
    error_message,
    int_or_none,
    json_body,
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
from sourceprep_models.providers.diagnostics import Finding, ServerIdentity, is_local, port_of
from sourceprep_models.providers.llamacpp_entry import RouterEntry, read_header
from sourceprep_models.providers.llamacpp_events import LoadWatch

if TYPE_CHECKING:
    from sourceprep_models.memory.gguf import GGUFMetadata
    from sourceprep_models.memory.sizing import Runner
    from sourceprep_models.providers.diagnostics import EndpointUses, Fetch, Need, SettingsQuestion
    from sourceprep_models.providers.prompts import PromptProtocol

_STATES: dict[str, ModelState] = {"loaded": "loaded", "loading": "loading", "sleeping": "asleep"}
# Where the router has no event stream: loads of small models finish in tens of milliseconds
# (real-engine.md §6), so the listing is read every 5 ms at first, then every tenth of the time so far.
_FIRST_POLL_S = 0.005
_MAX_POLL_S = 0.25
# With the event stream, the listing is still read after this long without an event for the model.
_EVENT_QUIET_S = 1.0


class LlamaCppProvider(HTTPEndpoint):
    server_label: ClassVar[str] = "llama-server"
    server_noun: ClassVar[str] = "a llama.cpp server"
    unreachable_fix: ClassVar[str] = "start it (`llama-server --models-dir DIR --port PORT`)"
    kind: ClassVar[str] = "llamacpp"
    capabilities = Capabilities(
        can_load=True, can_unload=True, can_pin=True, reports_memory=False, sets_context=False, reports_activity=True
    )
    start_hint: ClassVar[str] = "start `llama-server --models-dir DIR --port PORT`"
    default_port: ClassVar[int | None] = 8080
    get_hint: ClassVar[str] = "put its GGUF in the router's --models-dir"

    def __init__(
        self,
        endpoint: Endpoint,
        client: httpx.Client | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect(endpoint, client, server_root(endpoint.url))
        self._sleep = sleep
        self._clock = clock
        self._props: dict[str, Any] | None = None
        # Each model's child process, by (port, model id), once found: a pipeline lists the router between every
        # two stages, and scanning every process of the machine for the children cost ~10 ms each time.
        self._children: dict[tuple[str | None, str], Any] = {}
        self._router_env: tuple[dict[str, str] | None] | None = None  # read once: a scan of every process

    # -- facts about llama-server -------------------------------------------------------------

    @classmethod
    def detect(cls, fetch: Fetch) -> ServerIdentity | None:
        """``GET /props``: ``role: router``, or a single model's settings (servers.md §2.2)."""
        props = fetch("/props").json
        if not props or not (props.get("role") == "router" or "default_generation_settings" in props):
            return None
        router = props.get("role") == "router"
        limit = props.get("max_instances")
        facts = {
            "role": "router" if router else "single-model",
            "max_models": limit if router and isinstance(limit, int) and limit > 0 else None,
            "model_path": props.get("model_path") if not router else None,
        }
        build = props.get("build_info")
        return ServerIdentity(cls.kind, build if isinstance(build, str) else None, facts, "GET /props")

    @classmethod
    def prompt_protocol(cls, endpoint: Endpoint, *, autoload: bool = False) -> PromptProtocol:
        from sourceprep_models.providers.prompts import ChatCompletions

        # Load on demand even when the router runs with --no-models-autoload (real-engine.md §5).
        path = "/chat/completions?autoload=true" if autoload else "/chat/completions"
        return ChatCompletions(cls.api_base_url(endpoint.url), path)

    def support(self, identity: ServerIdentity, uses: EndpointUses) -> Finding:
        facts = identity.facts
        if facts.get("role") == "router":
            limit = facts.get("max_models")
            return Finding.ok(
                "router mode: loads and unloads over HTTP" + (f", at most {limit} models" if limit else "")
            )
        served = None
        with contextlib.suppress(SourceprepError, IndexError):
            served = self.list_available()[0].name
        others = [name for name in uses.models if name != served]
        summary = "single-model llama-server (started with -m): it cannot load or unload models"
        fix = (
            "restart llama-server in router mode: without -m, with --models-dir DIR holding the GGUF files "
            "(and --models-max N)"
        )
        if others:
            return Finding.problem(f"{summary}; it serves only {served}, not {', '.join(others)}", fix, served=served)
        return Finding.warning(f"{summary}; it serves {served}", fix, served=served)

    def settings_findings(self, question: SettingsQuestion) -> dict[str, Finding]:
        if question.identity.facts.get("role") != "router":
            return {}
        return {"max_loaded_models": self._models_max_finding(self.max_loaded(), question.need)}

    def _models_max_finding(self, limit: int | None, need: Need | None) -> Finding:
        """``--models-max`` (servers.md §2.1) against what the config keeps together."""
        from sourceprep_models.units import human_bytes

        if limit is None:
            return Finding.ok("no limit on loaded models (--models-max 0)")
        details = {"limit": limit, "needed": need.count if need else None}
        if need is None or need.count <= limit:
            return Finding.ok(f"--models-max {limit}", **details)
        return Finding.problem(
            f"{need.reason} keeps {need.count} models together ({', '.join(need.models)}: {human_bytes(need.bytes)}, "
            f"they fit) but llama-server runs at most {limit} (--models-max): the rest swap",
            f"restart llama-server with --models-max {need.count}",
            models=list(need.models),
            **details,
        )

    def context_fix(self, wanted: int) -> str | None:
        return f"restart llama-server with --ctx-size {wanted} (or ctx-size = {wanted} in its preset for it)"

    def loaded_limit_fix(self, count: int) -> str | None:
        return f"restart llama-server with --models-max {count}"

    # -- the server's role ---------------------------------------------------------------------

    def is_router(self) -> bool:
        return self._server_props().get("role") == "router"

    def max_loaded(self) -> int | None:
        """The router's ``--models-max`` (None: unlimited, or a single-model server)."""
        if not self.is_router():
            return None
        limit = int_or_none(self._server_props().get("max_instances"))
        return limit if limit else None  # 0 means unlimited (servers.md §2.1)

    def server_facts(self) -> dict[str, Any]:
        """What ``status`` shows about the server itself."""
        props = self._server_props()
        router = props.get("role") == "router"
        return {
            "role": "router" if router else "single-model",
            "max_models": self.max_loaded(),
            "autoload": props.get("models_autoload") if router else None,
            "build": props.get("build_info"),
        }

    def _server_props(self) -> dict[str, Any]:
        if self._props is None:
            body = self._json("GET", "/props")
            if not isinstance(body, dict) or not (
                body.get("role") == "router" or "default_generation_settings" in body or "model_path" in body
            ):
                raise self._unexpected("/props", body)
            self._props = body
        return self._props

    # -- queries -------------------------------------------------------------------------------

    def list_available(self) -> list[ModelInfo]:
        if not self.is_router():
            return [self._single_info()]
        return [self._info(entry) for entry in self._entries()]

    def describe(self, name: str) -> ModelInfo:
        if not self.is_router():
            info = self._single_info()
            if name != info.name:
                raise ModelNotFound(
                    f"model {name!r} not found on endpoint {self.endpoint.name!r}: it is a single-model llama-server "
                    f"that serves only {info.name!r}"
                )
            return info
        return self._info(self._find(name))

    def list_loaded(self) -> list[LoadedModel]:
        if not self.is_router():
            info = self._single_info()
            settings = self._server_props().get("default_generation_settings")
            context = int_or_none(settings.get("n_ctx")) if isinstance(settings, dict) else None
            return [LoadedModel(name=info.name, size=info.size, context_length=context, state="fixed")]
        loaded = []
        entries = self._entries()
        resident = self._children_memory([entry for entry in entries if entry.status in _STATES])
        for entry in entries:
            state = _STATES.get(entry.status)
            if state is None:
                continue
            loaded.append(
                LoadedModel(
                    name=entry.id,
                    size=resident.get(entry.id) or int_or_none(entry.meta.get("size")),
                    context_length=int_or_none(entry.meta.get("n_ctx")),
                    state=state,
                )
            )
        return loaded

    def weight_paths(self, name: str) -> list[Path]:
        """The GGUF the router will open, when it is a file on this machine (for page-cache warming)."""
        if not self.is_router():
            return []
        path = self._find(name).model_path
        if path is None:
            return []
        candidate = Path(path)
        return [candidate] if candidate.is_file() else []

    def direct_io(self, name: str, hardware: Mapping[str, Any]) -> str | None:
        """``--load-mode dio`` in the model's arguments or a local router's environment (load_mode.py)."""
        from sourceprep_models.providers.load_mode import direct_io_flag, router_environ

        if not self.is_router():
            return None
        entry = self._find(name)
        if self._router_env is None:  # a running router's environment does not change
            self._router_env = (router_environ(port_of(self.endpoint.url)) if is_local(self.endpoint.url) else None,)
        return direct_io_flag(entry.args, entry.preset, self._router_env[0])

    def gguf_metadata(self, name: str) -> GGUFMetadata | None:
        """The header of the GGUF the router will open, when that file is on this machine."""
        if not self.is_router():
            return None
        return read_header(self._find(name).model_path)

    def _children_memory(self, entries: list[RouterEntry]) -> dict[str, int]:
        """Resident bytes of each model's child process, by model id, when the router runs here.

        A child found once is asked again directly; the process table is scanned only for a model whose child
        is not known yet or has gone (an unloaded or reloaded model: ``is_running`` compares the creation time
        too, so a reused PID is not taken for the old child)."""
        wanted = {(entry.arg("--port"), entry.id) for entry in entries}
        if not wanted or not is_local(self.endpoint.url):
            return {}
        import psutil

        found: dict[str, int] = {}
        for key in wanted & self._children.keys():
            try:
                process = self._children[key]
                if process.is_running():
                    found[key[1]] = process.memory_info().rss
                    continue
            except psutil.Error:
                pass
            del self._children[key]
        if all(key[1] in found for key in wanted):
            return found
        for process in psutil.process_iter(["cmdline"]):
            try:
                command = tuple(process.info.get("cmdline") or ())
                child = RouterEntry("", (), "", False, None, {}, command)
                port, alias = child.arg("--port"), child.arg("--alias")
                if alias is not None and (port, alias) in wanted and alias not in found:
                    found[alias] = process.memory_info().rss
                    self._children[(port, alias)] = process
            except psutil.Error:
                continue  # gone meanwhile, or another user's: its size stays the router's figure
        return found

    # -- actions -------------------------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadOutcome:
        started = self._clock()
        if not self.is_router():
            self.describe(request.name)  # another name is ModelNotFound
            return LoadOutcome(name=request.name, wall_s=self._clock() - started)
        # Subscribed before the listing is read, so that no status event of this load is missed.
        watch = LoadWatch.open(self._client, self._headers("/models/sse"))
        try:
            entry = self._find(request.name)
            if entry.status == "loaded":
                return LoadOutcome(name=request.name, wall_s=self._clock() - started)
            if entry.status != "loading":
                self._post_load(entry, request)
            server_s = self._await_loaded(watch, entry.id, request, started + request.deadline_s)
        finally:
            if watch is not None:
                watch.close()
        return LoadOutcome(name=request.name, wall_s=self._clock() - started, server_load_s=server_s)

    def _post_load(self, entry: RouterEntry, request: LoadRequest) -> None:
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=request.deadline_s)
        response = self._send("POST", "/models/load", json={"model": entry.id}, timeout=timeout, action="load")
        body = json_body(response)
        message = (error_message(body) or "").lower()
        if response.status_code == 400 and "already running" in message:
            return  # loaded (or loading) by someone else meanwhile: wait for it
        if response.status_code == 404:
            raise self._not_found(request.name, self._entries())
        if not response.is_success:
            self._raise_for(response, body, model=request.name)
        if not (isinstance(body, dict) and body.get("success") is True):
            raise self._unexpected("/models/load", body if body is not None else response.text)

    def _await_loaded(
        self, watch: LoadWatch | None, model_id: str, request: LoadRequest, deadline: float
    ) -> float | None:
        """Until the router says loaded: by its events where it has them (the seconds between its "loading"
        and "loaded" events are returned), else by polling the listing. A quiet second or a lost
        "unloaded" event is settled by the listing, which also says why a load failed."""
        if watch is None:
            self._wait_until_loaded(model_id, request.name, deadline)
            return None
        loading_at: float | None = None
        while True:
            event = watch.next(min(_EVENT_QUIET_S, deadline - self._clock()))
            if watch.ended:  # the stream broke: poll for the rest
                self._wait_until_loaded(model_id, request.name, deadline)
                return None
            if event is None or event.model != model_id or event.status not in ("loading", "loaded"):
                if event is None or event.model == model_id:
                    self._settled(self._find(model_id), request.name, deadline)
                continue
            if event.status == "loaded":
                return event.at - loading_at if loading_at is not None else None
            loading_at = event.at if loading_at is None else loading_at
            if event.fraction is not None and request.on_progress is not None:
                request.on_progress(event.stage or "load", event.fraction)

    def _wait_until_loaded(self, model_id: str, name: str, deadline: float) -> None:
        started = self._clock()
        while not self._settled(self._find(model_id), name, deadline):
            self._sleep(min(max(_FIRST_POLL_S, (self._clock() - started) / 10), _MAX_POLL_S))

    def _settled(self, entry: RouterEntry, name: str, deadline: float) -> bool:
        """True once loaded; raises if the load failed, was undone, or the deadline passed; False meanwhile."""
        if entry.status == "loaded":
            return True
        if entry.status in ("unloaded", "failed") and entry.failed:
            code = f" (exit code {entry.exit_code})" if entry.exit_code is not None else ""
            raise ServerError(
                f"llama-server failed to load {name} on endpoint {self.endpoint.name!r}{code}; the router's log "
                "says why: often too little memory for the context (lower --ctx-size) or an unreadable GGUF"
            )
        if entry.status == "unloaded":
            # Not failed, not loading: unloaded meanwhile (another client, or an LRU eviction).
            raise ServerError(
                f"{name} was unloaded on endpoint {self.endpoint.name!r} while it loaded; another client may "
                "be loading models there (its --models-max evicts the least recently used)"
            )
        if self._clock() >= deadline:
            raise DeadlineExceeded(
                f"{name} is still {entry.status} on endpoint {self.endpoint.name!r} at the deadline; it may "
                "still finish (check `sourceprep-models status`); raise --timeout (or the endpoint's load_timeout)"
            )
        return False

    def unload(self, name: str) -> None:
        if not self.is_router():
            raise Unsupported(
                f"endpoint {self.endpoint.name!r} is a single-model llama-server (started with -m); it cannot unload "
                f"{name}; stop that process, or start llama-server without -m in router mode (--models-dir DIR) "
                "to load and unload models over HTTP"
            )
        entry = self._find(name)
        response = self._send("POST", "/models/unload", json={"model": entry.id})
        body = json_body(response)
        message = (error_message(body) or "").lower()
        if response.status_code == 400 and "not running" in message:
            return  # already unloaded: the goal holds
        if response.status_code in (400, 404) and "not found" in message:
            raise self._not_found(name, self._entries())
        if not response.is_success:
            self._raise_for(response, body, model=name)
        if not (isinstance(body, dict) and body.get("success") is True):
            raise self._unexpected("/models/unload", body if body is not None else response.text)

    def activity(self, name: str) -> Activity:
        """Loading, or serving on its child's slots (``llamacpp_activity``)."""
        from urllib.parse import quote

        from sourceprep_models.providers.llamacpp_activity import activity_of

        entry = self._find(name)

        def slots() -> tuple[int, Any]:
            response = self._send("GET", f"/slots?model={quote(entry.id, safe='')}")
            return response.status_code, json_body(response)

        return activity_of(name, entry.status, slots)

    # -- the listing -----------------------------------------------------------------------------

    def _entries(self, *, reload: bool = False) -> list[RouterEntry]:
        path = "/models?reload=1" if reload else "/models"
        body = self._json("GET", path)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise self._unexpected("/models", body)
        return [self._entry(item) for item in data]

    def _entry(self, item: object) -> RouterEntry:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise self._unexpected("/models", item)
        status = item.get("status")
        if not isinstance(status, dict) or not isinstance(status.get("value"), str):
            raise self._unexpected("/models", item)
        args = status.get("args")
        command = tuple(str(arg) for arg in args) if isinstance(args, list) else ()
        aliases = item.get("aliases")
        meta = item.get("meta")
        return RouterEntry(
            id=item["id"],
            aliases=tuple(str(alias) for alias in aliases) if isinstance(aliases, list) else (),
            status=status["value"],
            failed=status.get("failed") is True,
            exit_code=int_or_none(status.get("exit_code")),
            meta=meta if isinstance(meta, dict) else {},
            args=command,
            preset=status.get("preset") if isinstance(status.get("preset"), str) else None,
        )

    def _info(self, entry: RouterEntry) -> ModelInfo:
        size = int_or_none(entry.meta.get("size"))
        if size is None and entry.model_path is not None:
            try:  # not loaded yet: the file's size is the weights' size
                size = os.stat(entry.model_path).st_size
            except OSError:
                size = None
        return ModelInfo(
            name=entry.id,
            identity=f"llamacpp:{self.endpoint.url}:{entry.id}",
            size=size,
            trained_context=int_or_none(entry.meta.get("n_ctx_train")),
            quantization=entry.meta.get("ftype") if isinstance(entry.meta.get("ftype"), str) else None,
            capabilities=("completion",),
            runner=self._runner(entry),
        )

    def _runner(self, entry: RouterEntry) -> Runner:
        """How the router runs this model: its context, KV cache type and batch (servers.md §2.1)."""
        from sourceprep_models.memory.sizing import Runner

        context = int_or_none(entry.meta.get("n_ctx"))  # loaded: what the child really got
        if not context:
            context = entry.number("--ctx-size", "-c")
        if not context:  # 0 or absent: the model's trained context (llama-server --help, --ctx-size)
            context = int_or_none(entry.meta.get("n_ctx_train"))
            header = None if context else read_header(entry.model_path)
            context = context or (header.context_length if header else None)
        batch = entry.number("--ubatch-size", "-ub")
        return Runner(
            context=context if context and context > 0 else None,
            kv_cache_type=entry.arg("--cache-type-k", "-ctk") or "f16",
            num_batch=batch if batch and batch > 0 else 512,
        )

    def _single_info(self) -> ModelInfo:
        body = self._json("GET", "/v1/models")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "id" not in data[0]:
            raise self._unexpected("/v1/models", body)
        first = data[0]
        meta = first.get("meta") if isinstance(first.get("meta"), dict) else {}
        assert isinstance(meta, dict)
        return ModelInfo(
            name=str(first["id"]),
            identity=f"llamacpp:{self.endpoint.url}:{first['id']}",
            size=int_or_none(meta.get("size")),
            trained_context=int_or_none(meta.get("n_ctx_train")),
            capabilities=("completion",),
        )

    def _find(self, name: str) -> RouterEntry:
        entries = self._entries()
        for reload in (False, True):
            if reload:
                entries = self._entries(reload=True)  # a GGUF added since the router started (§2.1)
            for entry in entries:
                if name == entry.id or name in entry.aliases:
                    return entry
        raise self._not_found(name, entries)

    def _not_found(self, name: str, entries: list[RouterEntry]) -> ModelNotFound:
        names = [entry.id for entry in entries]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = (
            f"did you mean {close[0]!r}?"
            if close
            else "put its GGUF in the router's --models-dir (or --models-preset) and check `sourceprep-models status`"
        )
        return ModelNotFound(f"model {name!r} not found on endpoint {self.endpoint.name!r}; {hint}")

    # -- one choke point for HTTP and its errors ----------------------------------------------

    def _json(self, method: str, path: str) -> Any:
        response = self._send(method, path)
        body = json_body(response)
        if not response.is_success:
            self._raise_for(response, body, model=None)
        if body is None:
            raise self._unexpected(path, response.text)
        return body

    def _raise_for(self, response: httpx.Response, body: object, model: str | None) -> None:
        status = response.status_code
        message = self._scrub(error_message(body) or response.text.strip()[:200] or response.reason_phrase)
        where = self._where()
        path = response.request.url.path
        if status in (401, 403):
            variable = self.endpoint.api_key_env
            fix = (
                f"check the key in the environment variable {variable}"
                if variable
                else "set api_key_env in the endpoint's config to the name of an env var holding its --api-key"
            )
            raise ServerError(f"{where} refused the request (HTTP {status}: {message}); {fix}", status)
        if status == 404 and path in ("/models", "/props"):
            raise ServerError(
                f"{where} has no {path} (HTTP 404); it is not a llama-server, or too old for router mode "
                "(upgrade llama.cpp)",
                status,
            )
        if status in (500, 503) and "limit reached" in message.lower():
            raise ServerBusy(
                f"{where} is at its --models-max limit with loads in flight ({message}); retry in a moment", status
            )
        if status == 503:
            raise ServerBusy(f"{where} is busy ({message}); retry in a moment", status)
        raise ServerError(f"{where} answered {status} to {response.request.method} {path}: {message}", status)


def server_root(url: str) -> str:
    """The server's root, whether the config gave it or its OpenAI base (``…/v1``)."""
    return strip_api_base(url)
