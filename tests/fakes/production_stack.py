"""A fake vLLM production-stack router (``vllm-router``) in front of fake vLLM engines.

The shapes follow the router's own source, vllm-project/production-stack at a6c01db (2026-08-05):

- ``src/vllm_router/routers/main_router.py``: ``GET /engines`` (``get_engine_instances``, l. 179-209)
  answers a JSON list of ``{"engine_id", "serving_models", "created"}``, one per engine;
  ``GET /v1/models`` (``show_models``, l. 129-176) the engines' model cards, each id once, as
  ``{"object": "list", "data": [...]}``; ``POST /sleep``, ``POST /wake_up`` and ``GET /is_sleeping``
  (l. 108-120) go to ``route_sleep_wakeup_request``.
- ``src/vllm_router/services/request_service/request.py``, ``route_sleep_wakeup_request`` (l. 1041-1128):
  no ``id`` in the query is 400 ``{"error": "Invalid request: missing target Engine Id."}``; an id no
  engine has is 400 ``{"error": "Engine with Id <id> not found."}``; every other query parameter is
  forwarded to the engine (``level``, ``mode``, ``tags``: l. 1092, since #969); ``/is_sleeping``
  answers the engine's own JSON; ``/sleep`` and ``/wake_up`` answer the engine's status with
  ``{"status": "success"}``, after relabelling the pod (``add_sleep_label``/``remove_sleep_label``).
  An engine's error status (``raise_for_status``) or an engine that does not answer is an exception
  the router does not handle, so Starlette's ServerErrorMiddleware answers 500 with the text
  "Internal Server Error" (the engine's message stays in the router's log).
- ``src/vllm_router/service_discovery.py``: Kubernetes discovery names an engine
  ``uuid5(NAMESPACE_DNS, pod name)`` (l. 746) and lists the ids of the engine's own ``/v1/models``
  (l. 590-623, so aliases and LoRA adapters too); static discovery (``--static-backends``) names
  them with a fresh ``uuid4`` at every router start (l. 243), lists only the configured model
  (l. 336), and has no ``add_sleep_label``: its ``/sleep`` and ``/wake_up`` act on the engine and
  then answer 500.

Each engine is a ``tests.fakes.vllm.FakeVLLM``, so what the router forwards meets vLLM's own answers.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from tests.fakes.vllm import NOT_FOUND, FakeVLLM
from tests.loopback import Reply, Request

QWEN = "Qwen/Qwen3-8B"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
INTERNAL_ERROR: Reply = (500, "Internal Server Error")  # Starlette's answer to an unhandled exception
SLEEP_ROUTES = ("/sleep", "/wake_up", "/is_sleeping")


@dataclass
class FakeEngine:
    """One vLLM pod behind the router."""

    pod: str
    server: FakeVLLM
    down: bool = False  # the router's request to the pod fails (crashed, or not answering)
    created: int = 1767225600

    @property
    def engine_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, self.pod))


def two_engines() -> list[FakeEngine]:
    """The usual stack: two pods, each serving one model (Qwen with an alias)."""
    return [
        FakeEngine("vllm-qwen-deployment-0", FakeVLLM(model=QWEN, aliases=("qwen",))),
        FakeEngine("vllm-llama-deployment-0", FakeVLLM(model=LLAMA)),
    ]


@dataclass
class FakeRouter:
    engines: list[FakeEngine] = field(default_factory=two_engines)
    discovery: Literal["k8s", "static"] = "k8s"
    requests: list[Request] = field(default_factory=list)
    overrides: dict[tuple[str, str], Reply] = field(default_factory=dict)
    metrics: bool = True  # GET /metrics (routers/metrics_router.py)
    # Requests in flight through the router per engine pod, for this many more reads of /metrics.
    in_flight: dict[str, int] = field(default_factory=dict)

    def engine(self, model: str) -> FakeEngine:
        return next(engine for engine in self.engines if model in self.serving_models(engine))

    def posts(self) -> list[str]:
        """Every POST, path with its query, in order."""
        return [request.path for request in self.requests if request.method == "POST"]

    def serving_models(self, engine: FakeEngine) -> list[str]:
        vllm = engine.server
        if self.discovery == "static":
            return [vllm.model]
        return [vllm.model, *vllm.aliases, *vllm.loras]

    def handle(self, request: Request) -> Reply:
        self.requests.append(request)
        url = urlsplit(request.path)
        path, query = url.path, parse_qsl(url.query)
        if (request.method, path) in self.overrides:
            return self.overrides[(request.method, path)]
        route = (request.method, path)
        if route == ("GET", "/engines"):
            return 200, [
                {
                    "engine_id": engine.engine_id,
                    "serving_models": self.serving_models(engine),
                    "created": engine.created,
                }
                for engine in self.engines
            ]
        if route == ("GET", "/v1/models"):
            return 200, {"object": "list", "data": self.model_cards()}
        if route == ("GET", "/metrics") and self.metrics:
            return 200, self.router_metrics()
        if route == ("GET", "/version"):
            return 200, {"version": "0.1.10"}
        if route in (("POST", "/sleep"), ("POST", "/wake_up"), ("GET", "/is_sleeping")):
            return self.forward(request, path, query)
        return NOT_FOUND

    def router_metrics(self) -> str:
        """The router's request gauges (metrics_router.py ``metrics``): one sample per engine it routed to,
        labelled with the engine's URL, none for an engine it never saw a request for."""
        lines = [
            "# HELP vllm:num_requests_running Number of running requests",
            "# TYPE vllm:num_requests_running gauge",
        ]
        for pod, left in sorted(self.in_flight.items()):
            lines.append(f'vllm:num_requests_running{{server="http://{pod}:8000"}} {float(left > 0)}')
        self.in_flight = {pod: max(0, left - 1) for pod, left in self.in_flight.items()}
        lines += [
            "# HELP vllm:num_requests_waiting Number of waiting requests",
            "# TYPE vllm:num_requests_waiting gauge",
        ]
        return "\n".join(lines) + "\n"

    def model_cards(self) -> list[dict[str, Any]]:
        cards: dict[str, dict[str, Any]] = {}
        for engine in self.engines:
            if self.discovery == "static":
                # StaticServiceDiscovery._get_model_info: the configured name, nothing read from the engine.
                name = engine.server.model
                found = {name: {"id": name, "object": "model", "created": engine.created, "owned_by": "vllm",
                                "root": None, "parent": None}}  # fmt: skip
            else:
                _, body = engine.server.handle(Request("GET", "/v1/models", {}, None))
                found = {card["id"]: card for card in body["data"]}
            for name, card in found.items():
                cards.setdefault(name, card)
        return list(cards.values())

    def forward(self, request: Request, path: str, query: list[tuple[str, str]]) -> Reply:
        params = dict(query)  # Starlette's QueryParams: the last value of a repeated key
        engine_id = params.pop("id", None)
        if engine_id is None:
            return 400, {"error": "Invalid request: missing target Engine Id."}
        engine = next((engine for engine in self.engines if engine.engine_id == engine_id), None)
        if engine is None:
            return 400, {"error": f"Engine with Id {engine_id} not found."}
        if engine.down:
            return INTERNAL_ERROR
        upstream = f"{path}?{urlencode(params)}" if params else path
        status, payload = engine.server.handle(Request(request.method, upstream, {}, None))
        if status >= 400:
            return INTERNAL_ERROR
        if path == "/is_sleeping":
            return 200, payload
        if self.discovery == "static":
            return INTERNAL_ERROR  # 'StaticServiceDiscovery' object has no attribute 'add_sleep_label'
        return status, {"status": "success"}

    # -- as an httpx transport -------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content) if request.content else None
            headers = {key.lower(): value for key, value in request.headers.items()}
            status, payload = self.handle(Request(request.method, request.url.raw_path.decode(), headers, body))
            if payload is None:
                return httpx.Response(status)
            if isinstance(payload, str):
                return httpx.Response(status, text=payload)
            return httpx.Response(status, json=payload)

        return httpx.MockTransport(handler)
