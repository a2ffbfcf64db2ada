"""Cloud / OpenAI-compatible endpoints: always ready, nothing to load, and the API key never shown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.errors import (
    ExitCode,
    ModelNotFound,
    ServerError,
    ServerUnreachable,
    SourceprepError,
)
from sourceprep_models.providers import create_provider
from sourceprep_models.providers.base import LoadRequest
from sourceprep_models.providers.openai import OpenAIProvider
from tests.conftest import CliFn
from tests.fakes.openai import MODELS, listing
from tests.loopback import Reply, Request, serve, unused_port

SECRET = "sk-test-SECRET-0123456789abcdef"
KEY_VAR = "CLOUD_TEST_KEY"
ENDPOINT = Endpoint(name="cloud", kind="openai", url="https://api.cloud.test/v1", api_key_env=KEY_VAR)


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, SECRET)


def provider_with(
    handler: Callable[[httpx.Request], httpx.Response], endpoint: Endpoint = ENDPOINT
) -> tuple[OpenAIProvider, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = httpx.Client(base_url=endpoint.url, transport=httpx.MockTransport(record))
    return OpenAIProvider(endpoint, client=client), seen


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


def test_registry_creates_an_always_ready_provider() -> None:
    provider = create_provider(ENDPOINT)
    try:
        assert isinstance(provider, OpenAIProvider)
        assert OpenAIProvider.capabilities.always_ready is True
        caps = provider.capabilities
        assert (caps.can_load, caps.can_unload, caps.can_pin, caps.reports_memory) == (False, False, False, False)
    finally:
        provider.close()


def test_lists_models_with_the_bearer_key() -> None:
    provider, seen = provider_with(listing)
    models = provider.list_available()
    assert [m.name for m in models] == ["gpt-4o-mini", "gpt-4.1", "text-embedding-3-small"]
    assert all(m.remote for m in models)
    assert [str(r.url) for r in seen] == ["https://api.cloud.test/v1/models"]
    assert seen[0].headers["authorization"] == f"Bearer {SECRET}"


def test_no_api_key_env_sends_no_authorization() -> None:
    endpoint = Endpoint(name="local", kind="openai", url="http://127.0.0.1:1337/v1")
    provider, seen = provider_with(listing, endpoint)
    provider.list_available()
    assert "authorization" not in seen[0].headers


def test_describe_checks_the_model_is_listed() -> None:
    provider, seen = provider_with(listing)
    assert provider.describe("gpt-4.1").name == "gpt-4.1"
    assert provider.describe("gpt-4o-mini").name == "gpt-4o-mini"
    assert len(seen) == 1  # the listing is reused
    with pytest.raises(ModelNotFound) as caught:
        provider.describe("gpt-4o-mimi")
    assert caught.value.exit_code == ExitCode.MODEL_NOT_FOUND
    assert "did you mean 'gpt-4o-mini'?" in str(caught.value) and "'cloud'" in str(caught.value)


def test_loaded_load_and_unload_touch_nothing() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request expected, got {request.method} {request.url}")

    provider, seen = provider_with(refuse)
    assert provider.list_loaded() == []
    outcome = provider.load(LoadRequest("gpt-4.1", options={"num_ctx": 32768}))
    assert (outcome.name, outcome.wall_s, outcome.server_load_s) == ("gpt-4.1", 0.0, None)
    provider.unload("gpt-4.1")
    assert seen == []


def test_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VAR)
    provider, seen = provider_with(listing)
    assert provider.list_loaded() == []  # status still works without the key
    with pytest.raises(SourceprepError) as caught:
        provider.list_available()
    assert type(caught.value) is SourceprepError and caught.value.exit_code == ExitCode.ERROR
    assert KEY_VAR in str(caught.value) and "\n" not in str(caught.value)
    assert seen == []


def test_garbage_listing_is_a_server_error() -> None:
    provider, _ = provider_with(lambda request: httpx.Response(200, text="<html>welcome</html>"))
    with pytest.raises(ServerError, match="did not answer like an OpenAI-compatible API"):
        provider.list_available()
    provider, _ = provider_with(lambda request: httpx.Response(200, json={"data": [{"name": "no id"}]}))
    with pytest.raises(ServerError, match="'cloud'"):
        provider.list_available()


@pytest.mark.parametrize(
    ("status", "payload", "error", "expected"),
    [
        (401, {"error": {"message": f"Incorrect API key provided: {SECRET}.", "type": "invalid_request_error"}},
         ServerError, KEY_VAR),
        (500, {"error": {"message": f"internal error while checking {SECRET}", "type": "server_error"}},
         ServerError, "500"),
        (200, f"not json, but it echoes {SECRET}", ServerError, "did not answer like"),
        (404, {"error": "no such route"}, ServerError, "API base"),
    ],
)  # fmt: skip
def test_errors_never_contain_the_key(status: int, payload: Any, error: type[Exception], expected: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(payload, str):
            return httpx.Response(status, text=payload)
        return httpx.Response(status, json=payload)

    provider, _ = provider_with(handler)
    with pytest.raises(error) as caught:
        provider.describe("gpt-4.1")
    assert expected in str(caught.value)
    assert_no_secret(str(caught.value), repr(caught.value), repr(provider), repr(caught.value.args))


def test_connection_refused_is_unreachable_without_the_key() -> None:
    endpoint = Endpoint(name="cloud", kind="openai", url=f"http://127.0.0.1:{unused_port()}/v1", api_key_env=KEY_VAR)
    provider = OpenAIProvider(endpoint)
    try:
        with pytest.raises(ServerUnreachable) as caught:
            provider.list_available()
    finally:
        provider.close()
    assert caught.value.exit_code == ExitCode.SERVER_UNREACHABLE
    assert_no_secret(str(caught.value), repr(caught.value), repr(provider))


# -- end to end through the CLI, against a real loopback server ----------------------------------------------


@pytest.fixture
def cloud() -> Iterator[tuple[str, list[str]]]:
    """A fake cloud API that accepts only the test key and echoes a rejected key back, like some do."""
    requests: list[str] = []

    def handle(request: Request) -> Reply:
        requests.append(f"{request.method} {request.path}")
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {SECRET}":
            return 401, {"error": {"message": f"Incorrect API key provided: {auth}", "type": "invalid_request_error"}}
        if request.path == "/v1/models":
            return 200, MODELS
        return 404, {"error": {"message": "not found"}}

    with serve(handle) as root:
        yield f"{root}/v1", requests


def config_for(url: str, write_config: Callable[[str], Any]) -> str:
    return str(write_config(f'[endpoints.cloud]\nkind = "openai"\nurl = "{url}"\napi_key_env = "{KEY_VAR}"\n'))


def test_cli_status_shows_the_cloud_endpoint_ready_and_no_secret(
    cli: CliFn, cloud: tuple[str, list[str]], write_config: Callable[[str], Any]
) -> None:
    url, requests = cloud
    path = config_for(url, write_config)
    result = cli("--config", path, "status", "--json", "--no-hardware")
    assert result.exit_code == 0, result.stderr
    [endpoint] = result.json()["endpoints"]
    assert (endpoint["name"], endpoint["kind"], endpoint["ok"], endpoint["error"], endpoint["models"]) == (
        "cloud",
        "openai",
        True,
        None,
        [],
    )
    assert requests == []  # nothing to ask: a cloud model is never resident
    assert_no_secret(result.stdout, result.stderr)


def test_cli_rejected_key_is_reported_without_the_secret(
    cli: CliFn, cloud: tuple[str, list[str]], write_config: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, requests = cloud
    wrong = SECRET + "-WRONG"
    monkeypatch.setenv(KEY_VAR, wrong)
    result = cli("--config", config_for(url, write_config), "unload", "gpt-4.1", "--endpoint", "cloud")
    assert requests  # the key really was sent, and rejected
    assert result.exit_code == 1
    assert KEY_VAR in result.stderr and "401" in result.stderr
    for text in (result.stdout, result.stderr):
        assert SECRET not in text and wrong not in text


def test_cli_unreachable_cloud_endpoint_exits_4_without_the_secret(
    cli: CliFn, write_config: Callable[[str], Any]
) -> None:
    path = config_for(f"http://127.0.0.1:{unused_port()}/v1", write_config)
    result = cli("--config", path, "unload", "gpt-4.1")
    assert result.exit_code == ExitCode.SERVER_UNREACHABLE
    assert_no_secret(result.stdout, result.stderr)


def test_cli_load_on_a_cloud_endpoint_says_always_ready(
    cli: CliFn, cloud: tuple[str, list[str]], write_config: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = cloud
    monkeypatch.setenv(KEY_VAR, SECRET)
    path = config_for(url, write_config)
    result = cli("--config", path, "load", "gpt-4.1", "--endpoint", "cloud", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["outcome"] == "always-ready" and result.json()["steps"] == []
    assert "cloud endpoint, always ready, nothing to load" in result.stderr
    missing = cli("--config", path, "load", "gpt-9", "--endpoint", "cloud")
    assert missing.exit_code == 3
    assert_no_secret(result.stdout, result.stderr + missing.stderr)


def test_cli_pin_on_a_cloud_endpoint_exits_1_and_leaves_the_config(
    cli: CliFn, cloud: tuple[str, list[str]], write_config: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = cloud
    monkeypatch.setenv(KEY_VAR, SECRET)
    path = config_for(url, write_config)
    before = Path(path).read_text(encoding="utf-8")

    result = cli("--config", path, "pin", "gpt-4.1")

    assert result.exit_code == 1
    assert "nothing to pin" in result.stderr and "always ready" in result.stderr
    assert Path(path).read_text(encoding="utf-8") == before
