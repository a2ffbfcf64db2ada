"""vLLM provider: sleep (unload), wake plus warm-up (load), the sleep state in status, and errors.

The fake answers with the shapes servers.md §4 records and that vLLM's own routes produce (read in
vllm-project/vllm): ``/sleep`` and ``/wake_up`` answer 200 with an empty body, ``/is_sleeping``
answers ``{"is_sleeping": bool}``, and all sleep routes exist only with ``VLLM_SERVER_DEV_MODE=1``
(otherwise FastAPI's 404 ``{"detail": "Not Found"}``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

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
from tests.fakes.vllm import EMBED, QWEN, FakeVLLM, openai_error
from tests.loopback import Reply, serve, unused_port

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
