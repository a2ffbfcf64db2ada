"""An eviction never cuts off a load or a request in flight, against fakes of the servers that report it.

The everyday case (another client generating on the victim) runs against a real llama-server in
tests/test_busy_real.py; here are the cases a real server rarely shows on demand: a victim another
client is still loading, a victim that stays busy past the deadline, and vLLM's request gauges.
"""

from __future__ import annotations

import httpx

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.errors import ExitCode
from sourceprep_models.providers.base import Activity
from sourceprep_models.providers.vllm import VLLMProvider, server_root
from tests.conftest import CliFn, WriteConfig
from tests.fakes.llamacpp import FakeLlamaRouter
from tests.fakes.vllm import QWEN, FakeVLLM
from tests.loopback import serve


def config_for(write_config: WriteConfig, url: str) -> str:
    return str(write_config(f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{url}"\n'))


def test_a_model_another_client_is_still_loading_is_not_evicted_until_it_is_loaded(
    cli: CliFn, write_config: WriteConfig
) -> None:
    fake = FakeLlamaRouter(
        models={"tiny-a": "loading", "tiny-b": "unloaded"}, loading_for={"tiny-a": 16}, max_instances=1
    )
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
