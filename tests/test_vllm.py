"""vLLM provider: sleep (unload), wake plus warm-up (load), the sleep state in status, and errors.

The fake answers with the shapes servers.md §4 records and that vLLM's own routes produce (read in
vllm-project/vllm): ``/sleep`` and ``/wake_up`` answer 200 with an empty body, ``/is_sleeping``
answers ``{"is_sleeping": bool}``, and all sleep routes exist only with ``VLLM_SERVER_DEV_MODE=1``
(otherwise FastAPI's 404 ``{"detail": "Not Found"}``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.errors import (
    DoesNotFit,
    ExitCode,
    ModelNotFound,
    ServerBusy,
    ServerError,
    ServerUnreachable,
    Unsupported,
)
from sourceprep_models.providers import create_provider
from sourceprep_models.providers.base import LoadRequest
from sourceprep_models.providers.vllm import VLLMProvider, server_root
from tests.conftest import CliFn
from tests.loopback import Reply, Request, serve, unused_port

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
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{engine="0",model_name="{self.model}"}} 0.0',
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


ENDPOINT = Endpoint(name="gpu", kind="vllm", url="http://gpu.test:8000/v1")
LEVEL2 = Endpoint(name="gpu", kind="vllm", url="http://gpu.test:8000", sleep_level=2)


def provider_for(server: FakeVLLM, endpoint: Endpoint = ENDPOINT) -> VLLMProvider:
    client = httpx.Client(base_url=server_root(endpoint.url), transport=server.transport())
    return VLLMProvider(endpoint, client=client)


# -- listing ----------------------------------------------------------------------------------------


def test_registry_creates_the_vllm_provider_with_capabilities_per_sleep_level() -> None:
    for endpoint, parks in ((ENDPOINT, True), (LEVEL2, False)):
        provider = create_provider(endpoint)
        try:
            assert isinstance(provider, VLLMProvider)
            caps = provider.capabilities
            assert caps.can_load and caps.can_unload and caps.can_pin and not caps.reports_memory
            assert caps.parks_in_ram is parks and not caps.sets_context
        finally:
            provider.close()


def test_lists_the_served_model_with_its_max_model_len() -> None:
    [info] = provider_for(FakeVLLM()).list_available()
    assert (info.name, info.trained_context) == (QWEN, 32768)
    assert info.identity == "vllm:http://gpu.test:8000:Qwen/Qwen3-8B" and not info.embedding_only


def test_aliases_and_lora_adapters_are_the_same_resident_model() -> None:
    server = FakeVLLM(aliases=("qwen",), loras=("sql-lora",))
    provider = provider_for(server)
    infos = {info.name: info for info in provider.list_available()}
    assert set(infos) == {QWEN, "qwen", "sql-lora"}
    assert len({info.identity for info in infos.values()}) == 1
    assert infos["sql-lora"].trained_context == 32768  # an adapter card has none of its own
    assert [model.name for model in provider.list_loaded()] == [QWEN]  # one process, listed once


def test_url_given_as_the_api_base_is_reduced_to_the_server_root() -> None:
    assert server_root("http://h:8000") == "http://h:8000"
    assert server_root("http://h:8000/v1/") == "http://h:8000"


def test_an_older_listing_without_max_model_len_leaves_the_context_unknown() -> None:
    [loaded] = provider_for(FakeVLLM(max_model_len=None)).list_loaded()
    assert loaded.context_length is None and loaded.state == "loaded"


def test_describe_unknown_model_names_the_one_this_vllm_serves() -> None:
    provider = provider_for(FakeVLLM())
    with pytest.raises(ModelNotFound) as caught:
        provider.describe("meta-llama/Llama-3.1-8B")
    assert caught.value.exit_code == ExitCode.MODEL_NOT_FOUND
    assert f"this vLLM serves only '{QWEN}'" in str(caught.value) and "'gpu'" in str(caught.value)
    with pytest.raises(ModelNotFound, match="did you mean 'Qwen/Qwen3-8B'"):
        provider.describe("Qwen/Qwen3-8")


# -- the sleep state in the listing ------------------------------------------------------------------


def test_awake_model_is_loaded_with_its_context() -> None:
    [loaded] = provider_for(FakeVLLM()).list_loaded()
    assert (loaded.name, loaded.state, loaded.context_length, loaded.occupies_memory) == (QWEN, "loaded", 32768, True)


def test_level_1_sleep_is_parked_and_level_2_asleep_as_the_server_reports_it() -> None:
    [parked] = provider_for(FakeVLLM().asleep(1), LEVEL2).list_loaded()  # the gauge beats the config
    assert parked.state == "parked" and not parked.occupies_memory
    [asleep] = provider_for(FakeVLLM().asleep(2), ENDPOINT).list_loaded()
    assert asleep.state == "asleep" and not asleep.occupies_memory


def test_without_the_level_gauge_the_endpoint_sleep_level_decides() -> None:
    assert provider_for(FakeVLLM(level_gauge=False).asleep(2), ENDPOINT).list_loaded()[0].state == "parked"
    assert provider_for(FakeVLLM(level_gauge=False).asleep(1), LEVEL2).list_loaded()[0].state == "asleep"


def test_without_dev_mode_the_model_is_fixed() -> None:
    server = FakeVLLM(dev_mode=False)
    [loaded] = provider_for(server).list_loaded()
    assert loaded.state == "fixed" and loaded.occupies_memory


# -- unload = sleep ----------------------------------------------------------------------------------


def test_unload_sleeps_at_the_endpoint_level_and_waits_for_requests_in_flight() -> None:
    server = FakeVLLM()
    provider = provider_for(server)
    provider.unload(QWEN)
    assert server.posts() == ["/sleep?level=1&mode=wait"]
    assert server.freed and provider.list_loaded()[0].state == "parked"

    server2 = FakeVLLM()
    provider_for(server2, LEVEL2).unload(QWEN)
    assert server2.posts() == ["/sleep?level=2&mode=wait"] and server2.level == 2


def test_unload_of_a_sleeping_model_sends_nothing() -> None:
    server = FakeVLLM().asleep(1)
    provider_for(server).unload(QWEN)
    assert server.posts() == []


def test_unload_without_dev_mode_names_the_flag_and_the_variable() -> None:
    server = FakeVLLM(dev_mode=False)
    with pytest.raises(Unsupported) as caught:
        provider_for(server).unload(QWEN)
    message = str(caught.value)
    assert "--enable-sleep-mode" in message and "VLLM_SERVER_DEV_MODE=1" in message and "\n" not in message
    assert caught.value.exit_code == ExitCode.ERROR and server.posts() == []


def test_unload_refuses_when_the_server_was_started_without_enable_sleep_mode() -> None:
    server = FakeVLLM(sleep_mode=False)  # dev mode on: the routes exist, but a sleep would free nothing
    with pytest.raises(Unsupported, match="without --enable-sleep-mode"):
        provider_for(server).unload(QWEN)
    assert server.posts() == [] and not server.sleeping


def test_unload_on_an_older_server_that_cannot_report_the_flag_still_sleeps() -> None:
    server = FakeVLLM(config_json=False, level_gauge=False)
    provider_for(server).unload(QWEN)
    assert server.posts() == ["/sleep?level=1&mode=wait"] and server.freed


def test_an_in_process_engine_that_cannot_wait_is_sent_the_plain_sleep() -> None:
    server = FakeVLLM(inproc=True)
    provider_for(server).unload(QWEN)
    assert server.posts() == ["/sleep?level=1&mode=wait", "/sleep?level=1"] and server.sleeping


def test_unload_of_another_model_is_model_not_found() -> None:
    server = FakeVLLM()
    with pytest.raises(ModelNotFound):
        provider_for(server).unload("mistralai/Mistral-7B")
    assert server.posts() == []


def test_parking_without_host_ram_does_not_fit_and_suggests_level_2() -> None:
    server = FakeVLLM()
    server.overrides[("POST", "/sleep")] = openai_error(
        "RuntimeError: CUDA error: out of memory (cudaMallocHost)", "InternalServerError", 500
    )
    with pytest.raises(DoesNotFit, match=r"host RAM.*sleep_level = 2") as caught:
        provider_for(server).unload(QWEN)
    assert caught.value.exit_code == ExitCode.DOES_NOT_FIT


# -- load = wake + warm-up ----------------------------------------------------------------------------


def test_load_of_an_awake_model_sends_nothing() -> None:
    server = FakeVLLM()
    outcome = provider_for(server).load(LoadRequest(QWEN, options={"num_ctx": 8192}))
    assert server.posts() == [] and outcome.server_load_s is None


def test_load_of_a_fixed_model_sends_nothing() -> None:
    server = FakeVLLM(dev_mode=False)
    provider_for(server).load(LoadRequest(QWEN))
    assert server.posts() == []


def test_load_wakes_a_parked_model_then_warms_it_with_one_token() -> None:
    server = FakeVLLM().asleep(1)
    provider = provider_for(server)
    outcome = provider.load(LoadRequest(QWEN))
    assert server.posts() == ["/wake_up", "/v1/completions"]
    warm = [request.body for request in server.requests if request.path == "/v1/completions"]
    assert warm == [{"model": QWEN, "prompt": "hi", "max_tokens": 1}]
    assert outcome.server_load_s is not None and outcome.wall_s >= outcome.server_load_s
    assert provider.list_loaded()[0].state == "loaded"


def test_load_after_a_level_2_sleep_reloads_the_weights_before_serving() -> None:
    server = FakeVLLM()
    provider = provider_for(server, LEVEL2)
    provider.unload(QWEN)
    provider.load(LoadRequest(QWEN))
    assert server.posts() == [
        "/sleep?level=2&mode=wait",
        "/wake_up?tags=weights",
        "/collective_rpc",
        "/wake_up?tags=kv_cache",
        "/reset_prefix_cache",
        "/v1/completions",
    ]
    assert server.weights_valid and not server.sleeping


def test_the_reported_level_wins_over_the_config_when_waking() -> None:
    server = FakeVLLM().asleep(2)  # slept at level 2 by someone else; this endpoint says level 1
    provider_for(server, ENDPOINT).load(LoadRequest(QWEN))
    assert "/collective_rpc" in server.posts() and server.weights_valid


def test_level_2_wake_on_a_server_without_collective_rpc_is_unsupported() -> None:
    server = FakeVLLM(rpc=False, level_gauge=False).asleep(2)
    with pytest.raises(Unsupported, match="sleep_level = 1 for endpoint 'gpu'"):
        provider_for(server, LEVEL2).load(LoadRequest(QWEN))
    assert "/v1/completions" not in server.posts()


def test_an_embedding_model_is_warmed_through_embeddings() -> None:
    server = FakeVLLM(model=EMBED, embedding=True).asleep(1)
    provider_for(server).load(LoadRequest(EMBED, embedding=True))
    assert server.posts() == ["/wake_up", "/v1/embeddings"]

    server = FakeVLLM(model=EMBED, embedding=True).asleep(1)
    provider_for(server).load(LoadRequest(EMBED))  # unknown kind: completions is missing, so embeddings
    assert server.posts() == ["/wake_up", "/v1/completions", "/v1/embeddings"]


def test_a_larger_context_than_max_model_len_names_the_flag_and_sends_nothing() -> None:
    server = FakeVLLM().asleep(1)
    with pytest.raises(Unsupported, match="--max-model-len 65536"):
        provider_for(server).load(LoadRequest(QWEN, options={"num_ctx": 65536}))
    assert server.posts() == []
    provider_for(server).load(LoadRequest(QWEN, options={"num_ctx": 4096}))  # shorter prompts are fine
    assert server.posts() == ["/wake_up", "/v1/completions"]


def test_load_of_a_model_this_vllm_does_not_serve_is_model_not_found() -> None:
    server = FakeVLLM().asleep(1)
    with pytest.raises(ModelNotFound, match="serves only"):
        provider_for(server).load(LoadRequest("mistralai/Mistral-7B"))
    assert server.posts() == []


def test_wake_out_of_memory_does_not_fit() -> None:
    server = FakeVLLM().asleep(1)
    server.overrides[("POST", "/wake_up")] = openai_error(
        "CUDA out of memory. Tried to allocate 15.26 GiB. GPU 0 has a total capacity of 23.64 GiB of which "
        "2.01 GiB is free.",
        "InternalServerError",
        500,
    )
    with pytest.raises(DoesNotFit, match="not enough host/GPU memory to wake") as caught:
        provider_for(server).load(LoadRequest(QWEN))
    assert caught.value.exit_code == ExitCode.DOES_NOT_FIT
    assert "/v1/completions" not in server.posts()


def test_wake_crash_with_a_bare_500_is_a_server_error_with_a_hint() -> None:
    server = FakeVLLM().asleep(1)
    server.overrides[("POST", "/wake_up")] = (500, "Internal Server Error")  # older FastAPI default
    with pytest.raises(ServerError, match=r"500 to POST /wake_up.*check vLLM's log"):
        provider_for(server).load(LoadRequest(QWEN))


def test_a_model_still_sleeping_after_wake_up_is_an_error_and_gets_no_request() -> None:
    server = FakeVLLM().asleep(1)
    server.overrides[("POST", "/wake_up")] = (200, None)  # accepted, but the engine stays asleep
    with pytest.raises(ServerError, match="still says it is sleeping"):
        provider_for(server).load(LoadRequest(QWEN))
    assert "/v1/completions" not in server.posts()


def test_a_busy_server_is_server_busy() -> None:
    server = FakeVLLM().asleep(1)
    server.overrides[("POST", "/v1/completions")] = (
        503,
        {"error": "The model is currently scaling. Please try again later."},
    )
    with pytest.raises(ServerBusy, match="currently scaling"):
        provider_for(server).load(LoadRequest(QWEN))


# -- a 200 is not a success -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "reply"),
    [
        (("GET", "/v1/models"), (200, "<html>hello</html>")),
        (("GET", "/v1/models"), (200, {"object": "list", "data": [{"name": "no id"}]})),
        (("GET", "/is_sleeping"), (200, {"sleeping": "no"})),
        (("GET", "/is_sleeping"), (200, "<html>proxy login</html>")),
    ],
)
def test_an_unexpected_200_is_a_server_error_naming_the_endpoint(route: tuple[str, str], reply: Reply) -> None:
    server = FakeVLLM()
    server.overrides[route] = reply
    with pytest.raises(ServerError) as caught:
        provider_for(server).list_loaded()
    assert "gpu.test:8000" in str(caught.value) and "'gpu'" in str(caught.value)
    assert "vLLM" in str(caught.value)


def test_a_warm_up_answered_with_a_bare_200_is_a_server_error() -> None:
    server = FakeVLLM().asleep(1)
    server.overrides[("POST", "/v1/completions")] = (200, {})
    with pytest.raises(ServerError, match="/v1/completions did not answer like vLLM"):
        provider_for(server).load(LoadRequest(QWEN))


def test_a_sleep_answered_with_an_html_page_is_a_server_error() -> None:
    server = FakeVLLM()
    server.overrides[("POST", "/sleep")] = (200, "<html>not vllm</html>")
    with pytest.raises(ServerError, match="/sleep did not answer like vLLM"):
        provider_for(server).unload(QWEN)


# -- auth and connection errors ---------------------------------------------------------------------------


def test_api_key_is_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "vllm-SECRET-key-4242"
    server = FakeVLLM(api_key=secret).asleep(1)
    monkeypatch.setenv("VLLM_KEY", secret)
    endpoint = Endpoint(name="gpu", kind="vllm", url="http://gpu.test:8000", api_key_env="VLLM_KEY")
    provider_for(server, endpoint).load(LoadRequest(QWEN))
    assert {request.headers.get("authorization") for request in server.requests} == {f"Bearer {secret}"}

    monkeypatch.setenv("VLLM_KEY", "wrong-key")
    server.overrides[("GET", "/v1/models")] = (401, {"error": f"Unauthorized (expected {secret})"})
    with pytest.raises(ServerError) as caught:
        provider_for(server, endpoint).list_loaded()
    assert "401" in str(caught.value) and "VLLM_KEY" in str(caught.value)
    monkeypatch.setenv("VLLM_KEY", secret)
    with pytest.raises(ServerError) as caught:
        provider_for(server, endpoint).list_loaded()
    assert secret not in str(caught.value) and secret not in repr(provider_for(server, endpoint))


def test_missing_api_key_variable_is_named() -> None:
    server = FakeVLLM(api_key="k")
    endpoint = Endpoint(name="gpu", kind="vllm", url="http://gpu.test:8000", api_key_env="VLLM_KEY_UNSET")
    with pytest.raises(ServerError, match=r"VLLM_KEY_UNSET .* is not set"):
        provider_for(server, endpoint).list_loaded()


def test_connection_refused_is_server_unreachable_with_the_serve_command() -> None:
    provider = VLLMProvider(Endpoint(name="gpu", kind="vllm", url=f"http://127.0.0.1:{unused_port()}"))
    try:
        with pytest.raises(ServerUnreachable) as caught:
            provider.list_loaded()
    finally:
        provider.close()
    assert caught.value.exit_code == ExitCode.SERVER_UNREACHABLE
    assert "vllm serve" in str(caught.value) and "--enable-sleep-mode" in str(caught.value)


# -- end to end through the CLI, against a real loopback server ----------------------------------------------


@pytest.fixture
def vllm() -> Iterator[tuple[FakeVLLM, str]]:
    server = FakeVLLM()
    with serve(server.handle) as url:
        yield server, url


def _config(write_config: Callable[[str], Any], url: str, extra: str = "") -> str:
    return str(write_config(f'[endpoints.gpu]\nkind = "vllm"\nurl = "{url}/v1"\n{extra}'))


def _states(cli: CliFn, path: str) -> list[tuple[str, str, int | None]]:
    status = cli("--config", path, "status", "--json", "--no-hardware")
    assert status.exit_code == 0, status.stderr
    [endpoint] = status.json()["endpoints"]
    assert (endpoint["kind"], endpoint["ok"]) == ("vllm", True)
    return [(model["name"], model["state"], model["context_length"]) for model in endpoint["models"]]


def test_cli_unload_parks_and_load_wakes_over_a_real_socket(
    cli: CliFn, vllm: tuple[FakeVLLM, str], write_config: Callable[[str], Any]
) -> None:
    server, url = vllm
    path = _config(write_config, url)
    assert _states(cli, path) == [(QWEN, "loaded", 32768)]

    unloaded = cli("--config", path, "unload", QWEN, "--json")
    assert unloaded.exit_code == 0, unloaded.stderr
    assert unloaded.json()["endpoints"][0]["unloaded"] == [QWEN]
    assert server.posts() == ["/sleep?level=1&mode=wait"]
    assert _states(cli, path) == [(QWEN, "parked", 32768)]

    loaded = cli("--config", path, "load", QWEN, "--no-warm", "--json")
    assert loaded.exit_code == 0, loaded.stderr
    assert server.posts()[1:] == ["/wake_up", "/v1/completions"]
    report = loaded.json()
    assert report["outcome"] == "loaded" and report["resident"]["state"] == "loaded"
    assert any(step["step"] == "load" and step["server_s"] is not None for step in report["steps"])
    assert _states(cli, path) == [(QWEN, "loaded", 32768)]


def test_cli_load_of_an_awake_model_sends_nothing(
    cli: CliFn, vllm: tuple[FakeVLLM, str], write_config: Callable[[str], Any]
) -> None:
    server, url = vllm
    path = _config(write_config, url)
    loaded = cli("--config", path, "load", QWEN, "--ctx", "8192", "--no-warm", "--json")
    assert loaded.exit_code == 0, loaded.stderr
    assert loaded.json()["outcome"] == "already-loaded" and server.posts() == []


def test_cli_level_2_sleep_shows_asleep_and_wakes_with_a_weight_reload(
    cli: CliFn, vllm: tuple[FakeVLLM, str], write_config: Callable[[str], Any]
) -> None:
    server, url = vllm
    path = _config(write_config, url, "sleep_level = 2\n")
    assert cli("--config", path, "unload", "--all").exit_code == 0
    assert _states(cli, path) == [(QWEN, "asleep", 32768)]
    loaded = cli("--config", path, "load", QWEN, "--no-warm")
    assert loaded.exit_code == 0, loaded.stderr
    assert server.posts() == [
        "/sleep?level=2&mode=wait",
        "/wake_up?tags=weights",
        "/collective_rpc",
        "/wake_up?tags=kv_cache",
        "/reset_prefix_cache",
        "/v1/completions",
    ]
    assert server.weights_valid and _states(cli, path) == [(QWEN, "loaded", 32768)]


def test_cli_unload_all_leaves_a_sleeping_model_alone(
    cli: CliFn, vllm: tuple[FakeVLLM, str], write_config: Callable[[str], Any]
) -> None:
    server, url = vllm
    path = _config(write_config, url)
    server.asleep(1)
    result = cli("--config", path, "unload", "--all", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["endpoints"][0]["unloaded"] == [] and server.posts() == []


def test_cli_without_dev_mode_status_shows_fixed_and_unload_names_the_fix(
    cli: CliFn, vllm: tuple[FakeVLLM, str], write_config: Callable[[str], Any]
) -> None:
    server, url = vllm
    server.dev_mode = False
    path = _config(write_config, url)
    assert _states(cli, path) == [(QWEN, "fixed", 32768)]
    result = cli("--config", path, "unload", QWEN)
    assert result.exit_code == 1
    assert "--enable-sleep-mode" in result.stderr and "VLLM_SERVER_DEV_MODE=1" in result.stderr
    assert server.posts() == []


def test_cli_unknown_model_exits_3(cli: CliFn, vllm: tuple[FakeVLLM, str], write_config: Callable[[str], Any]) -> None:
    server, url = vllm
    result = cli("--config", _config(write_config, url), "load", "mistralai/Mistral-7B", "--no-warm")
    assert result.exit_code == ExitCode.MODEL_NOT_FOUND
    assert f"this vLLM serves only '{QWEN}'" in result.stderr and server.posts() == []


def test_cli_server_down_exits_4(cli: CliFn, write_config: Callable[[str], Any]) -> None:
    path = _config(write_config, f"http://127.0.0.1:{unused_port()}")
    result = cli("--config", path, "load", QWEN, "--no-warm")
    assert result.exit_code == ExitCode.SERVER_UNREACHABLE
    assert "vllm serve" in result.stderr
    status = cli("--config", path, "status", "--json", "--no-hardware")
    assert status.exit_code == ExitCode.SERVER_UNREACHABLE
    assert status.json()["endpoints"][0]["ok"] is False
