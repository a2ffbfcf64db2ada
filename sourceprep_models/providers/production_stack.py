"""The vLLM production-stack router (``vllm-router``, Kubernetes deployments of vLLM): "unload" puts
the engines serving a model to sleep, "load" wakes one, each through the router by its engine id.

Read in vllm-project/production-stack at a6c01db (2026-08-05); file and lines below are there.

What this module relies on:

- ``GET /engines`` (``src/vllm_router/routers/main_router.py``, ``get_engine_instances``, l. 179-209):
  a JSON list with one ``{"engine_id": str, "serving_models": [str], "created": int}`` per engine.
  Nothing else about an engine: no URL, no host, no memory, no sleep state, no sleep level.
- ``GET /v1/models`` (``show_models``, l. 129-176): the engines' model cards, each id once, as
  ``{"object": "list", "data": [...]}``. With Kubernetes discovery the cards are the engines' own
  (``service_discovery.py``, ``_get_model_info``, l. 625-655), so they carry vLLM's ``max_model_len``;
  static discovery makes bare cards (l. 295-316). External providers' models are listed here too,
  but no engine serves them, so only ``/engines`` says what can be slept and woken.
- ``POST /sleep?id=``, ``POST /wake_up?id=``, ``GET /is_sleeping?id=`` (main_router.py l. 108-120,
  all in ``services/request_service/request.py``, ``route_sleep_wakeup_request``, l. 1041-1128):
  no ``id`` is 400 ``{"error": "Invalid request: missing target Engine Id."}`` (l. 1055-1060), an
  unknown id 400 ``{"error": "Engine with Id <id> not found."}`` (l. 1066-1070); the other query
  parameters go to the engine (l. 1092, since #969 of 2026-06; older routers drop them, so the
  engine then sleeps at vLLM's default level 1 and aborts requests in flight). ``/is_sleeping``
  answers the engine's ``{"is_sleeping": bool}`` (l. 1096-1100); ``/sleep`` and ``/wake_up`` answer
  the engine's status with ``{"status": "success"}`` (l. 1124-1128).
- Errors from the engine are not passed on: an engine's error status (``raise_for_status``) or an
  engine that does not answer raises in the router, which has no exception handler
  (``src/vllm_router/app.py``), so Starlette's ServerErrorMiddleware answers 500
  "Internal Server Error" as text. The reason (no sleep routes because the engine runs without
  ``VLLM_SERVER_DEV_MODE=1``, out of memory, a crashed pod) is only in the router's and engine's logs.
- Engine ids: Kubernetes discovery derives them from the pod (or service) name,
  ``uuid5(NAMESPACE_DNS, name)`` (``service_discovery.py`` l. 746, 1202); static discovery draws a
  ``uuid4`` per engine at each router start (l. 243). So ids are read from ``/engines`` on every call
  and never kept.

- Activity (``reports_activity``): the router's ``GET /metrics`` (``routers/metrics_router.py``,
  ``metrics``) sets ``vllm:num_requests_running`` (prefill + decoding) and ``vllm:num_requests_waiting``
  per engine, labelled ``server`` with the engine's URL, from the requests it routed
  (``stats/request_stats.py``); ``/engines`` gives no URL, so the figures cannot be tied to an engine
  id. A model is therefore idle when the sum over every engine is 0, serving that sum when every
  engine serves it (replicas), and unknown otherwise. The sleep itself asks for ``mode=wait`` (below),
  which only routers that forward query parameters pass on; this check also covers the others.

The traps it avoids:

- Static discovery has no ``add_sleep_label``/``remove_sleep_label`` (only the Kubernetes classes
  do, ``service_discovery.py`` l. 554, 569, 1029, 1042): its ``/sleep`` and ``/wake_up`` act on the
  engine, then answer 500. So a 500 from either is followed by ``/is_sleeping``, which decides.
- The sleep level: the router reports none and routes no ``/collective_rpc``, so an engine put to
  sleep at level 2 could not get its weights back through it (waking it the level-1 way brings back
  memory without weights, servers.md §4). This provider therefore always sleeps at level 1
  (``level=1&mode=wait``: weights parked in host RAM, requests in flight allowed to finish) and lists
  a sleeping engine as ``parked``; ``sleep_level`` is not accepted for this kind. An engine slept at
  level 2 by someone talking to it directly looks the same, and cannot be told apart here.
- An engine whose ``/is_sleeping`` answers 500 (sleep routes off, or the engine down) is listed as
  ``fixed``: its memory is counted, ``unload`` is ``Unsupported`` naming the fix, ``load`` has nothing
  to do.
- No warm-up after a wake: a request through the router to a just-woken engine can be refused while
  the router still marks the pod sleeping (its Kubernetes watch sees the label change later;
  ``route_general_request`` skips ``x.sleep`` engines, request.py l. 520-545).

What a model is here: the names an engine serves are one resident model (aliases and LoRA adapters
live in one vLLM process), listed under the engine's first name with the engine's id. Several engines
serving one model (replicas) are one model that is loaded when any of them is awake; ``load`` wakes
the first sleeping one in the router's order, ``unload`` puts every awake one to sleep. Each engine
sits on a host of its own; the router does not say which, so ``engine`` on each record is what maps
them. Memory: the router reports none (``reports_memory`` False).
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.constants import CONNECT_TIMEOUT_S, DEFAULT_UNLOAD_TIMEOUT_S
from sourceprep_models.errors import DeadlineExceeded, ModelNotFound, ServerError, Unsupported
from sourceprep_models.providers._http import HTTPEndpoint, error_message, int_or_none, json_body, strip_api_base
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
from sourceprep_models.providers.vllm import requests_in_metrics

ENGINES = "/engines"
MODELS = "/v1/models"
IS_SLEEPING = "/is_sleeping"
SLEEP = "/sleep"
WAKE_UP = "/wake_up"
METRICS = "/metrics"
# What an engine needs for the router's sleep routes to work (servers.md §4).
ENGINE_HINT = "run its vLLM with --enable-sleep-mode and the environment variable VLLM_SERVER_DEV_MODE=1"
_FIRST_POLL_S = 0.05
_MAX_POLL_S = 1.0
# Most resident first: which state a model shows when its replicas differ.
_RANK: dict[ModelState, int] = {"loaded": 0, "fixed": 1, "loading": 2, "parked": 3, "asleep": 4}


@dataclass(frozen=True)
class Engine:
    """One entry of ``GET /engines``: a vLLM engine and the names it serves (the first is its own)."""

    id: str
    models: tuple[str, ...]
    created: int | None


class ProductionStackProvider(HTTPEndpoint):
    server_label: ClassVar[str] = "vLLM production-stack router"
    server_noun: ClassVar[str] = "a vLLM production-stack router"
    unreachable_fix: ClassVar[str] = (
        "start the router (`vllm-router --port 8001 --service-discovery k8s …`) or forward its port "
        "(`kubectl port-forward svc/vllm-router-service 30080:80`)"
    )
    after_deadline: ClassVar[str] = "the engine may still finish waking (check `sourceprep-models status`)"
    kind: ClassVar[str] = "production-stack"
    # Every sleep this provider asks for is level 1, so an unload parks the weights in host RAM.
    capabilities = Capabilities(
        can_load=True,
        can_unload=True,
        can_pin=True,  # a pin is kept by never putting the model's engines to sleep
        reports_memory=False,
        parks_in_ram=True,
        sets_context=False,  # fixed per engine by --max-model-len
        reports_activity=True,  # the router's request gauges on GET /metrics, per engine URL
    )
    start_hint: ClassVar[str] = "start `vllm-router` (or forward the router service's port)"
    default_port: ClassVar[int | None] = 8001  # vllm-router --port (src/vllm_router/parsers/parser.py)
    get_hint: ClassVar[str] = "deploy a vLLM engine serving it behind the router (a modelSpec in the Helm values)"
    # Its /v1/models cards are vLLM's own (owned_by "vllm"): tell it apart before vLLM is tried.
    detect_first: ClassVar[bool] = True

    def __init__(
        self,
        endpoint: Endpoint,
        client: httpx.Client | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect(endpoint, client, strip_api_base(endpoint.url))
        self._sleep = sleep
        self._clock = clock

    # -- facts about the router ----------------------------------------------------------------

    @classmethod
    def detect(cls, fetch: Fetch) -> ServerIdentity | None:
        """``GET /engines`` answers a list of ``engine_id`` records; the version from ``GET /version``."""
        engines = fetch(ENGINES)
        body = engines.body
        if not (200 <= engines.status < 300 and isinstance(body, list)):
            return None
        if not all(isinstance(item, dict) and isinstance(item.get("engine_id"), str) for item in body):
            return None
        reply = fetch("/version").json
        version = reply.get("version") if reply else None
        return ServerIdentity(
            cls.kind, version if isinstance(version, str) else None, {"engines": len(body)}, "GET /engines"
        )

    def server_facts(self) -> dict[str, Any]:
        """The engines as the router lists them (it says nothing of their hosts or memory)."""
        return {
            "role": "production-stack router",
            "engines": [
                {"engine_id": engine.id, "serving_models": list(engine.models), "created": engine.created}
                for engine in self._engines()
            ],
        }

    def context_fix(self, wanted: int) -> str | None:
        return f"restart the model's vLLM engines with --max-model-len {wanted} (vllmConfig.maxModelLen in Helm)"

    # -- queries -------------------------------------------------------------------------------

    def list_available(self) -> list[ModelInfo]:
        engines = self._engines()
        contexts = self._contexts()
        infos: dict[str, ModelInfo] = {}
        for engine in engines:
            for name in engine.models:
                if name not in infos:
                    infos[name] = self._info(name, engine, contexts)
        return list(infos.values())

    def describe(self, name: str) -> ModelInfo:
        engines = self._serving(name, self._engines())
        return self._info(name, engines[0], self._contexts())

    def list_loaded(self) -> list[LoadedModel]:
        rows: dict[str, LoadedModel] = {}
        for engine in self._engines():
            if not engine.models:
                continue  # a pod that is not ready yet serves nothing
            sleeping = self._is_sleeping(engine)
            state: ModelState = "fixed" if sleeping is None else "parked" if sleeping else "loaded"
            row = LoadedModel(name=engine.models[0], state=state, engine=engine.id)
            held = rows.get(row.name)
            if held is None or _RANK[state] < _RANK[held.state]:
                rows[row.name] = row
        return list(rows.values())

    def activity(self, name: str) -> Activity:
        """The requests the router has in flight: idle at 0, the model's when every engine serves it."""
        engines = self._engines()
        ours = {engine.id for engine in self._serving(name, engines)}
        response = self._send("GET", METRICS, model=name)
        total = requests_in_metrics(response.text) if response.is_success else None
        alone = all(engine.id in ours for engine in engines if engine.models)
        return Activity(name, requests=total if total == 0 or alone else None)

    # -- actions -------------------------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadOutcome:
        started = self._clock()
        deadline = started + request.deadline_s
        engines = self._serving(request.name, self._engines())
        contexts = self._contexts()
        context = contexts.get(request.name) or contexts.get(engines[0].models[0])
        wanted = int_or_none(request.options.get("num_ctx"))
        if wanted is not None and context is not None and wanted > context:
            raise Unsupported(
                f"{self._where()} serves {request.name} with at most {context} tokens of context "
                f"(--max-model-len), not the {wanted} asked for; restart its engines with --max-model-len {wanted}, "
                f"or ask for --ctx {context} or less"
            )
        asleep = []
        for engine in engines:
            if self._is_sleeping(engine) is not True:  # awake, or without sleep routes (always awake)
                return LoadOutcome(name=request.name, wall_s=self._clock() - started)
            asleep.append(engine)
        engine = asleep[0]
        waking = self._clock()
        response = self._send(
            "POST", _with_id(WAKE_UP, engine), model=request.name, timeout=self._until(deadline), action="load"
        )
        self._check_switch(response, WAKE_UP, engine, request.name)
        self._wait_awake(engine, request.name, deadline)
        return LoadOutcome(name=request.name, wall_s=self._clock() - started, server_load_s=self._clock() - waking)

    def unload(self, name: str) -> None:
        engines = self._serving(name, self._engines())
        states = [(engine, self._is_sleeping(engine)) for engine in engines]
        blind = [engine for engine, sleeping in states if sleeping is None]
        if blind:
            raise Unsupported(
                f"{self._where()} cannot put {name} to sleep: engine {blind[0].id} does not answer "
                f"{IS_SLEEPING} (HTTP 500); {ENGINE_HINT}, and check that its pod is running"
            )
        seconds = self.endpoint.unload_timeout_s or DEFAULT_UNLOAD_TIMEOUT_S
        for engine, sleeping in states:
            if sleeping:
                continue  # already asleep: a second /sleep would change nothing
            path = _with_id(SLEEP, engine) + "&level=1&mode=wait"
            try:
                response = self._send("POST", path, model=name, timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=seconds))
            except DeadlineExceeded:
                raise DeadlineExceeded(
                    f"{self._where()} did not finish putting engine {engine.id} ({name}) to sleep within "
                    f"{seconds:g}s; it first lets the requests in flight finish, so it may still sleep (check "
                    "`sourceprep-models status`); raise the endpoint's unload_timeout"
                ) from None
            self._check_switch(response, SLEEP, engine, name)

    # -- engines and their sleep state ---------------------------------------------------------

    def _engines(self) -> list[Engine]:
        response = self._send("GET", ENGINES)
        body = json_body(response)
        self._raise_for(response, body)
        if not isinstance(body, list):
            raise self._unexpected(ENGINES, body if body is not None else response.text)
        engines = []
        for item in body:
            models = item.get("serving_models") if isinstance(item, dict) else None
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("engine_id"), str)
                or not isinstance(models, list)
                or not all(isinstance(model, str) for model in models)
            ):
                raise self._unexpected(ENGINES, item)
            engines.append(Engine(item["engine_id"], tuple(models), int_or_none(item.get("created"))))
        return engines

    def _contexts(self) -> dict[str, int]:
        """``max_model_len`` by model id, where the cards carry it (Kubernetes discovery)."""
        response = self._send("GET", MODELS)
        body = json_body(response)
        self._raise_for(response, body)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise self._unexpected(MODELS, body if body is not None else response.text)
        contexts = {}
        for card in data:
            if isinstance(card, dict) and isinstance(card.get("id"), str):
                length = int_or_none(card.get("max_model_len"))
                if length is not None:
                    contexts[card["id"]] = length
        return contexts

    def _is_sleeping(self, engine: Engine) -> bool | None:
        """True/False, or None when the router gets no answer from the engine (500: see the docstring)."""
        response = self._send("GET", _with_id(IS_SLEEPING, engine))
        if response.status_code == 500:
            return None
        body = json_body(response)
        self._raise_for(response, body, engine=engine)
        value = body.get("is_sleeping") if isinstance(body, dict) else None
        if not isinstance(value, bool):
            raise self._unexpected(IS_SLEEPING, body if body is not None else response.text)
        return value

    def _check_switch(self, response: httpx.Response, route: str, engine: Engine, model: str) -> None:
        """A sleep or wake succeeded: 2xx ``{"status": "success"}``, or a 500 after which the engine is in
        the wanted state (static discovery fails only its own relabelling, after the engine acted)."""
        wanted = route == SLEEP
        if response.status_code == 500:
            if self._is_sleeping(engine) is wanted:
                return
            doing = "put to sleep" if wanted else "woken"
            raise ServerError(
                f"engine {engine.id} ({model}) behind {self._where()} could not be {doing}: the router answered "
                f"500 to POST {route}; the engine refused or failed (out of memory, or not run with "
                f"--enable-sleep-mode and VLLM_SERVER_DEV_MODE=1); its log and the router's say why",
                500,
            )
        body = json_body(response)
        self._raise_for(response, body, engine=engine)
        if not (isinstance(body, dict) and body.get("status") == "success"):
            raise self._unexpected(route, body if body is not None else response.text)

    def _wait_awake(self, engine: Engine, model: str, deadline: float) -> None:
        interval = _FIRST_POLL_S
        while self._is_sleeping(engine):
            if self._clock() >= deadline:
                raise DeadlineExceeded(
                    f"engine {engine.id} ({model}) behind {self._where()} still says it is sleeping at the deadline; "
                    "it may still wake (check `sourceprep-models status`); raise --timeout (or the endpoint's "
                    "load_timeout)"
                )
            self._sleep(interval)
            interval = min(interval * 1.5, _MAX_POLL_S)

    def _until(self, deadline: float) -> httpx.Timeout:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise DeadlineExceeded(
                f"ran out of time waking a model on {self._where()}; raise --timeout (or the endpoint's load_timeout)"
            )
        return httpx.Timeout(CONNECT_TIMEOUT_S, read=remaining)

    # -- models ----------------------------------------------------------------------------------

    def _info(self, name: str, engine: Engine, contexts: dict[str, int]) -> ModelInfo:
        # One engine, one set of weights: its aliases and adapters are one resident model, and replicas
        # serving the same first name are that model too.
        return ModelInfo(
            name=name,
            identity=f"production-stack:{self._root}:{engine.models[0]}",
            trained_context=contexts.get(name) or contexts.get(engine.models[0]),
            engine=engine.id,
        )

    def _serving(self, name: str, engines: list[Engine]) -> list[Engine]:
        """The engines serving ``name``, in the router's order, or ``ModelNotFound``."""
        serving = [engine for engine in engines if name in engine.models]
        if serving:
            return serving
        names = list(dict.fromkeys(model for engine in engines for model in engine.models))
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"to serve it, {self.get_hint}"
        served = ", ".join(repr(other) for other in names) or "nothing"
        raise ModelNotFound(
            f"model {name!r} not found on endpoint {self.endpoint.name!r}: the router's engines serve {served}; {hint}"
        )

    # -- errors --------------------------------------------------------------------------------

    def _raise_for(self, response: httpx.Response, body: object, *, engine: Engine | None = None) -> None:
        """Raise the error a reply stands for; return when it is a success without an error field."""
        message = error_message(body)
        if response.is_success and message is None:
            return
        where = self._where()
        status = response.status_code
        request = response.request
        path = request.url.path
        if message is None:
            detail = body.get("detail") if isinstance(body, dict) else None  # FastAPI's {"detail": "Not Found"}
            message = detail if isinstance(detail, str) else response.text.strip()[:200] or response.reason_phrase
        message = self._scrub(message)
        if status == 400 and engine is not None and "not found" in message.lower():
            raise ServerError(
                f"engine {engine.id} left {where} (its pod restarted or was scaled down: {message}); "
                "retry, and check `sourceprep-models status`",
                status,
            )
        if status in (401, 403):
            raise ServerError(
                f"{where} refused {request.method} {path} (HTTP {status}: {message}); set api_key_env in the "
                "endpoint's config to the name of an env var holding the key in front of the router",
                status,
            )
        raise ServerError(f"{where} answered {status} to {request.method} {path} ({message}); check its log", status)


def _with_id(route: str, engine: Engine) -> str:
    return f"{route}?id={quote(engine.id, safe='')}"
