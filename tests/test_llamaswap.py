"""llama-swap provider: the model table, running models, load through /upstream, unload, old builds, errors.

The fake server answers with the routes and bodies servers.md §3.3 records, as read from
llama-swap's source (``internal/server/api.go`` and ``apigroup.go``; ``proxy/proxymanager*.go`` for
the older gin-based builds): ``/running`` entries ``{model, state, cmd, …}``, the UI's
``/api/events`` stream whose ``modelStatus`` event carries the config's models, JSON errors
``{"src": "llama-swap", "error": …}``, plain-text ``OK`` from the unloads, and a bare 404 for a
route a build does not have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
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
    ServerUnreachable,
    Unsupported,
)
from sourceprep_models.providers import create_provider
from sourceprep_models.providers.base import LoadRequest
from sourceprep_models.providers.llamaswap import LlamaSwapProvider, server_root
from tests.conftest import CliFn
from tests.fakes.llamaswap import BROKEN, DRAFT, EMBED, GEMMA, PEER, QWEN, FakeLlamaSwap, Reply, error_body
from tests.loopback import serve, unused_port

ENDPOINT = Endpoint(name="swap", kind="llamaswap", url="http://swap.test:8080/v1")


def provider_for(
    server: FakeLlamaSwap, endpoint: Endpoint = ENDPOINT, fail: Mapping[str, Exception] | None = None
) -> LlamaSwapProvider:
    client = httpx.Client(base_url=server_root(endpoint.url), transport=server.transport(fail))
    return LlamaSwapProvider(endpoint, client=client)


# -- the model table ----------------------------------------------------------------------------------


def test_registry_creates_the_llamaswap_provider() -> None:
    provider = create_provider(ENDPOINT)
    try:
        assert isinstance(provider, LlamaSwapProvider)
        caps = provider.capabilities
        assert caps.can_load and caps.can_unload
        assert not caps.can_pin and not caps.reports_memory and not caps.sets_context
    finally:
        provider.close()


def test_the_model_table_comes_from_the_ui_event_stream_with_aliases_and_unlisted_models() -> None:
    server = FakeLlamaSwap()
    provider = provider_for(server)
    models = {info.name: info for info in provider.list_available()}
    assert set(models) == {QWEN, GEMMA, EMBED, DRAFT, BROKEN, PEER}
    assert models[PEER].remote and not models[QWEN].remote
    alias = provider.describe("gpt-4o-mini")
    assert alias.name == QWEN and alias.identity == models[QWEN].identity  # one model, one identity
    assert provider.describe(DRAFT).name == DRAFT
    assert len({info.identity for info in models.values()}) == len(models)
    # One read of the stream serves every later lookup; /v1/models is not needed.
    assert server.sent("GET", "/api/events") == ["/api/events"] and server.sent("GET", "/v1/models") == []


def test_a_build_without_the_event_stream_is_read_from_v1_models() -> None:
    server = FakeLlamaSwap(events=False, aliases_in_list=True)
    provider = provider_for(server)
    models = {info.name: info for info in provider.list_available()}
    # /v1/models hides unlisted models and shows aliases as models of their own (servers.md §3.3).
    assert set(models) == {QWEN, "gpt-4o-mini", GEMMA, EMBED, "embedder", BROKEN, PEER}
    assert models[PEER].remote
    with pytest.raises(ModelNotFound):
        provider.describe(DRAFT)


def test_a_stream_without_aliases_still_lists_every_model() -> None:
    provider = provider_for(FakeLlamaSwap(event_aliases=False))
    assert {info.name for info in provider.list_available()} == {QWEN, GEMMA, EMBED, DRAFT, BROKEN, PEER}
    with pytest.raises(ModelNotFound):
        provider.describe("gpt-4o-mini")


def test_describe_unknown_model_suggests_the_close_one() -> None:
    provider = provider_for(FakeLlamaSwap())
    with pytest.raises(ModelNotFound) as caught:
        provider.describe("qwen3-8")
    assert caught.value.exit_code == ExitCode.MODEL_NOT_FOUND
    assert "did you mean 'qwen3-8b'?" in str(caught.value) and "'swap'" in str(caught.value)
    with pytest.raises(ModelNotFound, match=r"config\.yaml"):
        provider.describe("mistral-large")


def test_url_given_as_the_openai_base_is_reduced_to_the_root() -> None:
    assert server_root("http://h:8080") == "http://h:8080"
    assert server_root("http://h:8080/v1/") == "http://h:8080"
    assert server_root("http://h:8080/openai/v1") == "http://h:8080"


# -- running models -------------------------------------------------------------------------------------


def test_running_models_with_their_states_and_the_context_their_cmd_fixes() -> None:
    server = FakeLlamaSwap(running={QWEN: "ready", GEMMA: "starting", EMBED: "ready", DRAFT: "stopping"})
    loaded = provider_for(server).list_loaded()
    assert [(m.name, m.state, m.context_length) for m in loaded] == [
        (GEMMA, "loading", 8192),
        (EMBED, "loaded", None),
        (QWEN, "loaded", 16384),
    ]
    assert all(m.size is None and m.size_vram is None and m.expires_at is None for m in loaded)
    # EMBED is in a persistent group, but no llama-swap API exposes groups: not reported as pinned.
    assert not any(m.pinned for m in loaded)


def test_running_entries_of_older_builds_carry_only_model_and_state() -> None:
    server = FakeLlamaSwap()
    server.overrides[("GET", "/running")] = (200, {"running": [{"model": DRAFT, "state": "ready"}, {"model": QWEN}]})
    assert [(m.name, m.state, m.context_length) for m in provider_for(server).list_loaded()] == [
        (DRAFT, "loaded", None),
        (QWEN, "loaded", None),
    ]


def test_vllm_context_is_read_from_max_model_len() -> None:
    server = FakeLlamaSwap(running={DRAFT: "ready"})
    assert [m.context_length for m in provider_for(server).list_loaded()] == [4096]


# -- load -------------------------------------------------------------------------------------------------


def test_load_swaps_the_model_in_through_its_upstream_health_route() -> None:
    server = FakeLlamaSwap(running={GEMMA: "ready", EMBED: "ready"})
    provider = provider_for(server)
    outcome = provider.load(LoadRequest(QWEN, options={"num_ctx": 16384}, deadline_s=321.0))
    assert server.sent("GET", "/upstream/") == [f"/upstream/{QWEN}/health"]
    assert server.read_timeouts[f"/upstream/{QWEN}/health"] == 321.0  # the load is bounded by its deadline only
    assert outcome.name == QWEN and outcome.server_load_s is None and outcome.wall_s >= 0
    # llama-swap's own swap rules stopped GEMMA; the persistent EMBED stayed.
    assert {(m.name, m.state) for m in provider.list_loaded()} == {(QWEN, "loaded"), (EMBED, "loaded")}


def test_load_of_a_ready_model_sends_nothing_and_of_a_starting_one_waits_for_it() -> None:
    server = FakeLlamaSwap(running={QWEN: "ready", EMBED: "starting"})
    provider = provider_for(server)
    provider.load(LoadRequest(QWEN))
    assert server.sent("GET", "/upstream/") == []
    provider.load(LoadRequest(EMBED))
    assert server.sent("GET", "/upstream/") == [f"/upstream/{EMBED}/health"]


def test_load_by_alias_swaps_in_the_real_model() -> None:
    server = FakeLlamaSwap()
    outcome = provider_for(server).load(LoadRequest("gpt-4o-mini"))
    assert server.sent("GET", "/upstream/") == [f"/upstream/{QWEN}/health"]
    assert outcome.name == "gpt-4o-mini" and server.running == {QWEN: "ready"}


def test_load_succeeds_when_the_upstream_has_no_health_route() -> None:
    server = FakeLlamaSwap()
    provider_for(server).load(LoadRequest(GEMMA))  # the upstream answers 404, the model is ready
    assert server.sent("GET", "/upstream/") == [f"/upstream/{GEMMA}/health"]
    assert server.running == {GEMMA: "ready"}


def test_failed_start_is_a_server_error_pointing_at_the_upstream_log() -> None:
    server = FakeLlamaSwap()
    with pytest.raises(ServerError) as caught:
        provider_for(server).load(LoadRequest(BROKEN))
    message = str(caught.value)
    assert BROKEN in message and "502" in message and "unable to start process" in message
    assert "http://swap.test:8080/logs/stream/upstream" in message and "'swap'" in message and "\n" not in message
    assert caught.value.exit_code == ExitCode.ERROR


@pytest.mark.parametrize(
    "reply",
    [(404, error_body("model not found")), (400, "model id required in path")],  # internal/server; gin builds
)
def test_a_model_the_server_refuses_as_unknown_is_model_not_found(reply: Reply) -> None:
    server = FakeLlamaSwap()
    server.overrides[("GET", f"/upstream/{QWEN}/health")] = reply
    with pytest.raises(ModelNotFound) as caught:
        provider_for(server).load(LoadRequest(QWEN))
    assert caught.value.exit_code == ExitCode.MODEL_NOT_FOUND


@pytest.mark.parametrize(
    "reply", [(429, "Too many requests"), (503, "Process can not ProxyRequest, state is stopping")]
)
def test_a_full_queue_or_a_stopping_process_is_busy(reply: Reply) -> None:
    server = FakeLlamaSwap()
    server.overrides[("GET", f"/upstream/{QWEN}/health")] = reply
    with pytest.raises(ServerBusy, match="retry"):
        provider_for(server).load(LoadRequest(QWEN))


def test_a_200_from_the_upstream_route_is_not_taken_for_a_load() -> None:
    server = FakeLlamaSwap()
    server.overrides[("GET", f"/upstream/{QWEN}/health")] = (200, {"status": "ok"})  # yet nothing runs
    with pytest.raises(ServerError, match=f"/running lists {QWEN} as not running"):
        provider_for(server).load(LoadRequest(QWEN))


def test_load_past_the_deadline_says_llama_swap_keeps_starting_it() -> None:
    server = FakeLlamaSwap()
    fail = {f"/upstream/{QWEN}/health": httpx.ReadTimeout("timed out")}
    with pytest.raises(DeadlineExceeded) as caught:
        provider_for(server, fail=fail).load(LoadRequest(QWEN, deadline_s=2.0))
    assert "gave up after 2s" in str(caught.value) and "keeps starting it" in str(caught.value)


@pytest.mark.parametrize("action", ["load", "unload"])
def test_a_peer_model_cannot_be_loaded_or_unloaded_here(action: str) -> None:
    server = FakeLlamaSwap()
    provider = provider_for(server)
    with pytest.raises(Unsupported, match="peer 'cloud'"):
        provider.load(LoadRequest(PEER)) if action == "load" else provider.unload(PEER)
    assert server.sent("GET", "/upstream/") == server.sent("POST", "/api/models/unload") == []


# -- unload -----------------------------------------------------------------------------------------------


def test_unload_posts_the_real_model_id_and_waits_for_the_process_to_stop() -> None:
    server = FakeLlamaSwap(running={QWEN: "ready", EMBED: "ready"})
    endpoint = Endpoint(name="swap", kind="llamaswap", url="http://swap.test:8080", unload_timeout_s=45.0)
    provider = provider_for(server, endpoint)
    provider.unload("gpt-4o-mini")
    assert server.sent("POST", "/api/models/unload") == [f"/api/models/unload/{QWEN}"]
    assert server.read_timeouts[f"/api/models/unload/{QWEN}"] == 45.0  # it answers once the process exited
    assert [m.name for m in provider.list_loaded()] == [EMBED]
    provider.unload(GEMMA)  # the slash stays a path separator, as llama-swap expects
    assert server.sent("POST", "/api/models/unload")[-1] == f"/api/models/unload/{GEMMA}"


def test_unload_unknown_model_is_model_not_found_without_a_request() -> None:
    server = FakeLlamaSwap()
    with pytest.raises(ModelNotFound):
        provider_for(server).unload("mistral-large")
    assert server.sent("POST", "/") == []


def test_unload_on_a_build_before_v161_is_unsupported_and_names_the_way_out() -> None:
    server = FakeLlamaSwap(unload_one=False, running={QWEN: "ready"})
    with pytest.raises(Unsupported) as caught:
        provider_for(server).unload(QWEN)
    message = str(caught.value)
    assert "v161" in message and "upgrade llama-swap" in message and "GET http://swap.test:8080/unload" in message
    assert caught.value.exit_code == ExitCode.ERROR and server.running == {QWEN: "ready"}


def test_unload_answered_with_a_page_is_a_server_error() -> None:
    server = FakeLlamaSwap(running={QWEN: "ready"})
    server.overrides[("POST", f"/api/models/unload/{QWEN}")] = (200, "<html><body>router login</body></html>")
    with pytest.raises(ServerError, match="did not answer like llama-swap") as caught:
        provider_for(server).unload(QWEN)
    assert "'swap'" in str(caught.value)


def test_unload_all_is_one_request_or_the_legacy_route_on_old_builds() -> None:
    server = FakeLlamaSwap(running={QWEN: "ready", EMBED: "ready"})
    provider_for(server).unload_all()
    assert server.sent("POST", "/api/models/unload") == ["/api/models/unload"] and server.running == {}

    old = FakeLlamaSwap(api_group=False, running={QWEN: "ready"})
    provider_for(old).unload_all()
    assert old.sent("GET", "/unload") == ["/unload"] and old.running == {}


# -- a 200 is not a success -------------------------------------------------------------------------------


def test_something_else_on_the_port_is_a_server_error_naming_the_endpoint() -> None:
    server = FakeLlamaSwap()
    page = (200, "<html><body>Welcome to nginx!</body></html>")
    server.overrides.update({("GET", "/api/events"): page, ("GET", "/v1/models"): page, ("GET", "/running"): page})
    provider = provider_for(server)
    for call in (provider.list_available, provider.list_loaded):
        with pytest.raises(ServerError) as caught:
            call()
        assert "http://swap.test:8080" in str(caught.value) and "'swap'" in str(caught.value)
        assert "llama-swap" in str(caught.value)


def test_running_of_the_wrong_shape_is_a_server_error() -> None:
    server = FakeLlamaSwap()
    server.overrides[("GET", "/running")] = (200, {"running": [{"name": "no model key"}]})
    with pytest.raises(ServerError, match="/running did not answer like llama-swap"):
        provider_for(server).list_loaded()


# -- auth and connection errors ---------------------------------------------------------------------------


def test_api_key_is_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-llamaswap-SECRET-4242"
    monkeypatch.setenv("SWAP_KEY", secret)
    server = FakeLlamaSwap(api_key=secret, running={QWEN: "ready"})
    endpoint = Endpoint(name="swap", kind="llamaswap", url="http://swap.test:8080", api_key_env="SWAP_KEY")
    provider = provider_for(server, endpoint)
    assert [m.name for m in provider.list_loaded()] == [QWEN]
    provider.unload(QWEN)
    assert server.running == {}

    monkeypatch.setenv("SWAP_KEY", "sk-wrong")
    server.overrides[("GET", "/running")] = (401, error_body("unauthorized: invalid or missing API key sk-wrong"))
    with pytest.raises(ServerError) as caught:
        provider_for(server, endpoint).list_loaded()
    assert "sk-wrong" not in str(caught.value) and secret not in repr(provider)
    assert "SWAP_KEY" in str(caught.value) and "401" in str(caught.value)


def test_connection_refused_is_server_unreachable_with_a_fix() -> None:
    endpoint = Endpoint(name="swap", kind="llamaswap", url=f"http://127.0.0.1:{unused_port()}")
    provider = LlamaSwapProvider(endpoint)  # a real socket, nobody listening
    try:
        with pytest.raises(ServerUnreachable) as caught:
            provider.describe(QWEN)
    finally:
        provider.close()
    assert caught.value.exit_code == ExitCode.SERVER_UNREACHABLE
    assert "start llama-swap" in str(caught.value) and "\n" not in str(caught.value)


# -- end to end through the CLI, against a real loopback server ----------------------------------------------


@pytest.fixture
def swap() -> Iterator[tuple[FakeLlamaSwap, str]]:
    server = FakeLlamaSwap()
    with serve(lambda request: server.handle(request.method, request.path, request.headers)) as url:
        yield server, url


def _config(write_config: Callable[[str], Any], url: str) -> str:
    return str(write_config(f'[endpoints.swap]\nkind = "llamaswap"\nurl = "{url}/v1"\n'))


def test_cli_status_json_shows_running_states_and_no_pins(
    cli: CliFn, swap: tuple[FakeLlamaSwap, str], write_config: Callable[[str], Any]
) -> None:
    server, url = swap
    server.running.update({QWEN: "ready", GEMMA: "starting", EMBED: "ready", DRAFT: "stopping"})
    status = cli("--config", _config(write_config, url), "status", "--json", "--no-hardware")
    assert status.exit_code == 0, status.stderr
    [endpoint] = status.json()["endpoints"]
    assert (endpoint["kind"], endpoint["ok"]) == ("llamaswap", True)
    assert [(m["name"], m["state"], m["pinned"], m["context_length"]) for m in endpoint["models"]] == [
        (GEMMA, "loading", False, 8192),
        (EMBED, "loaded", False, None),
        (QWEN, "loaded", False, 16384),
    ]


def test_cli_load_status_load_again_and_unload_against_a_real_llamaswap_socket(
    cli: CliFn, swap: tuple[FakeLlamaSwap, str], write_config: Callable[[str], Any]
) -> None:
    server, url = swap
    path = _config(write_config, url)

    loaded = cli("--config", path, "load", QWEN, "--no-warm", "--json")
    assert loaded.exit_code == 0, loaded.stderr
    assert server.sent("GET", "/upstream/") == [f"/upstream/{QWEN}/health"]
    assert loaded.json()["outcome"] == "loaded"
    assert (loaded.json()["resident"]["name"], loaded.json()["resident"]["state"]) == (QWEN, "loaded")

    status = cli("--config", path, "status", "--json", "--no-hardware")
    assert [(m["name"], m["state"]) for m in status.json()["endpoints"][0]["models"]] == [(QWEN, "loaded")]

    again = cli("--config", path, "load", "gpt-4o-mini", "--no-warm", "--json")  # its alias: the same model
    assert again.exit_code == 0, again.stderr
    assert again.json()["outcome"] == "already-loaded"
    assert server.sent("GET", "/upstream/") == [f"/upstream/{QWEN}/health"]  # no second request

    unloaded = cli("--config", path, "unload", QWEN, "--json")
    assert unloaded.exit_code == 0, unloaded.stderr
    assert server.sent("POST", "/api/models/unload") == [f"/api/models/unload/{QWEN}"]
    assert unloaded.json()["endpoints"][0]["unloaded"] == [QWEN] and server.running == {}


def test_cli_unload_all_stops_every_running_model(
    cli: CliFn, swap: tuple[FakeLlamaSwap, str], write_config: Callable[[str], Any]
) -> None:
    server, url = swap
    server.running.update({QWEN: "ready", EMBED: "ready"})
    result = cli("--config", _config(write_config, url), "unload", "--all", "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(result.json()["endpoints"][0]["unloaded"]) == sorted([QWEN, EMBED])
    assert server.running == {} and server.sent("POST", "/api/models/unload")


def test_cli_unknown_model_exits_3_with_a_suggestion(
    cli: CliFn, swap: tuple[FakeLlamaSwap, str], write_config: Callable[[str], Any]
) -> None:
    server, url = swap
    result = cli("--config", _config(write_config, url), "load", "qwen3-8", "--no-warm")
    assert result.exit_code == ExitCode.MODEL_NOT_FOUND
    assert "did you mean 'qwen3-8b'?" in result.stderr and server.sent("GET", "/upstream/") == []


def test_cli_server_down_exits_4(cli: CliFn, write_config: Callable[[str], Any]) -> None:
    path = _config(write_config, f"http://127.0.0.1:{unused_port()}")
    result = cli("--config", path, "load", QWEN, "--no-warm")
    assert result.exit_code == ExitCode.SERVER_UNREACHABLE
    assert "start llama-swap" in result.stderr


def test_cli_unload_on_an_old_build_exits_1_with_the_way_out(
    cli: CliFn, swap: tuple[FakeLlamaSwap, str], write_config: Callable[[str], Any]
) -> None:
    server, url = swap
    server.unload_one = False
    server.running[QWEN] = "ready"
    result = cli("--config", _config(write_config, url), "unload", QWEN)
    assert result.exit_code == ExitCode.ERROR
    assert "upgrade llama-swap" in result.stderr and f"GET {url}/unload" in result.stderr
    assert server.running == {QWEN: "ready"}


def test_cli_unload_all_is_one_request(
    cli: CliFn, swap: tuple[FakeLlamaSwap, str], write_config: Callable[[str], Any]
) -> None:
    server, url = swap
    server.running.update({QWEN: "ready", EMBED: "ready"})
    result = cli("--config", _config(write_config, url), "unload", "--all")
    assert result.exit_code == 0, result.stderr
    assert server.sent("POST", "/api/models/unload") == ["/api/models/unload"]


def test_cli_pin_says_where_llamaswap_pins_live_and_leaves_the_config(
    cli: CliFn, swap: tuple[FakeLlamaSwap, str], write_config: Callable[[str], Any]
) -> None:
    _, url = swap
    path = _config(write_config, url)
    before = Path(path).read_text(encoding="utf-8")
    result = cli("--config", path, "pin", QWEN)
    assert result.exit_code == ExitCode.ERROR
    assert "persistent group" in result.stderr and "config.yaml" in result.stderr
    assert "config is unchanged" in result.stderr and Path(path).read_text(encoding="utf-8") == before
