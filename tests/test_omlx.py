"""oMLX provider: the status listing, blocking load, unload, pins and context limits through the admin
settings API (with its session login), old servers, and error translation.

The fake server answers with the shapes of servers.md §5, checked against the server's source
(``omlx/server.py``: ``/v1/models/status``, ``/v1/models/{id}/load|unload`` and OpenAI-style error
bodies; ``omlx/admin/routes.py``: ``/admin/api/login`` and ``/admin/api/models/{id}/settings`` behind
the session cookie, FastAPI ``{"detail": …}`` errors; ``omlx/engine_pool.py``: ``get_status``).
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
from sourceprep_models.providers.omlx import OMLXProvider, server_root
from tests.conftest import CliFn
from tests.fakes.omlx import EMBED, GB, GEMMA, MARKITDOWN, PROFILE, QWEN, FakeOMLX, error_body
from tests.loopback import serve, unused_port

ENDPOINT = Endpoint(name="mac", kind="omlx", url="http://mac.test:8000")
KEY_ENDPOINT = Endpoint(name="mac", kind="omlx", url="http://mac.test:8000/v1", api_key_env="OMLX_KEY")
KEY = "omlx-MAIN-key-7310"


def provider_for(server: FakeOMLX, endpoint: Endpoint = ENDPOINT) -> OMLXProvider:
    client = httpx.Client(base_url=server_root(endpoint.url), transport=server.transport())
    return OMLXProvider(endpoint, client=client)


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[FakeOMLX, OMLXProvider]]:
    """A server with an API key and a provider holding that key in its env var."""

    def make(**kwargs: Any) -> tuple[FakeOMLX, OMLXProvider]:
        monkeypatch.setenv("OMLX_KEY", KEY)
        server = FakeOMLX(api_key=KEY, **kwargs)
        return server, provider_for(server, KEY_ENDPOINT)

    return make


# -- listing ----------------------------------------------------------------------------------------


def test_registry_creates_the_omlx_provider() -> None:
    provider = create_provider(ENDPOINT)
    try:
        assert isinstance(provider, OMLXProvider)
        caps = provider.capabilities
        assert caps.can_load and caps.can_unload and caps.can_pin and caps.reports_memory
        # The context limit is a prompt-length setting, not an allocation: never a reason to reload.
        assert not caps.sets_context
    finally:
        provider.close()


def test_lists_available_models_from_the_status_route() -> None:
    server = FakeOMLX()
    models = {info.name: info for info in provider_for(server).list_available()}
    assert set(models) == {QWEN, GEMMA, EMBED}
    qwen = models[QWEN]
    assert (qwen.size, qwen.family, qwen.trained_context, qwen.capabilities) == (
        4_600_000_000,
        "qwen3",
        40960,
        ("completion",),
    )
    assert models[GEMMA].capabilities == ("completion", "vision")
    assert models[EMBED].embedding_only
    assert qwen.identity == "omlx:http://mac.test:8000:" + QWEN != models[GEMMA].identity
    assert server.paths("GET") == ["/v1/models/status"]  # never the state-less /v1/models


def test_lists_loaded_and_loading_models_with_sizes_pins_and_context_limit() -> None:
    server = FakeOMLX(loaded={QWEN}, loading={GEMMA}, pinned={QWEN}, context={QWEN: 65536})
    loaded = {m.name: m for m in provider_for(server).list_loaded()}
    assert set(loaded) == {QWEN, GEMMA}
    qwen, gemma = loaded[QWEN], loaded[GEMMA]
    assert (qwen.state, qwen.size, qwen.size_vram, qwen.context_length) == ("loaded", server.actual(QWEN),
                                                                            server.actual(QWEN), 65536)  # fmt: skip
    assert qwen.server_pinned and qwen.pinned and qwen.expires_at is None
    # Still loading: no measured size yet, so the estimate; it already takes its memory.
    assert (gemma.state, gemma.size, gemma.pinned, gemma.occupies_memory) == ("loading", 7_800_000_000, False, True)


def test_profiles_and_the_builtin_converter_are_not_counted_as_loaded() -> None:
    server = FakeOMLX(loaded={QWEN}, extras=True)
    provider = provider_for(server)
    assert [m.name for m in provider.list_loaded()] == [QWEN]  # not the profile, not MarkItDown
    # A profile is another name for the same loaded instance.
    assert provider.describe(PROFILE).identity == provider.describe(QWEN).identity
    assert {info.name for info in provider.list_available()} >= {PROFILE, MARKITDOWN}


def test_memory_ceiling_and_pool_figures() -> None:
    server = FakeOMLX(loaded={QWEN}, ceiling=24 * GB)
    provider = provider_for(server)
    assert provider.memory_ceiling() == 24 * GB
    assert provider.server_facts() == {
        "memory_ceiling": 24 * GB,
        "model_memory": server.actual(QWEN),
        "loaded_count": 1,
        "model_count": 3,
    }
    assert provider_for(FakeOMLX(ceiling=0)).memory_ceiling() is None  # 0 = no ceiling wired up


def test_older_pool_shape_reads_max_model_memory_and_estimated_sizes() -> None:
    # Before the memory guard: max_model_memory, no actual_size, no max_context_window (servers.md §5).
    server = FakeOMLX(loaded={QWEN}, memory_guard=False, ceiling=32 * GB)
    provider = provider_for(server)
    [qwen] = provider.list_loaded()
    assert (qwen.size, qwen.context_length) == (4_600_000_000, None)
    assert provider.memory_ceiling() == 32 * GB


def test_describe_unknown_model_suggests_the_close_one() -> None:
    provider = provider_for(FakeOMLX())
    with pytest.raises(ModelNotFound) as caught:
        provider.describe("Qwen3-8B-MLX")
    assert caught.value.exit_code == ExitCode.MODEL_NOT_FOUND
    assert f"did you mean {QWEN!r}?" in str(caught.value) and "'mac'" in str(caught.value)
    with pytest.raises(ModelNotFound, match="/admin"):
        provider.describe("something-else-entirely")


def test_url_given_as_the_openai_base_is_reduced_to_the_server_root() -> None:
    assert server_root("http://h:8000") == "http://h:8000"
    assert server_root("http://h:8000/v1/") == "http://h:8000"


# -- load ---------------------------------------------------------------------------------------------


def test_load_posts_to_the_model_route_and_returns_when_loaded() -> None:
    server = FakeOMLX()
    provider = provider_for(server)
    outcome = provider.load(LoadRequest(QWEN, options={"num_ctx": 16384}))
    assert server.paths("POST") == [f"/v1/models/{QWEN}/load"]
    assert server.sent("POST", f"/v1/models/{QWEN}/load") == [None]
    assert outcome.name == QWEN and outcome.wall_s >= 0
    assert [(m.name, m.state) for m in provider.list_loaded()] == [(QWEN, "loaded")]
    assert server.paths("PUT") == []  # 16384 is within the 32768 limit: no settings change


def test_load_of_a_loaded_model_sends_nothing() -> None:
    server = FakeOMLX(loaded={QWEN})
    provider_for(server).load(LoadRequest(QWEN, options={"num_ctx": 8192}))
    assert server.paths("POST") == []


def test_load_of_a_profile_loads_its_model() -> None:
    server = FakeOMLX(extras=True)
    provider_for(server).load(LoadRequest(PROFILE))
    assert server.paths("POST") == [f"/v1/models/{QWEN}/load"] and server.loaded == {QWEN}


def test_load_sends_the_api_key_as_bearer(keyed: Callable[..., tuple[FakeOMLX, OMLXProvider]]) -> None:
    server, provider = keyed()
    provider.load(LoadRequest(GEMMA))
    assert {headers.get("authorization") for _, _, _, headers in server.requests} == {f"Bearer {KEY}"}
    assert server.loaded == {GEMMA}


def test_load_above_the_context_limit_raises_it_through_an_admin_session(
    keyed: Callable[..., tuple[FakeOMLX, OMLXProvider]],
) -> None:
    server, provider = keyed(loaded={QWEN})
    provider.load(LoadRequest(QWEN, options={"num_ctx": 65536}))
    settings = f"/admin/api/models/{QWEN}/settings"
    # require_admin wants the session cookie: refused, log in with the main key, then accepted.
    assert [(m, p) for m, p, _, _ in server.requests if m != "GET"] == [
        ("PUT", settings),
        ("POST", "/admin/api/login"),
        ("PUT", settings),
        ("POST", f"/v1/models/{QWEN}/load"),  # answered "Already loaded" if the change left it loaded
    ]
    assert server.sent("POST", "/admin/api/login") == [{"api_key": KEY, "remember": False}]
    assert server.sent("PUT", settings) == [{"max_context_window": 65536}] * 2
    [qwen] = provider.list_loaded()
    assert qwen.context_length == 65536


def test_load_above_the_context_limit_without_a_key_names_the_admin_setting() -> None:
    server = FakeOMLX()  # the admin routes still want a session (no skip_api_key_verification)
    with pytest.raises(Unsupported) as caught:
        provider_for(server).load(LoadRequest(QWEN, options={"num_ctx": 131072}))
    message = str(caught.value)
    assert "Max Context Window" in message and "http://mac.test:8000/admin" in message and "api_key_env" in message
    assert "\n" not in message and caught.value.exit_code == ExitCode.ERROR
    assert server.loaded == set() and server.paths("POST") == []


def test_load_that_does_not_fit_under_the_ceiling_does_not_fit() -> None:
    server = FakeOMLX(loaded={GEMMA}, ceiling=10 * GB)
    with pytest.raises(DoesNotFit) as caught:
        provider_for(server).load(LoadRequest(QWEN))
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.DOES_NOT_FIT
    assert "does not fit under the memory ceiling" in message and "--memory-guard" in message


def test_memory_refusal_from_the_first_route_version_as_a_500_still_does_not_fit() -> None:
    server = FakeOMLX()
    text = "Model 'Qwen3-8B-MLX-4bit' (4.60GB) does not fit under the memory ceiling (3.00GB)."
    server.overrides[("POST", f"/v1/models/{QWEN}/load")] = (500, error_body(text, "server_error"))
    with pytest.raises(DoesNotFit, match="unload other models"):
        provider_for(server).load(LoadRequest(QWEN))


def test_load_while_it_is_loading_is_busy() -> None:
    server = FakeOMLX(loading={QWEN})
    with pytest.raises(ServerBusy, match="busy") as caught:
        provider_for(server).load(LoadRequest(QWEN))
    assert caught.value.exit_code == ExitCode.ERROR and "already being loaded" in str(caught.value)


def test_load_failure_is_a_server_error_with_the_servers_text() -> None:
    server = FakeOMLX()
    failure = error_body("Unsupported model type: qwen9", "server_error")
    server.overrides[("POST", f"/v1/models/{QWEN}/load")] = (500, failure)
    with pytest.raises(ServerError, match=r"answered 500 .*Unsupported model type: qwen9") as caught:
        provider_for(server).load(LoadRequest(QWEN))
    assert type(caught.value) is ServerError


def test_load_of_an_unknown_model_is_model_not_found_before_anything_is_sent() -> None:
    server = FakeOMLX()
    with pytest.raises(ModelNotFound, match=f"did you mean {GEMMA!r}"):
        provider_for(server).load(LoadRequest("gemma-3-12b-it"))
    assert server.paths("POST") == []


def test_model_gone_between_listing_and_load_is_model_not_found() -> None:
    server = FakeOMLX()
    server.overrides[("POST", f"/v1/models/{QWEN}/load")] = (
        404,
        error_body(f"Model not found: {QWEN}", "not_found_error"),
    )
    with pytest.raises(ModelNotFound):
        provider_for(server).load(LoadRequest(QWEN))


# -- unload -------------------------------------------------------------------------------------------


def test_unload_posts_to_the_model_route() -> None:
    server = FakeOMLX(loaded={QWEN, GEMMA})
    provider = provider_for(server)
    provider.unload(QWEN)
    assert server.paths("POST") == [f"/v1/models/{QWEN}/unload"]
    assert [m.name for m in provider.list_loaded()] == [GEMMA]


def test_unload_of_a_model_not_loaded_sends_nothing_and_a_late_400_is_done() -> None:
    server = FakeOMLX()
    provider_for(server).unload(QWEN)
    assert server.paths("POST") == []
    # Listed as loaded, gone by the time the unload arrives (TTL, eviction): "not loaded" is success.
    server = FakeOMLX(loaded={QWEN})
    server.overrides[("POST", f"/v1/models/{QWEN}/unload")] = (400, error_body(f"Model not loaded: {QWEN}", "x"))
    provider_for(server).unload(QWEN)


def test_unload_while_it_drains_is_accepted() -> None:
    server = FakeOMLX(loaded={QWEN})
    server.overrides[("POST", f"/v1/models/{QWEN}/unload")] = (
        202,
        {"status": "unloading", "model_id": QWEN, "message": f"Aborting active requests before unloading {QWEN}"},
    )
    provider_for(server).unload(QWEN)  # the executor waits for it to leave the listing


def test_unload_of_a_model_serving_requests_is_busy() -> None:
    server = FakeOMLX(loaded={QWEN}, busy={QWEN})
    with pytest.raises(ServerBusy, match="serving requests; retry when they finish") as caught:
        provider_for(server).unload(QWEN)
    assert "cannot unload until active requests finish" in str(caught.value)  # the server's own words
    assert server.loaded == {QWEN}


def test_unload_unknown_model_is_model_not_found() -> None:
    with pytest.raises(ModelNotFound):
        provider_for(FakeOMLX()).unload("not-a-model")


# -- pins through the settings API --------------------------------------------------------------------


def test_set_pinned_logs_in_once_and_puts_is_pinned(keyed: Callable[..., tuple[FakeOMLX, OMLXProvider]]) -> None:
    server, provider = keyed(loaded={QWEN})
    provider.set_pinned(QWEN, True)
    settings = f"/admin/api/models/{QWEN}/settings"
    assert server.sent("PUT", settings) == [{"is_pinned": True}, {"is_pinned": True}]
    assert server.sent("POST", "/admin/api/login") == [{"api_key": KEY, "remember": False}]
    [token] = server.sessions
    last_put = [headers for m, p, _, headers in server.requests if (m, p) == ("PUT", settings)][-1]
    assert last_put["cookie"] == f"omlx_admin_session={token}"
    assert [m.pinned for m in provider.list_loaded()] == [True]
    assert server.paths("POST") == ["/admin/api/login"]  # a pin loads nothing

    provider.set_pinned(QWEN, False)  # the session is reused
    assert server.sent("PUT", settings)[-1] == {"is_pinned": False}
    assert len(server.sent("POST", "/admin/api/login")) == 1
    assert server.pinned == set()


def test_set_pinned_on_a_server_without_key_checks_needs_no_login() -> None:
    server = FakeOMLX(admin_open=True)
    provider_for(server).set_pinned(EMBED, True)
    assert server.paths("PUT") == [f"/admin/api/models/{EMBED}/settings"] and server.paths("POST") == []
    assert server.pinned == {EMBED}


def test_set_pinned_without_a_key_names_the_admin_ui() -> None:
    server = FakeOMLX()
    with pytest.raises(Unsupported) as caught:
        provider_for(server).set_pinned(QWEN, True)
    assert "api_key_env" in str(caught.value) and "http://mac.test:8000/admin" in str(caught.value)
    assert server.pinned == set()


def test_set_pinned_on_a_server_with_no_api_key_set_names_the_admin_ui(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMLX_KEY", KEY)
    server = FakeOMLX()  # no API key configured: the admin login refuses (400)
    with pytest.raises(Unsupported, match=r"no API key set.*No API key configured"):
        provider_for(server, KEY_ENDPOINT).set_pinned(QWEN, True)


def test_set_pinned_with_a_sub_key_says_login_takes_the_main_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMLX_KEY", "a-sub-key-only")
    server = FakeOMLX(api_key=KEY, sub_keys=("a-sub-key-only",))
    with pytest.raises(ServerError, match="main API key") as caught:
        provider_for(server, KEY_ENDPOINT).set_pinned(QWEN, True)
    assert "a-sub-key-only" not in str(caught.value) and "OMLX_KEY" in str(caught.value)


def test_set_pinned_unknown_model_is_model_not_found() -> None:
    with pytest.raises(ModelNotFound):
        provider_for(FakeOMLX(admin_open=True)).set_pinned("nope", True)


# -- old servers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [(404, {"detail": "Not Found"}), (405, {"detail": "Method Not Allowed"})])
def test_server_older_than_the_load_route_names_the_upgrade_and_the_admin_ui(missing: tuple[int, Any]) -> None:
    server = FakeOMLX(load_route=False, memory_guard=False)
    server.overrides[("POST", f"/v1/models/{QWEN}/load")] = missing
    provider = provider_for(server)
    assert {info.name for info in provider.list_available()} == {QWEN, GEMMA, EMBED}  # listing still works
    with pytest.raises(Unsupported) as caught:
        provider.load(LoadRequest(QWEN))
    message = str(caught.value)
    assert "upgrade oMLX" in message and "http://mac.test:8000/admin" in message and "\n" not in message


def test_server_without_the_unload_route_is_unsupported() -> None:
    server = FakeOMLX(loaded={QWEN})
    server.overrides[("POST", f"/v1/models/{QWEN}/unload")] = (404, {"detail": "Not Found"})
    with pytest.raises(Unsupported, match="unload it from the admin UI"):
        provider_for(server).unload(QWEN)


# -- a 200 is not a success -----------------------------------------------------------------------------


def test_status_of_the_wrong_shape_is_a_server_error_naming_the_endpoint() -> None:
    server = FakeOMLX()
    server.overrides[("GET", "/v1/models/status")] = (200, {"object": "list", "data": []})
    with pytest.raises(ServerError) as caught:
        provider_for(server).list_loaded()
    assert "mac.test:8000" in str(caught.value) and "'mac'" in str(caught.value) and "oMLX" in str(caught.value)


def test_a_server_without_the_status_route_is_not_omlx() -> None:
    server = FakeOMLX()
    server.overrides[("GET", "/v1/models/status")] = (404, {"detail": "Not Found"})
    with pytest.raises(ServerError, match="really an oMLX server"):
        provider_for(server).list_available()


def test_load_answered_with_a_bare_200_is_a_server_error() -> None:
    server = FakeOMLX()
    server.overrides[("POST", f"/v1/models/{QWEN}/load")] = (200, {})
    with pytest.raises(ServerError, match=f"/v1/models/{QWEN}/load did not answer like oMLX"):
        provider_for(server).load(LoadRequest(QWEN))


def test_settings_answered_with_a_bare_200_is_a_server_error() -> None:
    server = FakeOMLX(admin_open=True)
    server.overrides[("PUT", f"/admin/api/models/{QWEN}/settings")] = (200, "<html>oMLX</html>")
    with pytest.raises(ServerError, match="did not answer like oMLX"):
        provider_for(server).set_pinned(QWEN, True)


# -- auth and connection errors ---------------------------------------------------------------------------


def test_key_is_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMLX_KEY", KEY)
    server = FakeOMLX(api_key="another-key")
    server.overrides[("GET", "/v1/models/status")] = (
        401,
        error_body(f"Rejected API key: {KEY}", "authentication_error"),
    )
    provider = provider_for(server, KEY_ENDPOINT)
    with pytest.raises(ServerError) as caught:
        provider.list_available()
    assert server.requests[0][3]["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(caught.value) and KEY not in repr(provider)
    assert "OMLX_KEY" in str(caught.value) and "401" in str(caught.value)


def test_connection_refused_is_server_unreachable_with_a_fix() -> None:
    provider = OMLXProvider(Endpoint(name="mac", kind="omlx", url=f"http://127.0.0.1:{unused_port()}"))
    try:
        with pytest.raises(ServerUnreachable) as caught:
            provider.list_loaded()
    finally:
        provider.close()
    assert caught.value.exit_code == ExitCode.SERVER_UNREACHABLE
    assert "omlx serve" in str(caught.value) and "\n" not in str(caught.value)


# -- end to end through the CLI, against a real loopback server ----------------------------------------------


@pytest.fixture
def mac() -> Iterator[tuple[FakeOMLX, str]]:
    server = FakeOMLX()
    with serve(server.loopback) as url:
        yield server, url


def config_for(write_config: Callable[[str], Any], url: str) -> str:
    # A budget the planner never hits: the server's own ceiling is what these tests exercise.
    text = f'[memory]\nbudget = "512GB"\n\n[endpoints.mac]\nkind = "omlx"\nurl = "{url}/v1"\n'
    return str(write_config(text))


def test_cli_status_json_shows_state_size_and_pins(
    cli: CliFn, mac: tuple[FakeOMLX, str], write_config: Callable[[str], Any]
) -> None:
    server, url = mac
    server.loaded, server.loading, server.pinned = {QWEN}, {GEMMA}, {QWEN}
    status = cli("--config", config_for(write_config, url), "status", "--json", "--no-hardware")
    assert status.exit_code == 0, status.stderr
    [endpoint] = status.json()["endpoints"]
    assert (endpoint["kind"], endpoint["ok"]) == ("omlx", True)
    models = {m["name"]: m for m in endpoint["models"]}
    qwen, gemma = models[QWEN], models[GEMMA]
    assert (qwen["state"], qwen["size"], qwen["pinned"]) == ("loaded", server.actual(QWEN), True)
    assert (gemma["state"], gemma["size"], gemma["pinned"]) == ("loading", 7_800_000_000, False)
    assert qwen["context_length"] == 32768


def test_cli_load_blocks_until_loaded_then_status_lists_it(
    cli: CliFn, mac: tuple[FakeOMLX, str], write_config: Callable[[str], Any]
) -> None:
    server, url = mac
    path = config_for(write_config, url)
    loaded = cli("--config", path, "load", QWEN, "--no-warm", "--json")
    assert loaded.exit_code == 0, loaded.stderr
    assert server.paths("POST") == [f"/v1/models/{QWEN}/load"]
    report = loaded.json()
    assert (report["outcome"], report["resident"]["name"], report["resident"]["state"]) == ("loaded", QWEN, "loaded")

    status = cli("--config", path, "status", "--json", "--no-hardware")
    assert [(m["name"], m["state"]) for m in status.json()["endpoints"][0]["models"]] == [(QWEN, "loaded")]


def test_cli_load_of_a_loaded_model_succeeds_without_a_request(
    cli: CliFn, mac: tuple[FakeOMLX, str], write_config: Callable[[str], Any]
) -> None:
    server, url = mac
    server.loaded = {QWEN}
    result = cli("--config", config_for(write_config, url), "load", QWEN, "--ctx", "16384", "--no-warm", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["outcome"] == "already-loaded"
    assert server.paths("POST") == [] and server.paths("PUT") == []


def test_cli_load_above_the_context_limit_raises_it_first(
    cli: CliFn, mac: tuple[FakeOMLX, str], write_config: Callable[[str], Any]
) -> None:
    server, url = mac
    server.admin_open = True
    result = cli("--config", config_for(write_config, url), "load", QWEN, "--ctx", "65536", "--no-warm", "--json")
    assert result.exit_code == 0, result.stderr
    assert server.sent("PUT", f"/admin/api/models/{QWEN}/settings") == [{"max_context_window": 65536}]
    assert result.json()["resident"]["context_length"] == 65536 and result.json()["warnings"] == []


def test_cli_unload_and_unload_all(cli: CliFn, mac: tuple[FakeOMLX, str], write_config: Callable[[str], Any]) -> None:
    server, url = mac
    server.loaded, server.extras = {QWEN, GEMMA, EMBED}, True
    path = config_for(write_config, url)
    one = cli("--config", path, "unload", QWEN, "--json")
    assert one.exit_code == 0, one.stderr
    assert server.paths("POST") == [f"/v1/models/{QWEN}/unload"] and server.loaded == {GEMMA, EMBED}

    every = cli("--config", path, "unload", "--all", "--json")
    assert every.exit_code == 0, every.stderr
    # Every real model, once: not the built-in converter, not the profile of a model.
    assert sorted(server.paths("POST")[1:]) == sorted([f"/v1/models/{GEMMA}/unload", f"/v1/models/{EMBED}/unload"])
    assert server.loaded == set()


def test_cli_unknown_model_exits_3(cli: CliFn, mac: tuple[FakeOMLX, str], write_config: Callable[[str], Any]) -> None:
    server, url = mac
    result = cli("--config", config_for(write_config, url), "load", "Qwen3-8B", "--no-warm")
    assert result.exit_code == ExitCode.MODEL_NOT_FOUND
    assert "did you mean" in result.stderr and server.paths("POST") == []


def test_cli_load_that_the_server_cannot_fit_exits_6(
    cli: CliFn, mac: tuple[FakeOMLX, str], write_config: Callable[[str], Any]
) -> None:
    server, url = mac
    server.loaded, server.ceiling = {GEMMA}, 10 * GB
    result = cli("--config", config_for(write_config, url), "load", QWEN, "--no-warm")
    assert result.exit_code == ExitCode.DOES_NOT_FIT
    assert "does not fit under the memory ceiling" in result.stderr and "--memory-guard" in result.stderr


def test_cli_load_while_busy_exits_1(cli: CliFn, mac: tuple[FakeOMLX, str], write_config: Callable[[str], Any]) -> None:
    server, url = mac
    server.overrides[("POST", f"/v1/models/{QWEN}/load")] = (409, error_body(f"Model '{QWEN}' is busy", "model_busy"))
    result = cli("--config", config_for(write_config, url), "load", QWEN, "--no-warm")
    assert result.exit_code == 1 and "busy" in result.stderr


def test_cli_server_down_exits_4(cli: CliFn, write_config: Callable[[str], Any]) -> None:
    path = config_for(write_config, f"http://127.0.0.1:{unused_port()}")
    result = cli("--config", path, "load", QWEN, "--no-warm")
    assert result.exit_code == ExitCode.SERVER_UNREACHABLE and "omlx serve" in result.stderr


def test_cli_load_on_an_old_server_exits_1_with_the_hint(cli: CliFn, write_config: Callable[[str], Any]) -> None:
    server = FakeOMLX(load_route=False, memory_guard=False)
    with serve(server.loopback) as url:
        result = cli("--config", config_for(write_config, url), "load", QWEN, "--no-warm")
    assert result.exit_code == 1
    assert "upgrade oMLX" in result.stderr and "/admin" in result.stderr
    assert server.loaded == set()


def test_cli_pin_sets_the_server_pin_and_unpin_clears_it(
    cli: CliFn, mac: tuple[FakeOMLX, str], write_config: Callable[[str], Any]
) -> None:
    server, url = mac
    server.admin_open = True
    path = config_for(write_config, url)
    pinned = cli("--config", path, "pin", QWEN, "--json")
    assert pinned.exit_code == 0, pinned.stderr
    assert server.paths("POST") == [f"/v1/models/{QWEN}/load"]
    assert server.sent("PUT", f"/admin/api/models/{QWEN}/settings") == [{"is_pinned": True}]
    assert server.pinned == {QWEN} and server.loaded == {QWEN}

    unpinned = cli("--config", path, "pin", "--remove", QWEN, "--json")
    assert unpinned.exit_code == 0, unpinned.stderr
    assert server.sent("PUT", f"/admin/api/models/{QWEN}/settings")[-1] == {"is_pinned": False}
    assert server.pinned == set()
