"""llama.cpp router provider against recorded replies: the paths a real server rarely takes on demand
(a load racing the limit, a load that never finishes, a reply from something that is not
llama-server, a refused key). The everyday paths run against the real server in
``test_llamacpp_real.py``.

Shapes are the ones recorded from a real router in real-engine.md §5 and servers.md §2.2.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.errors import (
    DeadlineExceeded,
    ExitCode,
    ModelNotFound,
    ServerBusy,
    ServerError,
    Unsupported,
)
from sourceprep_models.providers import create_provider
from sourceprep_models.providers.base import LoadRequest
from sourceprep_models.providers.llamacpp import LlamaCppProvider, server_root
from tests.fakes.llamacpp import NOT_RUNNING, ROUTER_PROPS, entry

ENDPOINT = Endpoint(name="llama", kind="llamacpp", url="http://router.test:8080")
Handler = Callable[[httpx.Request], tuple[int, Any]]


def provider_with(handler: Handler, endpoint: Endpoint = ENDPOINT) -> tuple[LlamaCppProvider, list[str]]:
    seen: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        body = request.content.decode() if request.content else ""
        seen.append(
            f"{request.method} {request.url.path}{'?' + request.url.query.decode() if request.url.query else ''}"
            f"{' ' + body if body else ''}"
        )
        if request.url.path == "/props":
            return httpx.Response(200, json=ROUTER_PROPS)
        if request.url.path == "/models/sse":  # a router from before the event stream: the load polls
            return httpx.Response(404, json={"error": {"code": 404, "message": "File Not Found"}})
        status, payload = handler(request)
        if isinstance(payload, str):
            return httpx.Response(status, text=payload)
        return httpx.Response(status, json=payload)

    client = httpx.Client(base_url=server_root(endpoint.url), transport=httpx.MockTransport(respond))
    return LlamaCppProvider(endpoint, client=client, sleep=lambda _s: None), seen


def listing(*items: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"data": list(items), "object": "list"}


def test_registry_creates_the_llamacpp_provider() -> None:
    provider = create_provider(ENDPOINT)
    try:
        assert isinstance(provider, LlamaCppProvider)
        assert provider.capabilities.can_load and not provider.capabilities.sets_context
    finally:
        provider.close()


def test_url_given_as_the_openai_base_is_reduced_to_the_root() -> None:
    assert server_root("http://h:8080/v1/") == "http://h:8080"
    assert server_root("http://h:8080") == "http://h:8080"


def test_load_posts_the_id_then_polls_until_loaded() -> None:
    states = iter(["unloaded", "loading", "loading", "loaded", "loaded"])

    def handle(request: httpx.Request) -> tuple[int, Any]:
        if request.url.path == "/models/load":
            return 200, {"success": True}
        return listing(entry("tiny", next(states)))

    provider, seen = provider_with(handle)
    provider.load(LoadRequest(name="tiny"))
    assert seen.count('POST /models/load {"model":"tiny"}') == 1
    assert seen[-1] == "GET /models" and sum(line == "GET /models" for line in seen) == 4


def test_limit_reached_while_loading_is_busy() -> None:
    def handle(request: httpx.Request) -> tuple[int, Any]:
        if request.url.path == "/models/load":  # concurrent loads racing --models-max (servers.md §2.2)
            return 500, {
                "error": {"code": 500, "message": "model limit reached, try again later", "type": "server_error"}
            }
        return listing(entry("tiny"))

    provider, _ = provider_with(handle)
    with pytest.raises(ServerBusy) as caught:
        provider.load(LoadRequest(name="tiny"))
    assert "--models-max" in str(caught.value) and "retry" in str(caught.value)


def test_a_load_that_never_finishes_stops_at_the_deadline() -> None:
    clock = iter(float(tick) for tick in range(1000))

    def handle(request: httpx.Request) -> tuple[int, Any]:
        if request.url.path == "/models/load":
            return 200, {"success": True}
        return listing(entry("tiny", "loading", progress={"stages": ["text_model"], "value": 0.5}))

    provider, _ = provider_with(handle)
    provider._clock = lambda: next(clock)
    with pytest.raises(DeadlineExceeded) as caught:
        provider.load(LoadRequest(name="tiny", deadline_s=5))
    assert caught.value.exit_code == ExitCode.ERROR
    assert "still loading" in str(caught.value) and "--timeout" in str(caught.value)


def test_load_answered_by_something_else_is_a_server_error() -> None:
    def handle(request: httpx.Request) -> tuple[int, Any]:
        if request.url.path == "/models/load":
            return 200, "<html>welcome</html>"
        return listing(entry("tiny"))

    provider, _ = provider_with(handle)
    with pytest.raises(ServerError) as caught:
        provider.load(LoadRequest(name="tiny"))
    assert "did not answer like llama-server" in str(caught.value) and "'llama'" in str(caught.value)


def test_unknown_on_unload_is_400_but_still_model_not_found() -> None:
    def handle(request: httpx.Request) -> tuple[int, Any]:
        if request.url.path == "/models/unload":
            body = {"error": {"code": 400, "message": "model is not found", "type": "invalid_request_error"}}
            return 400, body
        return listing(entry("tiny", "loaded"))

    provider, _ = provider_with(handle)
    with pytest.raises(ModelNotFound):
        provider.unload("tiny")  # listed a moment ago, gone by the time the unload arrived


def test_unload_of_a_model_not_running_is_done() -> None:
    def handle(request: httpx.Request) -> tuple[int, Any]:
        if request.url.path == "/models/unload":
            return 400, NOT_RUNNING
        return listing(entry("tiny"))

    provider, seen = provider_with(handle)
    provider.unload("tiny")
    assert 'POST /models/unload {"model":"tiny"}' in seen


def test_unknown_name_is_looked_up_again_with_a_reload_before_giving_up() -> None:
    provider, seen = provider_with(lambda request: listing(entry("tiny")))
    with pytest.raises(ModelNotFound) as caught:
        provider.describe("tinny")
    assert "GET /models?reload=1" in seen
    assert "did you mean 'tiny'?" in str(caught.value)


def test_aliases_resolve_to_the_model() -> None:
    item = entry("tiny", "loaded")
    item["aliases"] = ["small"]
    provider, _ = provider_with(lambda request: listing(item))
    assert provider.describe("small").name == "tiny"


def test_sleeping_child_is_listed_asleep_and_does_not_hold_memory() -> None:
    provider, _ = provider_with(lambda request: listing(entry("tiny", "sleeping"), entry("other")))
    [model] = provider.list_loaded()
    assert (model.name, model.state, model.occupies_memory) == ("tiny", "asleep", False)


def test_not_a_llama_server_at_all() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="404 page not found")

    client = httpx.Client(base_url="http://router.test:8080", transport=httpx.MockTransport(respond))
    provider = LlamaCppProvider(ENDPOINT, client=client)
    with pytest.raises(ServerError) as caught:
        provider.list_loaded()
    assert "has no /props" in str(caught.value) and "router mode" in str(caught.value)


def test_refused_key_names_the_variable_and_never_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-llama-0123456789"
    monkeypatch.setenv("LLAMA_KEY", secret)
    endpoint = Endpoint(name="llama", kind="llamacpp", url="http://router.test:8080", api_key_env="LLAMA_KEY")
    sent: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("authorization", ""))
        return httpx.Response(401, json={"error": {"code": 401, "message": f"Invalid API Key {secret}"}})

    client = httpx.Client(base_url="http://router.test:8080", transport=httpx.MockTransport(respond))
    provider = LlamaCppProvider(endpoint, client=client)
    with pytest.raises(ServerError) as caught:
        provider.list_loaded()
    assert sent == [f"Bearer {secret}"]
    assert "LLAMA_KEY" in str(caught.value) and secret not in str(caught.value)


def test_single_model_server_cannot_unload() -> None:
    single_props = {"default_generation_settings": {"n_ctx": 4096}, "model_path": "/m/tiny.gguf"}

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/props":
            return httpx.Response(200, json=single_props)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "tiny", "meta": {"size": 1000}}]})
        return httpx.Response(404, json={"error": {"code": 404, "message": "File Not Found"}})

    client = httpx.Client(base_url="http://router.test:8080", transport=httpx.MockTransport(respond))
    provider = LlamaCppProvider(ENDPOINT, client=client)
    [model] = provider.list_loaded()
    assert (model.name, model.state, model.context_length) == ("tiny", "fixed", 4096)
    with pytest.raises(Unsupported) as caught:
        provider.unload("tiny")
    assert caught.value.exit_code == ExitCode.ERROR and "--models-dir" in str(caught.value)
    assert json.dumps(provider.server_facts()) == json.dumps(
        {"role": "single-model", "max_models": None, "autoload": None, "build": None}
    )


def test_the_runner_context_is_the_childs_ctx_size_else_the_trained_context(tmp_path: Any) -> None:
    from tests.realserver.make_gguf import PRESETS, write_model

    pytest.importorskip("gguf", reason="the model generator needs the gguf package")
    gguf = write_model(tmp_path / "m.gguf", PRESETS["tiny"])  # trained context 2048

    def child(model_id: str, *args: str) -> dict[str, Any]:
        item = entry(model_id)
        item["status"]["args"] = ["llama-server", "--port", "0", "--alias", model_id, *args, "--model", str(gguf)]
        return item

    items = [
        child("preset", "--ctx-size", "4096", "-c", "1536"),  # the preset's value comes last on the child's line
        child("zero", "--ctx-size", "0"),  # 0: the model's own (llama-server --help)
        child("absent"),
        child("batch", "-c", "640", "-ub", "128", "-ctk", "q8_0"),
    ]
    provider, _seen = provider_with(lambda _r: listing(*items))

    runners = {name: provider.describe(name).runner for name in ("preset", "zero", "absent", "batch")}

    assert {name: runner.context for name, runner in runners.items() if runner} == {
        "preset": 1536,
        "zero": 2048,
        "absent": 2048,
        "batch": 640,
    }
    assert runners["batch"] is not None
    assert (runners["batch"].num_batch, runners["batch"].kv_cache_type) == (128, "q8_0")
    meta = provider.gguf_metadata("preset")
    assert meta is not None and meta.context_length == 2048


def test_a_remote_routers_loaded_size_is_the_weights_it_reports() -> None:
    provider, _seen = provider_with(lambda _r: listing(entry("tiny", "loaded")))

    [model] = provider.list_loaded()

    assert (model.size, model.context_length) == (547072, 512)  # no process of it on this machine to read
