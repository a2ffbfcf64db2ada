"""`status` shows the budget the planner uses — the config's, minus the headroom — the same figure as
`load --dry-run`, not the hardware probe's."""

from __future__ import annotations

import pytest

from tests.conftest import CliFn, WriteConfig
from tests.emulator import EmulatedModel

GIB = 1024**3


@pytest.fixture
def emu(ollama_emulator, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    emulator = ollama_emulator(models=[EmulatedModel("qwen3:4b", file_mib=8)], gpu_vram_mib=128)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def test_status_and_a_dry_run_show_one_budget(cli: CliFn, emu, write_config: WriteConfig) -> None:  # type: ignore[no-untyped-def]
    path = str(write_config('[memory]\nbudget = "6GiB"\nheadroom = "1GiB"\n'))

    status = cli("--config", path, "status", "--json").json()
    plan = cli("--config", path, "load", "qwen3:4b", "--dry-run", "--json").json()
    table = cli("--config", path, "status").stdout

    (host,) = status["hosts"]
    assert (host["budget_bytes"], host["budget_source"]) == (5 * GIB, "memory.budget in the config")
    assert plan["budget"]["bytes"] == 5 * GIB
    assert "MACHINE local: 0 B used of 5.4 GB budget, 5.4 GB free (memory.budget in the config" in table
    assert "BUDGET" not in table  # no second, different budget figure from the probe
