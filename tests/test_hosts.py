"""Several machines in one config: each host has its own budget, a load on one host never evicts on
another, a pipeline is planned per host, and status/doctor show every host's budget and its source.

The real-server tests declare two REAL llama-server routers on loopback ports as two hosts (``host =``
on each endpoint), each with a budget where one tiny model fits and two do not."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliFn
from tests.emulator import EmulatedModel
from tests.emulator.pytest_plugin import EmulatorFactory
from tests.fakes.llamacpp import FakeLlamaRouter, error_body
from tests.fakes.omlx import FakeOMLX
from tests.loopback import Request, serve
from tests.realserver.router import LlamaServer

ONE_MODEL = '"28MiB"'  # one tiny model's child (17-20 MB) fits, two do not (see tests/test_machine.py)


def two_hosts(
    write: Callable[[str], Path],
    a: LlamaServer,
    b: LlamaServer,
    *,
    budget_b: str = ONE_MODEL,
    extra: str = "",
    other: bool = True,
) -> str:
    """Router a on host "left", router b on host "right", this machine's own budget far too small for either."""
    return str(
        write(
            '[memory]\nbudget = "1MiB"\nheadroom = "0"\n'
            f"[hosts.left]\nbudget = {ONE_MODEL}\n[hosts.right]\nbudget = {budget_b}\n"
            f'[endpoints.a]\nkind = "llamacpp"\nurl = "{a.url}"\nhost = "left"\n'
            f'[endpoints.b]\nkind = "llamacpp"\nurl = "{b.url}"\nhost = "right"\n'
            '[models.fast]\nname = "tiny-a"\nendpoint = "a"\n'
            + ('[models.other]\nname = "tiny-c"\nendpoint = "a"\n' if other else "")
            + '[models.coder]\nname = "tiny-b"\nendpoint = "b"\n'
            + extra
        )
    )


ALTERNATING = """
[pipelines.mixed]
stages = [
  { name = "catalogue", model = "fast", command = "true" },
  { name = "code", model = "coder", command = "true" },
  { name = "summary", model = "fast", command = "true" },
  { name = "fix", model = "coder", command = "true" },
]
"""


