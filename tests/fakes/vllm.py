"""A fake ``vllm serve`` for the provider tests: one model, its sleep state, and the dev-mode routes.

Shapes from servers.md §4 and vLLM's own routes (see ``FakeVLLM``): ``/sleep`` and ``/wake_up``
answer 200 with an empty body, ``/is_sleeping`` answers ``{"is_sleeping": bool}``, and all sleep
routes exist only with ``VLLM_SERVER_DEV_MODE=1`` (otherwise FastAPI's 404 ``{"detail": "Not Found"}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.loopback import Reply, Request

QWEN = "Qwen/Qwen3-8B"
EMBED = "BAAI/bge-m3"

# Routes vLLM registers only with VLLM_SERVER_DEV_MODE=1.
DEV_ROUTES = {"/sleep", "/wake_up", "/is_sleeping", "/collective_rpc", "/reset_prefix_cache", "/server_info"}
NOT_FOUND: Reply = (404, {"detail": "Not Found"})  # FastAPI's answer to a route that does not exist


def openai_error(message: str, kind: str, code: int) -> Reply:
    """vLLM's ErrorResponse (vllm/entrypoints/serve/exception_handling/error_response.py)."""
    return code, {"error": {"message": message, "type": kind, "param": None, "code": code}}


@dataclass
class FakeVLLM:
    """A tiny `vllm serve`: one model, its sleep state, and every request it received.

    Shapes, servers.md §4 and vllm-project/vllm:
    - ``vllm/entrypoints/serve/sleep/api_router.py``: ``POST /sleep?level=&mode=`` and
      ``POST /wake_up[?tags=]`` → 200, empty body; ``GET /is_sleeping`` → ``{"is_sleeping": bool}``.
      A second sleep or a wake of an awake engine is a logged no-op (``v1/executor/abstract.py``);
      a wake with tags clears only those tags and the engine sleeps until every tag is awake.
    - ``serve/rpc/api_router.py``: ``POST /collective_rpc {"method"}`` → ``{"results": [...]}``.
    - ``serve/cache/api_router.py``: ``POST /reset_prefix_cache`` → 200, empty body.
    - ``instrumentator/server_info.py``: ``GET /server_info?config_format=json`` →
      ``{"vllm_config": {"model_config": {"enable_sleep_mode": …}, …}, "vllm_env", "system_env"}``;
      older servers dump the config as text, without the flag.
    - ``v1/metrics/loggers.py``: the ``vllm:engine_sleep_state`` gauge on ``GET /metrics``.
    - ``openai/models`` serving: ``GET /v1/models`` → model cards with ``max_model_len``; LoRA cards
      carry a ``parent`` and no ``max_model_len``.
    - ``middleware/authenticate.py``: with ``--api-key`` only ``/v1/…`` wants the Bearer token, else
      401 ``{"error": "Unauthorized"}``.
    - Without ``--enable-sleep-mode`` the v1 engine still "sleeps": 200, ``is_sleeping`` true, and
      nothing freed (``v1/worker/gpu_worker.py`` frees only its sleep pool).
    """

    model: str = QWEN
    aliases: tuple[str, ...] = ()
    loras: tuple[str, ...] = ()
    max_model_len: int | None = 32768
    embedding: bool = False  # a pooling model: no /v1/completions route
    dev_mode: bool = True  # VLLM_SERVER_DEV_MODE=1
    sleep_mode: bool = True  # --enable-sleep-mode
    config_json: bool = True  # /server_info?config_format=json (newer vLLM)
    level_gauge: bool = True  # vllm:engine_sleep_state on /metrics (newer vLLM)
    request_gauges: bool = True  # vllm:num_requests_running / _waiting on /metrics
    running: int = 0  # requests in the engine's batch now
    waiting: int = 0  # requests queued for it
    rpc: bool = True  # /collective_rpc (newer vLLM)
    inproc: bool = False  # VLLM_ENABLE_V1_MULTIPROCESSING=0: sleep mode=wait is refused
    api_key: str | None = None
    sleeping_tags: set[str] = field(default_factory=set)
    level: int = 0
    weights_valid: bool = True  # False after a level-2 sleep until reload_weights
    freed: bool = False  # a sleep that really moved the weights off the GPU
    requests: list[Request] = field(default_factory=list)
    overrides: dict[tuple[str, str], Reply] = field(default_factory=dict)

    @property
    def sleeping(self) -> bool:
        return bool(self.sleeping_tags)

    def asleep(self, level: int) -> FakeVLLM:
        """Start the fake already asleep at ``level`` (as if another client had put it to sleep)."""
        self.sleeping_tags, self.level, self.freed = {"weights", "kv_cache"}, level, True
        self.weights_valid = level == 1
        return self

    def posts(self) -> list[str]:
        """Every POST, path with its query, in order: the server-side effects of a command."""
        return [request.path for request in self.requests if request.method == "POST"]

    def handle(self, request: Request) -> Reply:
        self.requests.append(request)
        url = urlsplit(request.path)
        path, query = url.path, parse_qs(url.query)
        if (request.method, path) in self.overrides:
            return self.overrides[(request.method, path)]
        if self.api_key and path.startswith("/v1") and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": "Unauthorized"}
        if path in DEV_ROUTES and not self.dev_mode:
            return NOT_FOUND
        route = (request.method, path)
        if route == ("GET", "/v1/models"):
            cards: list[dict[str, Any]] = [
                {"id": name, "object": "model", "created": 1767225600, "owned_by": "vllm", "root": self.model,
                 "parent": None, "max_model_len": self.max_model_len,
                 "permission": [{"id": "modelperm-1", "object": "model_permission", "allow_sampling": True}]}
                for name in (self.model, *self.aliases)
            ]  # fmt: skip
            cards += [
                {"id": name, "object": "model", "created": 1767225600, "owned_by": "vllm",
                 "root": f"/adapters/{name}", "parent": self.model, "max_model_len": None, "permission": []}
                for name in self.loras
            ]  # fmt: skip
            return 200, {"object": "list", "data": cards}
        if route == ("GET", "/is_sleeping"):
            return 200, {"is_sleeping": self.sleeping}
        if route == ("POST", "/sleep"):
            level = int(query.get("level", ["1"])[0])
            if query.get("mode", ["abort"])[0] == "wait" and self.inproc:
                return openai_error("'wait' mode can't be used in inproc-engine mode", "BadRequestError", 400)
            if not self.sleeping:
                self.sleeping_tags, self.level, self.freed = {"weights", "kv_cache"}, level, self.sleep_mode
                self.weights_valid = level == 1 or not self.sleep_mode
            return 200, None
        if route == ("POST", "/wake_up"):
            tags = set(query.get("tags", [])) or {"weights", "kv_cache"}
            if self.sleeping and tags <= self.sleeping_tags:
                self.sleeping_tags -= tags
                if not self.sleeping:
                    self.level, self.freed = 0, False
            return 200, None
        if route == ("POST", "/collective_rpc"):
            if not self.rpc:
                return NOT_FOUND
            if request.body == {"method": "reload_weights"}:
                self.weights_valid = True
            return 200, {"results": [None]}
        if route == ("POST", "/reset_prefix_cache"):
            return 200, None
        if route == ("GET", "/server_info"):
            if query.get("config_format") == ["json"] and self.config_json:
                config = {"model_config": {"model": self.model, "max_model_len": self.max_model_len,
                                           "enable_sleep_mode": self.sleep_mode},
                          "cache_config": {"gpu_memory_utilization": 0.9}}  # fmt: skip
                return 200, {"vllm_config": config, "vllm_env": {"VLLM_SERVER_DEV_MODE": True}, "system_env": {}}
            return 200, {"vllm_config": f"model='{self.model}', speculative_config=None, seed=0"}
        if route == ("GET", "/metrics"):
            return 200, self.metrics()
        if route == ("POST", "/v1/completions"):
            if self.embedding:
                return NOT_FOUND
            choice = {"index": 0, "text": self.answer(), "logprobs": None, "finish_reason": "length"}
            return self.infer(request.body, {"choices": [choice]})
        if route == ("POST", "/v1/embeddings"):
            if not self.embedding:
                return openai_error("The model does not support Embeddings API", "BadRequestError", 400)
            return self.infer(request.body, {"data": [{"index": 0, "object": "embedding", "embedding": [0.1, 0.2]}]})
        return NOT_FOUND

    def infer(self, body: Any, result: dict[str, Any]) -> Reply:
        if body.get("model") not in (self.model, *self.aliases, *self.loras):
            return openai_error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404)
        if self.sleeping:
            # The real engine holds the request until someone wakes it; the test must never get here.
            return 500, "request sent to a sleeping engine"
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        return 200, {"id": "cmpl-1", "object": "list", "created": 1767225600, "model": body["model"], **result,
                     "usage": usage}  # fmt: skip

    def answer(self) -> str:
        return " there" if self.weights_valid else " ��garbage"

    def metrics(self) -> str:
        lines = []
        if self.request_gauges:
            lines += [
                "# HELP vllm:num_requests_running Number of requests in model execution batches.",
                "# TYPE vllm:num_requests_running gauge",
                f'vllm:num_requests_running{{engine="0",model_name="{self.model}"}} {float(self.running)}',
                "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
                "# TYPE vllm:num_requests_waiting gauge",
                f'vllm:num_requests_waiting{{engine="0",model_name="{self.model}"}} {float(self.waiting)}',
            ]
        if self.level_gauge:
            values = {"awake": not self.sleeping, "weights_offloaded": self.level == 1, "discard_all": self.level == 2}
            lines += ["# TYPE vllm:engine_sleep_state gauge"] + [
                f'vllm:engine_sleep_state{{engine="0",model_name="{self.model}",sleep_state="{state}"}} {float(on)}'
                for state, on in values.items()
            ]
        return "\n".join(lines) + "\n"

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
