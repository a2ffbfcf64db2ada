"""An eviction never cuts off a load or a request in flight, against fakes of the servers that report it.

The everyday case (another client generating on the victim) runs against a real llama-server in
tests/test_busy_real.py; here are the cases a real server rarely shows on demand: a victim another
client is still loading, a victim that stays busy past the deadline, and vLLM's request gauges.
"""

from __future__ import annotations

import json

import httpx
import pytest

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.errors import ExitCode
from sourceprep_models.providers.base import Activity
from sourceprep_models.providers.llamaswap import LlamaSwapProvider
from sourceprep_models.providers.omlx import OMLXProvider
from sourceprep_models.providers.production_stack import ProductionStackProvider
from sourceprep_models.providers.vllm import VLLMProvider, server_root
from tests.conftest import CliFn, WriteConfig
from tests.fakes.llamacpp import FakeLlamaRouter
from tests.fakes.llamaswap import GEMMA as SWAP_GEMMA
from tests.fakes.llamaswap import QWEN as SWAP_QWEN
from tests.fakes.llamaswap import FakeLlamaSwap
from tests.fakes.omlx import GEMMA as OMLX_GEMMA
from tests.fakes.omlx import QWEN as OMLX_QWEN
from tests.fakes.omlx import FakeOMLX
from tests.fakes.production_stack import QWEN as STACK_QWEN
from tests.fakes.production_stack import FakeEngine, FakeRouter
from tests.fakes.vllm import QWEN, FakeVLLM
from tests.loopback import serve