@pytest.mark.realserver
def test_a_load_on_one_host_never_evicts_on_another(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_hosts(write_config, a, b)
    assert cli("--config", path, "load", "fast").exit_code == 0
    dry = cli("--config", path, "load", "coder", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert (dry.json()["host"], dry.json()["evictions"]) == ("right", [])
    assert dry.json()["budget"]["source"] == "hosts.right.budget in the config"
    assert [row["endpoint"] for row in dry.json()["loaded_on"]] == []  # host left's models are not in this plan

    result = cli("--config", path, "load", "coder", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["evictions"] == []
    assert (a.loaded(), b.loaded()) == ({"tiny-a"}, {"tiny-b"})
    # Within one host the budget still holds: a second model on "left" evicts the first there only.
    again = cli("--config", path, "load", "other", "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json()["evictions"] == [{"model": "tiny-a", "endpoint": "a", "pinned": False}]
    assert (a.loaded(), b.loaded()) == ({"tiny-c"}, {"tiny-b"})


@pytest.mark.realserver
def test_a_pipeline_alternating_between_hosts_keeps_both_models_resident(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_hosts(write_config, a, b, extra=ALTERNATING)

    dry = cli("--config", path, "run-pipeline", "mixed", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    planned = [(row["stage"], row["host"], row["action"], row["evict"]) for row in dry.json()["stages"]]
    assert planned == [
        ("catalogue", "left", "load", []),
        ("code", "right", "load", []),
        ("summary", "left", "hit", []),
        ("fix", "right", "hit", []),
    ]
    assert dry.json()["budgets"] == {"left": 28 * 1024**2, "right": 28 * 1024**2}
    # Another machine's memory is no obstacle: right's first load runs during left's stage.
    assert [row["preload_during"] for row in dry.json()["stages"]] == [None, "catalogue", None, None]

    run = cli("--config", path, "run-pipeline", "mixed", "--json")

    assert run.exit_code == 0, run.stderr
    assert [row["evicted"] for row in run.json()["stages"]] == [[], [], [], []]
    assert [row["action"] for row in run.json()["stages"]] == ["load", "preloaded", "hit", "hit"]
    assert (a.loaded(), b.loaded()) == ({"tiny-a"}, {"tiny-b"})


@pytest.mark.realserver
def test_a_host_budget_too_small_for_a_stage_refuses_the_run_before_anything_loads(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_hosts(write_config, a, b, budget_b='"4MiB"', extra=ALTERNATING)

    result = cli("--config", path, "run-pipeline", "mixed")

    assert result.exit_code == 6
    assert "stage 'code'" in result.stderr and "host 'right'" in result.stderr
    assert "hosts.right.budget" in result.stderr
    assert (a.loaded(), b.loaded()) == (set(), set())


@pytest.mark.realserver
def test_status_shows_each_host_with_its_own_budget_and_use(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_hosts(write_config, a, b)
    cli("--config", path, "load", "coder")

    result = cli("--config", path, "status", "--json")

    assert result.exit_code == 0, result.stderr
    document = result.json()
    hosts = {host["name"]: host for host in document["hosts"]}
    assert set(hosts) == {"left", "right"}
    assert hosts["right"]["budget_bytes"] == 28 * 1024**2
    assert hosts["right"]["budget_source"] == "hosts.right.budget in the config"
    assert hosts["right"]["endpoints"] == ["b"] and hosts["left"]["used_bytes"] == 0
    coder_size = next(m["size"] for e in document["endpoints"] for m in e["models"] if m["name"] == "tiny-b")
    assert hosts["right"]["used_bytes"] == coder_size > 0
    assert {endpoint["name"]: endpoint["host"] for endpoint in document["endpoints"]} == {"a": "left", "b": "right"}
    table = cli("--config", path, "status")
    assert "MACHINE right:" in table.stdout and "MACHINE left:" in table.stdout
    assert table.stdout.splitlines()[0].split()[:2] == ["HOST", "ENDPOINT"]


# -- without real servers ------------------------------------------------------------------------


@pytest.fixture
def emulator_url(ollama_emulator: EmulatorFactory) -> str:
    return ollama_emulator(models=[EmulatedModel("small:1b", file_mib=8)], gpu_vram_mib=64).url


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_host_leaves_the_others_usable_and_fails_only_when_asked_alone(
    cli: CliFn, emulator_url: str, write_config: Callable[[str], Path]
) -> None:
    path = str(
        write_config(
            f'[hosts.desk]\nbudget = "22GiB"\n'
            f'[endpoints.here]\nkind = "ollama"\nurl = "{emulator_url}"\n'
            f'[endpoints.desk]\nkind = "ollama"\nurl = "http://127.0.0.1:{closed_port()}"\nhost = "desk"\n'
        )
    )

    both = cli("--config", path, "status", "--json")
    alone = cli("--config", path, "status", "--endpoint", "desk")

    assert both.exit_code == 0, both.stderr
    rows = {endpoint["name"]: endpoint for endpoint in both.json()["endpoints"]}
    assert rows["here"]["ok"] is True and rows["desk"]["ok"] is False
    assert "desk" in both.stderr
    assert alone.exit_code == 4


def test_an_unreachable_local_server_still_fails_status(
    cli: CliFn, emulator_url: str, write_config: Callable[[str], Path]
) -> None:
    path = str(
        write_config(
            f'[hosts.desk]\nbudget = "22GiB"\n'
            f'[endpoints.desk]\nkind = "ollama"\nurl = "{emulator_url}"\nhost = "desk"\n'
            f'[endpoints.here]\nkind = "ollama"\nurl = "http://127.0.0.1:{closed_port()}"\n'
        )
    )

    assert cli("--config", path, "status").exit_code == 4


def test_a_remote_endpoint_without_a_host_table_gets_a_host_of_its_own_with_an_unknown_budget(
    cli: CliFn, emulator_url: str, write_config: Callable[[str], Path]
) -> None:
    path = str(
        write_config(
            '[memory]\nbudget = "1MiB"\nheadroom = "0"\n'
            f'[endpoints.here]\nkind = "ollama"\nurl = "{emulator_url}"\n'
            '[endpoints.far]\nkind = "ollama"\nurl = "http://gpu-box.invalid:11434"\n'
        )
    )

    doctor = cli("--config", path, "doctor", "--json")

    checks = {check["id"]: check for check in doctor.json()["checks"]}
    far = checks["host.gpu-box.invalid.budget"]
    assert far["status"] == "warning"
    assert "budget unknown" in far["summary"] and "this machine's RAM is never used" in far["summary"]
    assert far["fix"].startswith('add [hosts."gpu-box.invalid"] with budget = ')


def test_doctor_names_each_host_budget_and_where_it_came_from(
    cli: CliFn, emulator_url: str, write_config: Callable[[str], Path]
) -> None:
    path = str(
        write_config(
            '[hosts.desk]\nbudget = "22GiB"\nheadroom = "2GiB"\n'
            f'[endpoints.here]\nkind = "ollama"\nurl = "{emulator_url}"\n'
            f'[endpoints.desk]\nkind = "ollama"\nurl = "http://127.0.0.1:{closed_port()}"\nhost = "desk"\n'
        )
    )

    doctor = cli("--config", path, "doctor", "--json")

    desk = next(check for check in doctor.json()["checks"] if check["id"] == "host.desk.budget")
    assert desk["status"] == "ok"
    assert desk["summary"] == "host desk (desk): 21.5 GB for models (hosts.desk.budget in the config, 2.1 GB headroom)"


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (
            '[endpoints.a]\nkind = "ollama"\nurl = "http://127.0.0.1:1"\nhost = "dsek"\n'
            '[hosts.desk]\nbudget = "1GiB"\n',
            4,
            "endpoints.a.host: no host named 'dsek'; did you mean 'desk'?",
        ),
        (
            '[hosts.spare]\nbudget = "8GiB"\n[endpoints.a]\nkind = "ollama"\nurl = "http://127.0.0.1:1"\n',
            1,
            "hosts.spare: no endpoint runs on this host",
        ),
        (
            '[hosts.one]\naddress = "gpu.lan"\n[hosts.two]\naddress = "GPU.lan"\n'
            '[endpoints.a]\nkind = "ollama"\nurl = "http://gpu.lan:11434"\n',
            4,
            "hosts.two.address: 'gpu.lan' is already the address of hosts.one",
        ),
        (
            '[hosts.local]\nbudget = "8GiB"\n[endpoints.a]\nkind = "ollama"\nurl = "http://127.0.0.1:1"\n',
            1,
            "hosts.local: is this machine, budgeted by [memory]",
        ),
        (
            '[hosts.desk]\nbudget = "nan"\n[endpoints.a]\nkind = "ollama"\nurl = "http://desk:1"\nhost = "desk"\n',
            2,
            "hosts.desk.budget:",
        ),
        (
            '[hosts.desk]\nbudget = "4GiB"\nheadroom = "4GiB"\n'
            '[endpoints.a]\nkind = "ollama"\nurl = "http://desk:1"\nhost = "desk"\n',
            3,
            "hosts.desk.headroom: is as large as the whole budget",
        ),
        (
            '[hosts.desk]\naddress = "127.0.0.1"\n[endpoints.a]\nkind = "ollama"\nurl = "http://127.0.0.1:1"\n',
            2,
            "hosts.desk.address: '127.0.0.1' is this machine",
        ),
    ],
    ids=["unknown-host", "unused-host", "same-address", "local-reserved", "bad-budget", "headroom", "own-address"],
)
def test_bad_host_config_is_exit_5_naming_key_and_line(
    cli: CliFn, write_config: Callable[[str], Path], text: str, line: int, needle: str
) -> None:
    path = write_config(text)

    result = cli("--config", str(path), "status")

    assert result.exit_code == 5
    assert f"{path}:{line}: {needle}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_endpoint_at_a_host_address_belongs_to_that_host(cli: CliFn, write_config: Callable[[str], Path]) -> None:
    path = str(
        write_config(
            '[hosts.desk]\nbudget = "22GiB"\naddress = "desk.invalid"\n'
            '[endpoints.far]\nkind = "ollama"\nurl = "http://desk.invalid:11434"\n'
        )
    )

    result = cli("--config", path, "status", "--endpoint", "far", "--json")

    assert result.exit_code == 4  # asked about the unreachable host alone
    assert result.json()["endpoints"][0]["host"] == "desk"
    assert result.json()["hosts"][0] == {
        "name": "desk",
        "budget_bytes": 22 * 1024**3,
        "budget_source": "hosts.desk.budget in the config",
        "used_bytes": 0,
        "free_bytes": 22 * 1024**3,
        "endpoints": [],
    }


# -- placement and concurrency -------------------------------------------------------------------

EITHER = '[models.either]\nname = "tiny-c"\nendpoints = ["a", "b"]\n'


@pytest.mark.realserver
def test_placement_keeps_a_model_on_the_router_that_already_holds_it(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_hosts(
        write_config, a, b, extra='[models.either]\nname = "tiny-c"\nendpoints = ["a", "b"]\n', other=False
    )
    assert cli("--config", path, "load", "tiny-c", "--endpoint", "b").exit_code == 0

    result = cli("--config", path, "load", "either", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["endpoint"] == "b"
    assert "either: placed on b (already resident on b)" in result.stderr
    assert (a.loaded(), b.loaded()) == (set(), {"tiny-c"})


@pytest.mark.realserver
def test_placement_prefers_the_host_where_the_model_fits_without_evicting(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_hosts(
        write_config, a, b, extra='[models.either]\nname = "tiny-c"\nendpoints = ["a", "b"]\n', other=False
    )
    assert cli("--config", path, "load", "fast").exit_code == 0  # host left is now full

    result = cli("--config", path, "load", "either", "--json")

    assert result.exit_code == 0, result.stderr
    assert (result.json()["endpoint"], result.json()["evictions"]) == ("b", [])
    assert (a.loaded(), b.loaded()) == ({"tiny-a"}, {"tiny-c"})
    # --endpoint still forces one: there, the budget of host left makes tiny-a leave.
    forced = cli("--config", path, "load", "either", "--endpoint", "a", "--json")
    assert forced.exit_code == 0, forced.stderr
    assert a.loaded() == {"tiny-c"}


@pytest.mark.realserver
def test_a_pipeline_places_a_model_once_for_the_whole_run_and_shows_where(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    extra = (
        '[models.either]\nname = "tiny-c"\nendpoints = ["a", "b"]\n'
        '[pipelines.placed]\nstages = [\n  { name = "one", model = "either", command = "true" },\n'
        '  { name = "two", model = "fast", command = "true" },\n'
        '  { name = "three", model = "either", command = "true" },\n]\n'
    )
    path = two_hosts(write_config, a, b, extra=extra, other=False)
    assert cli("--config", path, "load", "tiny-c", "--endpoint", "b").exit_code == 0

    dry = cli("--config", path, "run-pipeline", "placed", "--dry-run", "--json")

    assert dry.exit_code == 0, dry.stderr
    placed = [(row["stage"], row["endpoint"], row["host"], row["action"]) for row in dry.json()["stages"]]
    assert placed == [("one", "b", "right", "hit"), ("two", "a", "left", "load"), ("three", "b", "right", "hit")]


def test_a_model_with_endpoints_and_endpoint_or_a_pin_is_a_config_error(
    cli: CliFn, write_config: Callable[[str], Path]
) -> None:
    base = (
        '[endpoints.a]\nkind = "ollama"\nurl = "http://127.0.0.1:1"\n'
        '[endpoints.b]\nkind = "ollama"\nurl = "http://127.0.0.1:2"\n'
    )
    both = write_config(base + '[models.m]\nendpoint = "a"\nendpoints = ["a", "b"]\n')
    assert (
        f"{both}:9: models.m.endpoints: give either endpoint or endpoints"
        in cli("--config", str(both), "status").stderr
    )
    unknown = write_config(base + '[models.m]\nendpoints = ["a", "c"]\n')
    result = cli("--config", str(unknown), "status")
    assert result.exit_code == 5 and "models.m.endpoints[1]: no endpoint named 'c'; known: a, b" in result.stderr
    pinned = write_config(base + '[models.m]\nendpoints = ["a", "b"]\nalways_available = true\n')
    result = cli("--config", str(pinned), "status")
    assert result.exit_code == 5 and "a pinned (always_available) model stays on one server" in result.stderr


class MeetingRouter:
    """A fake llama.cpp router whose load waits at a barrier shared with another one: both loads pass only
    when they are in flight at the same time, so a tool that loads one host after the other fails them."""

    def __init__(self, barrier: threading.Barrier, model: str) -> None:
        self.router = FakeLlamaRouter(models={model: "unloaded"})
        self.barrier = barrier
        self.met = False

    def __call__(self, request: Request) -> tuple[int, Any]:
        path = request.path.split("?")[0]
        if (request.method, path) == ("POST", "/models/load"):
            try:
                self.barrier.wait()
                self.met = True
            except threading.BrokenBarrierError:
                return 500, error_body(500, "the other host's load never started")
        return self.router.handle(request.method, path, request.body)


def test_swaps_on_two_hosts_run_at_the_same_time(cli: CliFn, write_config: Callable[[str], Path]) -> None:
    barrier = threading.Barrier(2, timeout=20)  # a hang guard only: passing needs both loads at once
    left, right = MeetingRouter(barrier, "m-left"), MeetingRouter(barrier, "m-right")
    with serve(left) as left_url, serve(right) as right_url:
        path = write_config(
            '[hosts.left]\nbudget = "1GiB"\n[hosts.right]\nbudget = "1GiB"\n'
            f'[endpoints.l]\nkind = "llamacpp"\nurl = "{left_url}"\nhost = "left"\n'
            f'[endpoints.r]\nkind = "llamacpp"\nurl = "{right_url}"\nhost = "right"\n'
            '[models.one]\nname = "m-left"\nendpoint = "l"\n[models.two]\nname = "m-right"\nendpoint = "r"\n'
        )

        result = cli("--config", str(path), "load", "one", "two", "--no-warm", "--json")

    assert result.exit_code == 0, result.stderr
    assert [(load["endpoint"], load["host"]) for load in result.json()["loads"]] == [("l", "left"), ("r", "right")]
    assert left.met and right.met
    assert (left.router.models, right.router.models) == ({"m-left": "loaded"}, {"m-right": "loaded"})


def test_the_timing_table_of_swaps_on_two_hosts_shows_each_host(
    cli: CliFn, write_config: Callable[[str], Path]
) -> None:
    barrier = threading.Barrier(2, timeout=20)
    left, right = MeetingRouter(barrier, "m-left"), MeetingRouter(barrier, "m-right")
    with serve(left) as left_url, serve(right) as right_url:
        path = write_config(
            '[hosts.left]\nbudget = "1GiB"\n[hosts.right]\nbudget = "1GiB"\n'
            f'[endpoints.l]\nkind = "llamacpp"\nurl = "{left_url}"\nhost = "left"\n'
            f'[endpoints.r]\nkind = "llamacpp"\nurl = "{right_url}"\nhost = "right"\n'
            '[models.one]\nname = "m-left"\nendpoint = "l"\n[models.two]\nname = "m-right"\nendpoint = "r"\n'
        )

        result = cli("--config", str(path), "load", "one", "two", "--no-warm")

    assert result.exit_code == 0, result.stderr
    firsts = [line.split()[:3] for line in result.stdout.splitlines()]
    assert ["total", "on", "left"] in firsts and ["total", "on", "right"] in firsts
    assert "hosts in parallel" in result.stdout


def test_a_host_without_a_budget_uses_the_ceiling_its_only_server_reports(
    cli: CliFn, write_config: Callable[[str], Path]
) -> None:
    server = FakeOMLX(ceiling=12 * 1024**3)
    with serve(server.loopback) as url:
        path = write_config(
            f'[hosts.mini]\nheadroom = "1GiB"\n[endpoints.mini-omlx]\nkind = "omlx"\nurl = "{url}/v1"\nhost = "mini"\n'
        )
        result = cli("--config", str(path), "status", "--json")

    assert result.exit_code == 0, result.stderr
    (host,) = result.json()["hosts"]
    assert (host["name"], host["budget_bytes"]) == ("mini", 11 * 1024**3)
    assert host["budget_source"] == "reported by mini-omlx (the server's memory ceiling)"


def test_a_host_with_one_server_that_reports_no_total_stays_unknown(
    cli: CliFn, emulator_url: str, write_config: Callable[[str], Path]
) -> None:
    server = FakeOMLX(ceiling=12 * 1024**3)
    with serve(server.loopback) as url:
        path = write_config(
            f'[hosts.mini]\n[endpoints.mini-omlx]\nkind = "omlx"\nurl = "{url}/v1"\nhost = "mini"\n'
            f'[endpoints.mini-ollama]\nkind = "ollama"\nurl = "{emulator_url}"\nhost = "mini"\n'
        )
        result = cli("--config", str(path), "status", "--json")

    assert result.exit_code == 0, result.stderr
    (host,) = result.json()["hosts"]
    assert host["budget_bytes"] is None and host["budget_source"].startswith("unknown ([hosts.mini] has no budget")
