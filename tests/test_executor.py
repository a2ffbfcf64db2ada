"""The executor's ordering and its promises when a swap fails or is interrupted (fake provider)."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import pytest

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.errors import DeadlineExceeded, DoesNotFit, ServerBusy, ServerError
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


class Clock:
    """Time for the executor and the server alike: the executor's sleeps move it on."""

    def __init__(self, on_sleep: BaseException | None = None) -> None:
        self.now = 0.0
        self.on_sleep = on_sleep  # raised by the first sleep: Ctrl-C while the executor waits

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep is not None:
            failure, self.on_sleep = self.on_sleep, None
            raise failure


class SlowUnloadServer(FakeServer):
    """Ollama's unload as the reference describes it: the model leaves ``leave_s`` after the request,
    and a load sent meanwhile is answered by the leaving runner, which goes anyway (ollama.md
    Corrections §4.6). ``unlisted`` models load but are never listed (another client unloads them)."""

    def __init__(self, loaded: list[str], clock: Clock, leave_s: float, unlisted: set[str] | None = None) -> None:
        super().__init__(loaded)
        self.clock = clock
        self.leave_s = leave_s
        self.unlisted = unlisted or set()
        self.leaving: dict[str, float] = {}  # name -> when it is gone

    def names(self, at: float | None = None) -> list[str]:
        moment = self.clock.now if at is None else at
        return [name for name in self.loaded if self.leaving.get(name, float("inf")) > moment]

    def list_loaded(self) -> list[LoadedModel]:
        return [LoadedModel(name=name, size=10, size_vram=10) for name in self.names()]

    def load(self, request: LoadRequest) -> LoadOutcome:
        self.calls.append(("load", request.name))
        if request.name in self.names():
            return LoadOutcome(request.name, 0.0)  # answered by the runner there, leaving or not
        self.leaving.pop(request.name, None)
        if request.name in self.loaded:
            self.loaded.remove(request.name)
        if request.name not in self.unlisted:
            self.loaded.append(request.name)
        return LoadOutcome(request.name, 0.0)

    def unload(self, name: str) -> None:
        self.calls.append(("unload", name))
        self.leaving[name] = self.clock.now + self.leave_s


def test_a_load_the_server_does_not_list_restores_the_evicted_pin() -> None:
    clock = Clock()
    server = SlowUnloadServer(["pin"], clock, leave_s=0.0, unlisted={"heavy"})

    with pytest.raises(ServerError) as raised:
        Executor(server, clock=clock, sleep=clock.sleep).load(LoadRequest("heavy"), heavy_plan(), restore=PIN_REQUEST)

    assert str(raised.value).startswith("fake answered that heavy loaded, but does not list it as loaded")
    assert str(raised.value).endswith("; restored pinned pin")
    assert server.names(at=clock.now + 3600) == ["pin"]


def test_an_eviction_wait_that_times_out_waits_for_the_pin_to_leave_then_reloads_it() -> None:
    clock = Clock()
    # The pin is busy: it leaves 1.5 s after the unload request, after our 1 s deadline.
    server = SlowUnloadServer(["pin"], clock, leave_s=1.5)

    with pytest.raises(DeadlineExceeded) as raised:
        Executor(server, clock=clock, sleep=clock.sleep).load(
            LoadRequest("heavy"), heavy_plan(), restore=PIN_REQUEST, unload_timeout_s=1.0
        )

    assert "pin still loaded on fake" in str(raised.value) and str(raised.value).endswith("; restored pinned pin")
    assert server.names(at=clock.now + 3600) == ["pin"]  # still there once the old runner is long gone
    assert ("load", "heavy") not in server.calls


def test_ctrl_c_while_waiting_for_an_eviction_reloads_the_pin_once_it_has_left() -> None:
    clock = Clock(on_sleep=KeyboardInterrupt())
    server = SlowUnloadServer(["pin"], clock, leave_s=0.5)

    with pytest.raises(KeyboardInterrupt):
        Executor(server, clock=clock, sleep=clock.sleep).load(LoadRequest("heavy"), heavy_plan(), restore=PIN_REQUEST)

    assert server.names(at=clock.now + 3600) == ["pin"]


def test_a_pin_that_does_not_come_back_is_named_with_why() -> None:
    clock = Clock()
    server = SlowUnloadServer(["pin"], clock, leave_s=0.0, unlisted={"heavy", "pin"})

    with pytest.raises(ServerError) as raised:
        Executor(server, clock=clock, sleep=clock.sleep).load(LoadRequest("heavy"), heavy_plan(), restore=PIN_REQUEST)

    assert str(raised.value).endswith(
        "; restored pinned nothing; could not restore pinned pin "
        "(fake answered that pin loaded, but does not list it as loaded)"
    )
    assert server.names(at=clock.now + 3600) == []
