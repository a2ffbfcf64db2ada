"""`load A B`: several models in one command (a CI job warming what its tests need), planned together:
all of them resident at the end, or nothing touched."""

from __future__ import annotations

import pytest

from tests.conftest import CliFn, WriteConfig
from tests.emulator import EmulatedModel


@pytest.fixture
def emu(ollama_emulator, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    # CPU-only: the server never evicts for memory itself, so only the plan decides.
    emulator = ollama_emulator(
        models=[EmulatedModel("embed:1b", file_mib=4), EmulatedModel("rerank:1b", file_mib=5)],
        gpu_vram_mib=None,
        max_loaded_models=4,
    )
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def sizes(cli: CliFn, write_config: WriteConfig) -> tuple[int, int]:
    roomy = str(write_config(""))
    embed = cli("--config", roomy, "load", "embed:1b", "--dry-run", "--json").json()["predicted_size"]
    rerank = cli("--config", roomy, "load", "rerank:1b", "--dry-run", "--json").json()["predicted_size"]
    return int(embed), int(rerank)


def test_load_two_models_leaves_both_resident(cli: CliFn, emu, write_config: WriteConfig) -> None:  # type: ignore[no-untyped-def]
    embed, rerank = sizes(cli, write_config)
    path = str(write_config(f'[memory]\nbudget = "{embed + rerank + 1024}"\nheadroom = "0"\n'))

    result = cli("--config", path, "load", "embed:1b", "rerank:1b", "--json")

    assert result.exit_code == 0, result.stderr
    assert [(load["model"], load["outcome"], load["evicted"]) for load in result.json()["loads"]] == [
        ("embed:1b", "loaded", []),
        ("rerank:1b", "loaded", []),
    ]
    assert sorted(emu.loaded_names()) == ["embed:1b", "rerank:1b"]


def test_two_models_that_cannot_be_resident_together_touch_nothing(
    cli: CliFn,
    emu,  # type: ignore[no-untyped-def]
    write_config: WriteConfig,
) -> None:
    embed, rerank = sizes(cli, write_config)
    path = str(write_config(f'[memory]\nbudget = "{max(embed, rerank) + 1024}"\nheadroom = "0"\n'))

    dry = cli("--config", path, "load", "embed:1b", "rerank:1b", "--dry-run", "--json")
    result = cli("--config", path, "load", "embed:1b", "rerank:1b")

    assert dry.exit_code == 6 and result.exit_code == 6
    assert [plan.get("refused", False) for plan in dry.json()["dry_run"]] == [False, True]
    assert "planned together with embed:1b" in result.stderr
    assert emu.loaded_names() == []
