"""LM Studio provider: REST v1 listing/load/unload, old (v0-only) servers, and error translation.

The fake server answers with the JSON shapes documented for LM Studio's REST API (servers.md §1.2
for v0, §1.3 for v1); like the real server it answers unknown routes with 200 and an error body.
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
    ServerError,
    ServerUnreachable,
    Unsupported,
)
from sourceprep_models.providers import create_provider
from sourceprep_models.providers.base import LoadRequest
from sourceprep_models.providers.lmstudio import LMStudioProvider, server_root
from tests.conftest import CliFn
from tests.fakes.lmstudio import EMBED, GEMMA, QWEN, FakeLMStudio
from tests.loopback import serve, unused_port

ENDPOINT = Endpoint(name="studio", kind="lmstudio", url="http://studio.test:1234")


def provider_for(server: FakeLMStudio, endpoint: Endpoint = ENDPOINT) -> LMStudioProvider:
    client = httpx.Client(base_url=server_root(endpoint.url), transport=server.transport())
    return LMStudioProvider(endpoint, client=client)


# -- listing ----------------------------------------------------------------------------------------


def test_registry_creates_the_lmstudio_provider() -> None:
    provider = create_provider(ENDPOINT)
    try:
        assert isinstance(provider, LMStudioProvider)
        assert provider.capabilities.can_load and provider.capabilities.can_unload and provider.capabilities.can_pin
    finally:
        provider.close()


def test_lists_available_models_from_v1() -> None:
    server = FakeLMStudio()
    models = {info.name: info for info in provider_for(server).list_available()}
    assert set(models) == {QWEN, GEMMA, EMBED}
    qwen = models[QWEN]
    assert (qwen.size, qwen.family, qwen.parameter_size, qwen.quantization, qwen.trained_context) == (
        5_027_784_224,
        "qwen3",
        "8B",
        "Q4_K_M",
        40960,
    )
    assert qwen.capabilities == ("completion", "tools") and not qwen.embedding_only
    assert "vision" in models[GEMMA].capabilities
    assert models[EMBED].embedding_only
    assert qwen.identity != models[GEMMA].identity


def test_lists_loaded_instances_with_their_context() -> None:
    server = FakeLMStudio(instances={QWEN: [(QWEN, 8192), (f"{QWEN}:2", 32768)], EMBED: [(EMBED, 2048)]})
    loaded = provider_for(server).list_loaded()
    assert sorted((m.name, m.context_length) for m in loaded) == [(QWEN, 8192), (QWEN, 32768), (EMBED, 2048)]
    qwen = next(m for m in loaded if m.name == QWEN)
    assert qwen.size == 5_027_784_224 and qwen.size_vram is None and qwen.expires_at is None


def test_describe_unknown_model_suggests_the_close_one() -> None:
    provider = provider_for(FakeLMStudio())
    with pytest.raises(ModelNotFound) as caught:
        provider.describe("qwen/qwen3-8")
    assert caught.value.exit_code == ExitCode.MODEL_NOT_FOUND
    assert "did you mean 'qwen/qwen3-8b'?" in str(caught.value) and "'studio'" in str(caught.value)
    with pytest.raises(ModelNotFound, match="lms get"):
        provider.describe("something/else-entirely")


def test_url_given_as_an_api_base_is_reduced_to_the_server_root() -> None:
    assert server_root("http://h:1234") == "http://h:1234"
    assert server_root("http://h:1234/v1/") == "http://h:1234"
    assert server_root("http://h:1234/api/v1") == "http://h:1234"
    assert server_root("http://h:1234/api/v0") == "http://h:1234"


# -- load ---------------------------------------------------------------------------------------------


def test_load_sends_the_context_length_and_reports_server_time() -> None:
    server = FakeLMStudio()
    provider = provider_for(server)
    outcome = provider.load(LoadRequest(QWEN, options={"num_ctx": 16384, "num_batch": 256}))
    assert server.posted("/api/v1/models/load") == [{"model": QWEN, "context_length": 16384}]
    assert outcome.name == QWEN and outcome.server_load_s == 2.5 and outcome.wall_s >= 0
    assert [(m.name, m.context_length) for m in provider.list_loaded()] == [(QWEN, 16384)]


def test_load_without_a_context_leaves_the_server_default() -> None:
    server = FakeLMStudio()
    provider_for(server).load(LoadRequest(GEMMA))
    assert server.posted("/api/v1/models/load") == [{"model": GEMMA}]


def test_load_of_a_model_already_loaded_with_that_context_sends_nothing() -> None:
    server = FakeLMStudio(instances={QWEN: [(QWEN, 16384)]})
    outcome = provider_for(server).load(LoadRequest(QWEN, options={"num_ctx": 16384}))
    assert server.posted("/api/v1/models/load") == [] and outcome.server_load_s is None
    provider_for(server).load(LoadRequest(QWEN))  # no context asked: whatever is loaded will do
    assert server.posted("/api/v1/models/load") == []


def test_load_with_another_context_replaces_the_instance_instead_of_adding_one() -> None:
    server = FakeLMStudio(instances={QWEN: [(QWEN, 4096)]}, next_ids={QWEN: 1})
    provider = provider_for(server)
    provider.load(LoadRequest(QWEN, options={"num_ctx": 32768}))
    assert server.posted("/api/v1/models/unload") == [{"instance_id": QWEN}]
    assert server.posted("/api/v1/models/load") == [{"model": QWEN, "context_length": 32768}]
    assert [(m.name, m.context_length) for m in provider.list_loaded()] == [(QWEN, 32768)]


def test_load_refused_by_the_guardrails_does_not_fit() -> None:
    server = FakeLMStudio()
    server.overrides[("POST", "/api/v1/models/load")] = (
        400,
        {"error": "Model loading was stopped due to insufficient system resources. Continuing to load..."},
    )
    with pytest.raises(DoesNotFit, match="--ctx") as caught:
        provider_for(server).load(LoadRequest(QWEN, options={"num_ctx": 131072}))
    assert caught.value.exit_code == ExitCode.DOES_NOT_FIT


def test_load_engine_crash_is_a_server_error_with_a_hint() -> None:
    server = FakeLMStudio()
    server.overrides[("POST", "/api/v1/models/load")] = (
        500,
        {"error": {"type": "model_load_failed", "message": "Failed to load model"}},
    )
    with pytest.raises(ServerError, match=r"model_load_failed.*smaller context"):
        provider_for(server).load(LoadRequest(QWEN))


# -- unload -------------------------------------------------------------------------------------------


def test_unload_sends_every_instance_id_of_the_model() -> None:
    server = FakeLMStudio(instances={QWEN: [(QWEN, 8192), (f"{QWEN}:2", 8192)], GEMMA: [("my-gemma", 4096)]})
    provider = provider_for(server)
    provider.unload(QWEN)
    assert server.posted("/api/v1/models/unload") == [{"instance_id": QWEN}, {"instance_id": f"{QWEN}:2"}]
    provider.unload(GEMMA)  # an instance id that is not the model key
    assert server.posted("/api/v1/models/unload")[-1] == {"instance_id": "my-gemma"}
    assert provider.list_loaded() == []


def test_unload_of_a_model_not_loaded_sends_nothing() -> None:
    server = FakeLMStudio()
    provider_for(server).unload(QWEN)
    assert server.posted("/api/v1/models/unload") == []


def test_unload_unknown_model_is_model_not_found() -> None:
    with pytest.raises(ModelNotFound):
        provider_for(FakeLMStudio()).unload("nope/not-a-model")


# -- old servers (before 0.4.0) -------------------------------------------------------------------------


@pytest.mark.parametrize("missing_status", [200, 404])
def test_old_server_lists_but_load_and_unload_name_the_lms_command(missing_status: int) -> None:
    server = FakeLMStudio(v1=False, v1_missing_status=missing_status, instances={GEMMA: [(GEMMA, 4096)]})
    provider = provider_for(server)
    assert provider.api_version() == "v0"
    assert {info.name for info in provider.list_available()} == {QWEN, GEMMA, EMBED}
    assert [m.name for m in provider.list_loaded()] == [GEMMA]
    assert provider.describe(EMBED).embedding_only

    with pytest.raises(Unsupported) as loading:
        provider.load(LoadRequest(QWEN, options={"num_ctx": 16384}))
    message = str(loading.value)
    assert f"`lms load {QWEN} --context-length 16384`" in message and "\n" not in message
    assert loading.value.exit_code == ExitCode.ERROR

    with pytest.raises(Unsupported, match=f"`lms unload {GEMMA}`"):
        provider.unload(GEMMA)
    assert server.posted("/api/v1/models/load") == server.posted("/api/v1/models/unload") == []


def test_old_server_unknown_model_is_still_model_not_found() -> None:
    with pytest.raises(ModelNotFound):
        provider_for(FakeLMStudio(v1=False)).load(LoadRequest("nope/nothing"))


# -- a 200 is not a success -----------------------------------------------------------------------------


def test_bare_200_garbage_everywhere_is_a_server_error_naming_the_endpoint() -> None:
    server = FakeLMStudio()
    server.overrides[("GET", "/api/v1/models")] = (200, "<html>hello</html>")
    server.overrides[("GET", "/api/v0/models")] = (200, {"ok": True})
    with pytest.raises(ServerError) as caught:
        provider_for(server).list_available()
    assert "studio.test:1234" in str(caught.value) and "'studio'" in str(caught.value)
    assert "LM Studio" in str(caught.value)


def test_v1_listing_of_the_wrong_shape_inside_is_a_server_error() -> None:
    server = FakeLMStudio()
    server.overrides[("GET", "/api/v1/models")] = (200, {"models": [{"name": "no key here"}]})
    with pytest.raises(ServerError, match="did not answer like LM Studio"):
        provider_for(server).list_loaded()


def test_load_answered_with_a_bare_200_is_a_server_error() -> None:
    server = FakeLMStudio()
    server.overrides[("POST", "/api/v1/models/load")] = (200, {})
    with pytest.raises(ServerError, match="/api/v1/models/load did not answer like LM Studio"):
        provider_for(server).load(LoadRequest(QWEN))


def test_unload_answered_with_an_unexpected_endpoint_200_is_a_server_error() -> None:
    server = FakeLMStudio(instances={QWEN: [(QWEN, 4096)]})
    server.overrides[("POST", "/api/v1/models/unload")] = (
        200,
        {"error": "Unexpected endpoint or method. (POST /api/v1/models/unload)"},
    )
    with pytest.raises(ServerError, match="Unexpected endpoint"):
        provider_for(server).unload(QWEN)


# -- auth and connection errors ---------------------------------------------------------------------------


def test_token_is_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "lmstudio-SECRET-token-4242"
    monkeypatch.setenv("LMSTUDIO_TOKEN", secret)
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(401, json={"error": f"Invalid token {secret}"})

    endpoint = Endpoint(name="studio", kind="lmstudio", url="http://studio.test:1234", api_key_env="LMSTUDIO_TOKEN")
    provider = LMStudioProvider(
        endpoint, client=httpx.Client(base_url=endpoint.url, transport=httpx.MockTransport(handler))
    )
    with pytest.raises(ServerError) as caught:
        provider.list_available()
    assert seen == [f"Bearer {secret}"]
    assert secret not in str(caught.value) and secret not in repr(caught.value) and secret not in repr(provider)
    assert "LMSTUDIO_TOKEN" in str(caught.value) and "401" in str(caught.value)


def test_connection_refused_is_server_unreachable_with_a_fix() -> None:
    endpoint = Endpoint(name="studio", kind="lmstudio", url=f"http://127.0.0.1:{unused_port()}")
    provider = LMStudioProvider(endpoint)  # a real socket, nobody listening
    try:
        with pytest.raises(ServerUnreachable) as caught:
            provider.list_loaded()
    finally:
        provider.close()
    assert caught.value.exit_code == ExitCode.SERVER_UNREACHABLE
    assert "lms server start" in str(caught.value) and "\n" not in str(caught.value)


# -- end to end through the CLI, against a real loopback server ----------------------------------------------


@pytest.fixture
def studio() -> Iterator[tuple[FakeLMStudio, str]]:
    server = FakeLMStudio()
    with serve(lambda request: server.handle(request.method, request.path, request.body)) as url:
        yield server, url


def test_cli_load_status_unload_against_a_real_lmstudio_socket(
    cli: CliFn, studio: tuple[FakeLMStudio, str], write_config: Callable[[str], Any]
) -> None:
    server, url = studio
    path = str(write_config(f'[endpoints.studio]\nkind = "lmstudio"\nurl = "{url}/v1"\n'))

    loaded = cli("--config", path, "load", QWEN, "--ctx", "16384", "--no-warm", "--json")
    assert loaded.exit_code == 0, loaded.stderr
    assert server.posted("/api/v1/models/load") == [{"model": QWEN, "context_length": 16384}]
    assert loaded.json()["resident"]["context_length"] == 16384

    status = cli("--config", path, "status", "--json", "--no-hardware")
    assert status.exit_code == 0, status.stderr
    [endpoint] = status.json()["endpoints"]
    assert (endpoint["kind"], endpoint["ok"]) == ("lmstudio", True)
    assert [(m["name"], m["context_length"]) for m in endpoint["models"]] == [(QWEN, 16384)]

    unloaded = cli("--config", path, "unload", QWEN, "--json")
    assert unloaded.exit_code == 0, unloaded.stderr
    assert server.posted("/api/v1/models/unload") == [{"instance_id": QWEN}]
    assert server.instances[QWEN] == []


def test_cli_load_on_an_old_server_exits_1_with_the_lms_command(cli: CliFn, write_config: Callable[[str], Any]) -> None:
    server = FakeLMStudio(v1=False)
    with serve(lambda request: server.handle(request.method, request.path, request.body)) as url:
        path = str(write_config(f'[endpoints.studio]\nkind = "lmstudio"\nurl = "{url}"\n'))
        result = cli("--config", path, "load", QWEN, "--ctx", "8192", "--no-warm")
        assert result.exit_code == 1
        assert f"lms load {QWEN} --context-length 8192" in result.stderr
