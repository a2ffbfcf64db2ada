"""doctor tells each other machine's budget as status plans with it: a host without a [hosts] budget whose
servers all report a memory ceiling (oMLX) is planned against that ceiling, and doctor says so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import CliFn
from tests.fakes.omlx import FakeOMLX
from tests.loopback import serve


def _host_check(result: Any) -> dict[str, Any]:
    checks: dict[str, Any] = {check["id"]: check for check in result.json()["checks"]}
    return dict(checks["host.mini.budget"])


def test_doctor_gives_a_host_the_ceiling_its_only_server_reports(
    cli: CliFn, write_config: Callable[[str], Path]
) -> None:
    server = FakeOMLX(ceiling=12 * 1024**3)
    with serve(server.loopback) as url:
        path = write_config(
            f'[hosts.mini]\nheadroom = "1GiB"\n[endpoints.mini-omlx]\nkind = "omlx"\nurl = "{url}/v1"\nhost = "mini"\n'
        )
        doctor = cli("--config", str(path), "doctor", "--json")
        status = cli("--config", str(path), "status", "--json")

    check = _host_check(doctor)
    assert check["status"] == "ok"
    assert check["summary"] == (
        "host mini (mini-omlx): 11.8 GB for models (reported by mini-omlx (the server's memory ceiling), "
        "1.1 GB headroom)"
    )
    assert check["details"]["budget_bytes"] == 12 * 1024**3
    (host,) = status.json()["hosts"]
    assert host["budget_source"] == check["details"]["source"]  # doctor and status agree on where it came from


def test_doctor_still_warns_when_the_host_server_reports_no_ceiling(
    cli: CliFn, write_config: Callable[[str], Path]
) -> None:
    server = FakeOMLX(ceiling=0)  # oMLX reports 0 for "no limit"
    with serve(server.loopback) as url:
        path = write_config(f'[hosts.mini]\n[endpoints.mini-omlx]\nkind = "omlx"\nurl = "{url}/v1"\nhost = "mini"\n')
        doctor = cli("--config", str(path), "doctor", "--json")

    check = _host_check(doctor)
    assert check["status"] == "warning"
    assert check["summary"].startswith("host mini (mini-omlx): budget unknown")