def config_for(write_config: WriteConfig, url: str) -> str:
    return str(write_config(f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{url}"\n'))


def test_a_model_another_client_is_still_loading_is_not_evicted_until_it_is_loaded(
    cli: CliFn, write_config: WriteConfig
) -> None:
    fake = FakeLlamaRouter(
        models={"tiny-a": "loading", "tiny-b": "unloaded"}, loading_for={"tiny-a": 32}, max_instances=1
    )  # 32 listings: the load itself lists a few times before it waits (and looks for another victim)
    with serve(lambda r: fake.handle(r.method, r.path, r.body)) as url:
        result = cli("--config", config_for(write_config, url), "load", "tiny-b", "--no-warm")

    assert result.exit_code == 0, result.stderr
    assert "waiting for tiny-a: loading (on llama)" in result.stderr
    assert fake.cut_off == []
    assert fake.models == {"tiny-a": "unloaded", "tiny-b": "loaded"}


def test_a_victim_busy_past_the_deadline_stops_the_swap_and_is_left_alone(
    cli: CliFn, write_config: WriteConfig
) -> None:
    fake = FakeLlamaRouter(models={"tiny-a": "loaded", "tiny-b": "unloaded"}, busy={"tiny-a": 10**9}, max_instances=1)
    with serve(lambda r: fake.handle(r.method, r.path, r.body)) as url:
        result = cli("--config", config_for(write_config, url), "load", "tiny-b", "--no-warm", "--timeout", "0.3s")

    assert result.exit_code == ExitCode.ERROR
    [line] = result.stderr.strip().splitlines()[-1:]
    assert "tiny-a on endpoint 'llama' is still serving a request after" in line
    assert "retry when it is idle, raise --timeout, or unload it yourself" in line
    assert "Traceback" not in result.stderr
    assert fake.cut_off == []
    assert fake.models == {"tiny-a": "loaded", "tiny-b": "unloaded"}
    assert ("POST", "/models/unload") not in fake.requests


# -- vLLM: the request gauges of GET /metrics -----------------------------------------------------------


def vllm(server: FakeVLLM) -> VLLMProvider:
    endpoint = Endpoint(name="gpu", kind="vllm", url="http://gpu.test:8000")
    return VLLMProvider(endpoint, client=httpx.Client(base_url=server_root(endpoint.url), transport=server.transport()))


def test_vllm_reports_running_and_waiting_requests_as_activity() -> None:
    provider = vllm(FakeVLLM(running=1, waiting=2))
    assert provider.capabilities.reports_activity
    assert provider.activity(QWEN) == Activity(QWEN, requests=3)
    assert provider.activity(QWEN).doing == "serving 3 requests"


def test_an_idle_vllm_is_not_busy_and_one_without_the_gauges_is_unknown() -> None:
    assert not vllm(FakeVLLM()).activity(QWEN).busy
    assert vllm(FakeVLLM(request_gauges=False)).activity(QWEN) == Activity(QWEN, requests=None)


# -- another victim: an idle model goes in place of a busy one where the load still fits --------------------------


@pytest.mark.parametrize("busy", ["tiny-a", "tiny-c"])
def test_a_busy_victim_stays_and_an_idle_model_is_evicted_instead(
    cli: CliFn, write_config: WriteConfig, busy: str
) -> None:
    # Room for two models (--models-max 2), two resident: one must go, and whichever is busy must stay.
    # Over a cap the smallest leaves first (planning/load.py, rule 6), so tiny-a is the victim unless it is busy.
    fake = FakeLlamaRouter(
        models={"tiny-a": "loaded", "tiny-c": "loaded", "tiny-b": "unloaded"},
        sizes={"tiny-a": 500_000, "tiny-c": 900_000},
        busy={busy: 10**9},
        max_instances=2,
    )
    idle = "tiny-c" if busy == "tiny-a" else "tiny-a"
    with serve(lambda r: fake.handle(r.method, r.path, r.body)) as url:
        result = cli(
            "--config", config_for(write_config, url), "load", "tiny-b", "--no-warm", "--timeout", "0.3s", "--json"
        )

    assert result.exit_code == 0, result.stderr
    if busy == "tiny-a":
        assert "tiny-a is serving a request; evicting tiny-c instead" in result.stderr
    else:
        assert "instead" not in result.stderr
    assert "waiting for" not in result.stderr
    assert fake.cut_off == []
    assert fake.models == {busy: "loaded", idle: "unloaded", "tiny-b": "loaded"}
    steps = json.loads(result.stdout)["steps"]
    assert [step["model"] for step in steps if step["step"] == "unload"] == [idle]


def test_when_every_other_model_is_busy_too_the_eviction_waits_as_before(cli: CliFn, write_config: WriteConfig) -> None:
    fake = FakeLlamaRouter(
        models={"tiny-a": "loaded", "tiny-c": "loaded", "tiny-b": "unloaded"},
        busy={"tiny-a": 3, "tiny-c": 3},
        max_instances=2,
    )
    with serve(lambda r: fake.handle(r.method, r.path, r.body)) as url:
        result = cli("--config", config_for(write_config, url), "load", "tiny-b", "--no-warm")

    assert result.exit_code == 0, result.stderr
    assert "instead" not in result.stderr
    assert "waiting for tiny-" in result.stderr
    assert fake.cut_off == []
    assert fake.models["tiny-b"] == "loaded"
    assert sorted(fake.models.values()) == ["loaded", "loaded", "unloaded"]


def test_single_model_mode_waits_for_a_busy_model_instead_of_keeping_it_beside_the_new_one(
    cli: CliFn, write_config: WriteConfig
) -> None:
    fake = FakeLlamaRouter(
        models={"tiny-a": "loaded", "tiny-c": "loaded", "tiny-b": "unloaded"}, busy={"tiny-a": 3}, max_instances=4
    )
    with serve(lambda r: fake.handle(r.method, r.path, r.body)) as url:
        config = write_config(f'[memory]\nsingle_model = true\n[endpoints.llama]\nkind = "llamacpp"\nurl = "{url}"\n')
        result = cli("--config", str(config), "load", "tiny-b", "--no-warm")

    assert result.exit_code == 0, result.stderr
    assert "waiting for tiny-a: serving a request (on llama)" in result.stderr
    assert "instead" not in result.stderr
    assert fake.cut_off == []
    assert fake.models == {"tiny-a": "unloaded", "tiny-c": "unloaded", "tiny-b": "loaded"}


# -- llama-swap: /running's "starting" and the inflight snapshot of /api/events ------------------------------------


def swap_config(write_config: WriteConfig, url: str) -> str:
    # One model at a time, as llama-swap's default group runs them, so the load must evict the running one.
    return str(write_config(f'[memory]\nsingle_model = true\n[endpoints.swap]\nkind = "llamaswap"\nurl = "{url}"\n'))


def test_llamaswap_load_waits_for_the_request_on_the_running_model_then_swaps(
    cli: CliFn, write_config: WriteConfig
) -> None:
    fake = FakeLlamaSwap(running={SWAP_QWEN: "ready"}, in_flight={SWAP_QWEN: 3})
    with serve(lambda r: fake.handle(r.method, r.path, r.headers)) as url:
        result = cli("--config", swap_config(write_config, url), "load", SWAP_GEMMA, "--no-warm")

    assert result.exit_code == 0, result.stderr
    assert f"waiting for {SWAP_QWEN}: serving a request (on swap)" in result.stderr
    assert fake.cut_off == []
    assert fake.running == {SWAP_GEMMA: "ready"}


def test_llamaswap_model_busy_past_the_deadline_stops_the_load_and_stays_running(
    cli: CliFn, write_config: WriteConfig
) -> None:
    fake = FakeLlamaSwap(running={SWAP_QWEN: "ready"}, in_flight={SWAP_QWEN: 10**9})
    with serve(lambda r: fake.handle(r.method, r.path, r.headers)) as url:
        result = cli("--config", swap_config(write_config, url), "load", SWAP_GEMMA, "--no-warm", "--timeout", "0.3s")

    assert result.exit_code == ExitCode.ERROR
    line = result.stderr.strip().splitlines()[-1]
    assert f"{SWAP_QWEN} on endpoint 'swap' is still serving a request after" in line
    assert f"`sourceprep-models unload {SWAP_QWEN}`" in line
    assert "Traceback" not in result.stderr
    assert fake.cut_off == []
    assert fake.running == {SWAP_QWEN: "ready"}
    assert fake.sent("POST", "/api/models/unload") == []


def llamaswap(fake: FakeLlamaSwap) -> LlamaSwapProvider:
    endpoint = Endpoint(name="swap", kind="llamaswap", url="http://swap.test:8080")
    return LlamaSwapProvider(endpoint, client=httpx.Client(base_url=endpoint.url, transport=fake.transport()))


def test_llamaswap_reports_a_starting_model_as_loading_and_counts_requests_per_model() -> None:
    fake = FakeLlamaSwap(running={SWAP_QWEN: "starting", SWAP_GEMMA: "ready"}, in_flight={SWAP_GEMMA: 5, SWAP_QWEN: 5})
    provider = llamaswap(fake)
    assert provider.capabilities.reports_activity
    assert provider.activity(SWAP_QWEN) == Activity(SWAP_QWEN, loading=True)
    assert provider.activity(SWAP_GEMMA) == Activity(SWAP_GEMMA, requests=1)
    assert provider.activity("embedder") == Activity("embedder", requests=0)  # an alias of a stopped model


def test_llamaswap_with_only_a_total_of_requests_is_idle_at_zero_and_unknown_otherwise() -> None:
    fake = FakeLlamaSwap(running={SWAP_QWEN: "ready", SWAP_GEMMA: "ready"}, inflight_event="total")
    assert llamaswap(fake).activity(SWAP_QWEN) == Activity(SWAP_QWEN, requests=0)
    fake.in_flight = {SWAP_GEMMA: 10**9}
    assert llamaswap(fake).activity(SWAP_QWEN) == Activity(SWAP_QWEN, requests=None)
    assert llamaswap(FakeLlamaSwap(running={SWAP_QWEN: "ready"}, inflight_event="none")).activity(SWAP_QWEN) == (
        Activity(SWAP_QWEN, requests=None)
    )


# -- oMLX: is_loading per model, requests summed over the server (/api/status) ------------------------------------


def omlx_config(write_config: WriteConfig, url: str) -> str:
    text = f'[memory]\nsingle_model = true\n[endpoints.mac]\nkind = "omlx"\nurl = "{url}/v1"\n'
    return str(write_config(text))


def test_omlx_load_waits_for_the_request_on_the_loaded_model_then_swaps(cli: CliFn, write_config: WriteConfig) -> None:
    fake = FakeOMLX(loaded={OMLX_QWEN}, in_flight={OMLX_QWEN: 3})
    with serve(fake.loopback) as url:
        result = cli("--config", omlx_config(write_config, url), "load", OMLX_GEMMA, "--no-warm")

    assert result.exit_code == 0, result.stderr
    assert f"waiting for {OMLX_QWEN}: serving a request (on mac)" in result.stderr
    assert fake.loaded == {OMLX_GEMMA}


def test_omlx_model_busy_past_the_deadline_stops_the_load_and_stays_loaded(
    cli: CliFn, write_config: WriteConfig
) -> None:
    fake = FakeOMLX(loaded={OMLX_QWEN}, in_flight={OMLX_QWEN: 10**9})
    with serve(fake.loopback) as url:
        result = cli("--config", omlx_config(write_config, url), "load", OMLX_GEMMA, "--no-warm", "--timeout", "0.3s")

    assert result.exit_code == ExitCode.ERROR
    line = result.stderr.strip().splitlines()[-1]
    assert f"{OMLX_QWEN} on endpoint 'mac' is still serving a request after" in line
    assert "Traceback" not in result.stderr
    assert fake.loaded == {OMLX_QWEN}
    assert fake.paths("POST") == []


def omlx(fake: FakeOMLX) -> OMLXProvider:
    endpoint = Endpoint(name="mac", kind="omlx", url="http://mac.test:8000")
    return OMLXProvider(endpoint, client=httpx.Client(base_url=endpoint.url, transport=fake.transport()))


def test_omlx_counts_requests_only_where_the_server_wide_sum_can_be_one_models() -> None:
    assert omlx(FakeOMLX(loading={OMLX_QWEN})).activity(OMLX_QWEN) == Activity(OMLX_QWEN, loading=True)
    assert omlx(FakeOMLX(loaded={OMLX_QWEN})).activity(OMLX_QWEN) == Activity(OMLX_QWEN, requests=0)
    alone = FakeOMLX(loaded={OMLX_QWEN}, in_flight={OMLX_QWEN: 5})
    assert omlx(alone).activity(OMLX_QWEN) == Activity(OMLX_QWEN, requests=1)
    two = FakeOMLX(loaded={OMLX_QWEN, OMLX_GEMMA}, in_flight={OMLX_GEMMA: 5})
    assert omlx(two).activity(OMLX_QWEN) == Activity(OMLX_QWEN, requests=None)  # whose request: not said
    old = FakeOMLX(loaded={OMLX_QWEN}, status_summary=False)
    assert omlx(old).activity(OMLX_QWEN) == Activity(OMLX_QWEN, requests=None)


# -- production-stack: the router's request gauges, per engine URL -------------------------------------------------


def stack(fake: FakeRouter) -> ProductionStackProvider:
    endpoint = Endpoint(name="k8s", kind="production-stack", url="http://router.test:30080")
    return ProductionStackProvider(endpoint, client=httpx.Client(base_url=endpoint.url, transport=fake.transport()))


def replicas() -> list[FakeEngine]:
    return [FakeEngine(f"vllm-qwen-deployment-{i}", FakeVLLM(model=STACK_QWEN)) for i in range(2)]


def test_production_stack_counts_the_routers_requests_when_every_engine_serves_the_model() -> None:
    fake = FakeRouter(engines=replicas(), in_flight={"vllm-qwen-deployment-0": 5, "vllm-qwen-deployment-1": 5})
    provider = stack(fake)
    assert provider.capabilities.reports_activity
    assert provider.activity(STACK_QWEN) == Activity(STACK_QWEN, requests=2)
    assert provider.activity(STACK_QWEN).doing == "serving 2 requests"


def test_production_stack_is_idle_at_zero_and_unknown_when_the_requests_may_be_another_engines() -> None:
    assert stack(FakeRouter()).activity(STACK_QWEN) == Activity(STACK_QWEN, requests=0)
    busy_llama = FakeRouter(in_flight={"vllm-llama-deployment-0": 5})
    assert stack(busy_llama).activity(STACK_QWEN) == Activity(STACK_QWEN, requests=None)  # which engine: unsaid
    assert stack(FakeRouter(metrics=False)).activity(STACK_QWEN) == Activity(STACK_QWEN, requests=None)
