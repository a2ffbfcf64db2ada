"""What a swap reports it evicted: the tool's own evictions once, under the names the plan showed; the
server's own evictions only when the server really made them; a pin that leaves is said out loud."""

from __future__ import annotations

import pytest

from tests.conftest import CliFn, WriteConfig
from tests.emulator import EmulatedModel


@pytest.fixture
def emu(ollama_emulator, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    # Untagged names in the config: the server lists them as small:latest and big:latest (ollama.md §2.4).
    # CPU-only, so the server never evicts for memory itself: every eviction here is the tool's plan.
    emulator = ollama_emulator(
        models=[EmulatedModel("small:latest", file_mib=4), EmulatedModel("big:latest", file_mib=6)],
        gpu_vram_mib=None,
        max_loaded_models=4,
    )
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


PIPELINE = """
[pipelines.swap]
stages = [
  { name = "first", model = "small", command = "true" },
  { name = "second", model = "big", command = "true" },
]
"""


def tight_config(cli: CliFn, write_config: WriteConfig, small_extra: str = "", memory_extra: str = "") -> str:
    """A budget that holds either model as measured, never both."""
    models = f'[models.small]\nname = "small"\n{small_extra}[models.big]\nname = "big"\n'
    roomy = str(write_config(models))
    small = cli("--config", roomy, "load", "small", "--json").json()["resident"]["size"]
    big = cli("--config", roomy, "load", "big", "--json").json()["resident"]["size"]
    cli("--config", roomy, "unload", "--all")
    budget = f'[memory]\nbudget = "{max(small, big) + 1024}"\nheadroom = "0"\n{memory_extra}'
    return str(write_config(models + budget + PIPELINE))


def test_a_pipeline_reports_each_of_its_evictions_once_under_the_planned_name(
    cli: CliFn,
    emu,  # type: ignore[no-untyped-def]
    write_config: WriteConfig,
) -> None:
    path = tight_config(cli, write_config)
    planned = cli("--config", path, "run-pipeline", "swap", "--dry-run", "--json").json()

    result = cli("--config", path, "run-pipeline", "swap", "--json")

    assert result.exit_code == 0, result.stderr
    assert [row["evict"] for row in planned["stages"]] == [[], ["small"]]
    assert [row["evicted"] for row in result.json()["stages"]] == [[], ["small"]]
    assert "the server evicted" not in result.stderr
    assert emu.loaded_names() == ["big:latest"]


def test_a_pipeline_says_when_it_evicts_a_pin(cli: CliFn, emu, write_config: WriteConfig) -> None:  # type: ignore[no-untyped-def]
    path = tight_config(cli, write_config, "always_available = true\n", "allow_evict_pinned = true\n")

    result = cli("--config", path, "run-pipeline", "swap")

    assert result.exit_code == 0, result.stderr
    assert "stage second: evicted pinned small from ollama to fit big" in result.stderr
    assert emu.loaded_names() == ["small:latest"]  # back once the run is done


BACK_AND_FORTH = """
[pipelines.alternate]
stages = [
  { name = "one", model = "small", command = "true" },
  { name = "two", model = "big", command = "true" },
  { name = "three", model = "small", command = "true" },
]
"""


@pytest.mark.parametrize("how", ["config", "flag"])
def test_single_model_mode_keeps_one_unpinned_model_through_a_pipeline(
    cli: CliFn,
    emu,  # type: ignore[no-untyped-def]
    write_config: WriteConfig,
    how: str,
) -> None:
    memory = "[memory]\nsingle_model = true\n" if how == "config" else ""
    path = str(write_config(f'[models.small]\nname = "small"\n[models.big]\nname = "big"\n{memory}{BACK_AND_FORTH}'))
    flag = ["--single-model"] if how == "flag" else []

    planned = cli("--config", path, "run-pipeline", "alternate", "--dry-run", "--json", *flag).json()
    result = cli("--config", path, "run-pipeline", "alternate", "--json", *flag)

    assert result.exit_code == 0, result.stderr
    assert [row["evict"] for row in planned["stages"]] == [[], ["small"], ["big"]]
    assert [row["evicted"] for row in result.json()["stages"]] == [[], ["small"], ["big"]]
    assert emu.loaded_names() == ["small:latest"]
