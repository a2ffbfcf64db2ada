"""The executor's ordering and its promises when a swap fails or is interrupted (fake provider)."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import pytest

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.errors import DoesNotFit, ServerBusy
from sourceprep_models.planning.load import Demand, Plan, Resident
from sourceprep_models.providers.base import Capabilities, LoadedModel, LoadOutcome, LoadRequest, ModelInfo, Provider
from sourceprep_models.swap.executor import Executor
from sourceprep_models.swap.locks import endpoint_lock, lock_path
from sourceprep_models.units import KeepAlive


class FakeServer(Provider):
    """Loads and unloads instantly; ``fail_on`` makes loading one model raise."""

    kind: ClassVar[str] = "fake"
    capabilities = Capabilities(True, True, True, True)

    def __init__(self, loaded: list[str], fail_on: dict[str, BaseException] | None = None) -> None:
        self.endpoint = Endpoint(name="fake", kind="fake", url="http://fake")
        self.loaded = list(loaded)
        self.fail_on = fail_on or {}
        self.calls: list[tuple[str, str]] = []

    def list_available(self) -> list[ModelInfo]:
        return []

    def describe(self, name: str) -> ModelInfo:
        return ModelInfo(name=name, identity=name)

    def list_loaded(self) -> list[LoadedModel]:
        return [LoadedModel(name=name, size=10, size_vram=10) for name in self.loaded]

    def load(self, request: LoadRequest) -> LoadOutcome:
        self.calls.append(("load", request.name))
        if request.name in self.fail_on:
            raise self.fail_on[request.name]
        self.loaded.append(request.name)
        return LoadOutcome(request.name, 0.0)

    def unload(self, name: str) -> None:
        self.calls.append(("unload", name))
        self.loaded.remove(name)

    def close(self) -> None:
        pass


def heavy_plan() -> Plan:
    pin = Resident("pin", "pin", 10, pinned=True)
    return Plan(incoming=Demand("heavy", "heavy", 20), budget=20, evict=(pin,), restore_after=(pin,))


PIN_REQUEST = {("fake", "pin"): LoadRequest("pin", keep_alive=KeepAlive(None))}


def test_order_is_unload_wait_load_verify() -> None:
    server = FakeServer(["pin"])
    report = Executor(server).load(LoadRequest("heavy"), heavy_plan(), restore=PIN_REQUEST)
    assert [step.step for step in report.steps] == ["unload", "wait-for-free", "load", "verify"]
    assert server.calls == [("unload", "pin"), ("load", "heavy")]
    assert report.pending_restore == ["pin"]


@pytest.mark.parametrize("failure", [DoesNotFit("heavy does not fit"), KeyboardInterrupt()])
def test_failure_after_evicting_restores_the_pin(failure: BaseException) -> None:
    server = FakeServer(["pin"], fail_on={"heavy": failure})
    with pytest.raises(type(failure)) as raised:
        Executor(server).load(LoadRequest("heavy"), heavy_plan(), restore=PIN_REQUEST)
    assert server.loaded == ["pin"]
    assert server.calls == [("unload", "pin"), ("load", "heavy"), ("load", "pin")]
    if isinstance(failure, DoesNotFit):
        assert str(raised.value) == "heavy does not fit; restored pinned pin"


def test_endpoint_lock_is_exclusive_across_processes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = "http://127.0.0.1:1"
    holder = (
        "import sys, time\n"
        "from sourceprep_models.swap.locks import endpoint_lock\n"
        f"with endpoint_lock('x', {url!r}, timeout_s=5):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "held\n"
        busy = pytest.raises(ServerBusy, match="another sourceprep-models is changing what is loaded on x")
        with busy, endpoint_lock("x", url, timeout_s=0.2):
            pass
    finally:
        assert process.stdin is not None
        process.stdin.write("\n")
        process.stdin.close()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
    with endpoint_lock("x", url, timeout_s=0.2):
        assert lock_path(url).exists()
