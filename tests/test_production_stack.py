"""vLLM production-stack router: engines and their models in status, unload = sleep an engine, load = wake
it, through the router by engine id; errors the router hides behind a 500.

The fake router (``tests/fakes/production_stack.py``) follows the router's source (vllm-project/
production-stack at a6c01db) and forwards to fake vLLM engines, so what reaches an engine is checked too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.errors import DeadlineExceeded, ExitCode
from sourceprep_models.providers import create_provider
from sourceprep_models.providers.base import LoadRequest
from sourceprep_models.providers.production_stack import ProductionStackProvider
from tests.conftest import CliFn
from tests.fakes.production_stack import LLAMA, QWEN, FakeEngine, FakeRouter
from tests.fakes.vllm import FakeVLLM, openai_error
from tests.loopback import serve, unused_port

ENDPOINT = Endpoint(name="k8s", kind="production-stack", url="http://router.test:30080")


@pytest.fixture
def router() -> Iterator[tuple[FakeRouter, str]]:
    fake = FakeRouter()
    with serve(fake.handle) as url:
        yield fake, url


def _config(write_config: Callable[[str], Any], url: str, extra: str = "") -> str:
    return str(write_config(f'[endpoints.k8s]\nkind = "production-stack"\nurl = "{url}"\n{extra}'))


def _status(cli: CliFn, path: str) -> dict[str, Any]:
    status = cli("--config", path, "status", "--json", "--no-hardware")
    assert status.exit_code == 0, status.stderr
    [endpoint] = status.json()["endpoints"]
    assert (endpoint["kind"], endpoint["ok"]) == ("production-stack", True)
    return dict(endpoint)


def _states(cli: CliFn, path: str) -> dict[str, str]:
    return {model["name"]: model["state"] for model in _status(cli, path)["models"]}


def _engine_posts(engine: FakeEngine) -> list[str]:
    return engine.server.posts()


# -- through the CLI, over a real socket ----------------------------------------------------------


def test_status_lists_each_engine_model_and_the_engines(
    cli: CliFn, router: tuple[FakeRouter, str], write_config: Callable[[str], Any]
) -> None:
    fake, url = router
    endpoint = _status(cli, _config(write_config, url))
    assert {model["name"]: model["state"] for model in endpoint["models"]} == {QWEN: "loaded", LLAMA: "loaded"}
    qwen, llama = fake.engines
    assert endpoint["server"]["engines"] == [
        {"engine_id": qwen.engine_id, "serving_models": [QWEN, "qwen"], "created": 1767225600},
        {"engine_id": llama.engine_id, "serving_models": [LLAMA], "created": 1767225600},
    ]
    assert fake.posts() == []


def test_unload_sleeps_only_the_engine_serving_the_model_and_load_wakes_it(
    cli: CliFn, router: tuple[FakeRouter, str], write_config: Callable[[str], Any]
) -> None:
    fake, url = router
    qwen, llama = fake.engines
    path = _config(write_config, url)

    unloaded = cli("--config", path, "unload", QWEN, "--json")
    assert unloaded.exit_code == 0, unloaded.stderr
    assert unloaded.json()["endpoints"][0]["unloaded"] == [QWEN]
    assert fake.posts() == [f"/sleep?id={qwen.engine_id}&level=1&mode=wait"]
    # The router forwards everything but the id: the engine parks its weights and lets requests finish.
    assert _engine_posts(qwen) == ["/sleep?level=1&mode=wait"] and qwen.server.freed
    assert _engine_posts(llama) == []
    assert _states(cli, path) == {QWEN: "parked", LLAMA: "loaded"}

    loaded = cli("--config", path, "load", QWEN, "--no-warm", "--json")
    assert loaded.exit_code == 0, loaded.stderr
    assert loaded.json()["outcome"] == "loaded" and loaded.json()["resident"]["state"] == "loaded"
    assert fake.posts()[1:] == [f"/wake_up?id={qwen.engine_id}"]
    assert _engine_posts(qwen)[1:] == ["/wake_up"] and not qwen.server.sleeping
    assert _states(cli, path) == {QWEN: "loaded", LLAMA: "loaded"}


def test_load_of_an_awake_model_sends_nothing(
    cli: CliFn, router: tuple[FakeRouter, str], write_config: Callable[[str], Any]
) -> None:
    fake, url = router
    loaded = cli("--config", _config(write_config, url), "load", "qwen", "--no-warm", "--json")
    assert loaded.exit_code == 0, loaded.stderr
    assert loaded.json()["outcome"] == "already-loaded" and fake.posts() == []


def test_unknown_model_exits_3_with_did_you_mean(
    cli: CliFn, router: tuple[FakeRouter, str], write_config: Callable[[str], Any]
) -> None:
    fake, url = router
    result = cli("--config", _config(write_config, url), "load", "Qwen/Qwen3-8", "--no-warm")
    assert result.exit_code == ExitCode.MODEL_NOT_FOUND
    assert "did you mean 'Qwen/Qwen3-8B'?" in result.stderr and "'k8s'" in result.stderr
    assert "Traceback" not in result.stderr and fake.posts() == []


def test_router_down_exits_4_naming_how_to_reach_it(cli: CliFn, write_config: Callable[[str], Any]) -> None:
    path = _config(write_config, f"http://127.0.0.1:{unused_port()}")
    result = cli("--config", path, "load", QWEN, "--no-warm")
    assert result.exit_code == ExitCode.SERVER_UNREACHABLE
    [line] = result.stderr.strip().splitlines()
    assert "cannot reach vLLM production-stack router" in line and "kubectl port-forward" in line
    status = cli("--config", path, "status", "--json", "--no-hardware")
    assert status.exit_code == ExitCode.SERVER_UNREACHABLE and status.json()["endpoints"][0]["ok"] is False


def test_an_engine_that_fails_to_wake_is_one_line_naming_the_engine(
    cli: CliFn, router: tuple[FakeRouter, str], write_config: Callable[[str], Any]
) -> None:
    fake, url = router
    qwen = fake.engines[0]
    qwen.server.asleep(1)
    qwen.server.overrides[("POST", "/wake_up")] = openai_error("CUDA out of memory", "InternalServerError", 500)
    path = _config(write_config, url)
    result = cli("--config", path, "load", QWEN, "--no-warm")
    assert result.exit_code == ExitCode.ERROR
    [line] = result.stderr.strip().splitlines()
    assert f"engine {qwen.engine_id} ({QWEN})" in line and "could not be woken" in line and "log" in line
    assert qwen.server.sleeping and _states(cli, path)[QWEN] == "parked"


def test_an_engine_without_sleep_routes_is_fixed_and_unload_names_the_fix(
    cli: CliFn, router: tuple[FakeRouter, str], write_config: Callable[[str], Any]
) -> None:
    fake, url = router
    llama = fake.engines[1]
    llama.server.dev_mode = False  # its /is_sleeping is a 404, which the router turns into a 500
    path = _config(write_config, url)
    assert _states(cli, path) == {QWEN: "loaded", LLAMA: "fixed"}
    result = cli("--config", path, "unload", LLAMA)
    assert result.exit_code == ExitCode.ERROR
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr
    assert llama.engine_id in line and "--enable-sleep-mode" in line and "VLLM_SERVER_DEV_MODE=1" in line
    assert fake.posts() == []


def test_static_discovery_answers_500_after_the_engine_switched_and_that_counts_as_done(
    cli: CliFn, write_config: Callable[[str], Any]
) -> None:
    fake = FakeRouter(discovery="static")
    qwen = fake.engines[0]
    with serve(fake.handle) as url:
        path = _config(write_config, url)
        unloaded = cli("--config", path, "unload", QWEN)
        assert unloaded.exit_code == 0, unloaded.stderr
        assert qwen.server.sleeping and _states(cli, path) == {QWEN: "parked", LLAMA: "loaded"}
        loaded = cli("--config", path, "load", QWEN, "--no-warm")
        assert loaded.exit_code == 0, loaded.stderr
        assert not qwen.server.sleeping and _states(cli, path) == {QWEN: "loaded", LLAMA: "loaded"}


def test_replicas_are_one_model_unload_sleeps_all_and_load_wakes_one(
    cli: CliFn, write_config: Callable[[str], Any]
) -> None:
    fake = FakeRouter(engines=[FakeEngine(f"vllm-qwen-{n}", FakeVLLM(model=QWEN)) for n in range(2)])
    first, second = fake.engines
    with serve(fake.handle) as url:
        path = _config(write_config, url)
        assert _states(cli, path) == {QWEN: "loaded"}
        assert cli("--config", path, "unload", QWEN).exit_code == 0
        assert first.server.sleeping and second.server.sleeping
        assert _states(cli, path) == {QWEN: "parked"}
        assert cli("--config", path, "load", QWEN, "--no-warm").exit_code == 0
        assert not first.server.sleeping and second.server.sleeping
        assert _states(cli, path) == {QWEN: "loaded"}


def test_sleep_level_is_refused_for_this_kind(cli: CliFn, write_config: Callable[[str], Any]) -> None:
    path = _config(write_config, "http://127.0.0.1:30080", "sleep_level = 2\n")
    result = cli("--config", path, "status", "--no-hardware")
    assert result.exit_code == ExitCode.BAD_CONFIG
    assert "sleep_level" in result.stderr and "production-stack" in result.stderr


# -- the provider on its own ------------------------------------------------------------------------


def test_records_carry_the_engine_id_and_the_engines_context() -> None:
    fake = FakeRouter()
    provider = create_provider(ENDPOINT, client=httpx.Client(base_url=ENDPOINT.url, transport=fake.transport()))
    qwen, llama = fake.engines
    infos = {info.name: info for info in provider.list_available()}
    assert {name: info.engine for name, info in infos.items()} == {
        QWEN: qwen.engine_id,
        "qwen": qwen.engine_id,
        LLAMA: llama.engine_id,
    }
    assert infos["qwen"].identity == infos[QWEN].identity != infos[LLAMA].identity
    assert infos[QWEN].trained_context == 32768  # vLLM's max_model_len, passed on by Kubernetes discovery
    assert {model.name: model.engine for model in provider.list_loaded()} == {
        QWEN: qwen.engine_id,
        LLAMA: llama.engine_id,
    }
    caps = provider.capabilities
    assert caps.parks_in_ram and not caps.sets_context and not caps.reports_memory


def test_a_wake_that_never_shows_is_bounded_by_the_deadline() -> None:
    fake = FakeRouter()
    qwen = fake.engines[0]
    qwen.server.asleep(1)
    qwen.server.overrides[("POST", "/wake_up")] = (200, None)  # accepted, yet the engine keeps sleeping
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    provider = ProductionStackProvider(
        ENDPOINT,
        client=httpx.Client(base_url=ENDPOINT.url, transport=fake.transport()),
        sleep=sleep,
        clock=lambda: now[0],
    )
    with pytest.raises(DeadlineExceeded, match=f"engine {qwen.engine_id} .*still says it is sleeping"):
        provider.load(LoadRequest(QWEN, deadline_s=5.0))
    assert 5.0 <= now[0] < 7.0 and qwen.server.sleeping


def test_doctor_tells_the_router_from_a_plain_vllm() -> None:
    from sourceprep_models.doctor.checks.server import identify
    from sourceprep_models.providers.diagnostics import HttpReply
    from tests.loopback import Request

    fake = FakeRouter()
    # The router's /v1/models cards are vLLM's own (owned_by "vllm"), so vLLM's signature matches it too.
    identity = identify(lambda path: HttpReply(*fake.handle(Request("GET", path, {}, None))), "ollama")
    assert (identity.kind, identity.version, identity.facts) == ("production-stack", "0.1.10", {"engines": 2})
