"""`unload --all` leaves pins loaded and says so; `--include-pins` takes them too and says how they
come back."""

from __future__ import annotations

import pytest

from tests.conftest import CliFn, WriteConfig
from tests.emulator import EmulatedModel

MODELS = [EmulatedModel("qwen3:4b", file_mib=8), EmulatedModel("llama3.2:3b", file_mib=6)]
PINNED = '[models.chat]\nname = "qwen3:4b"\nalways_available = true\n'


@pytest.fixture
def pinned(cli: CliFn, ollama_emulator, monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig):  # type: ignore[no-untyped-def]
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=128)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    path = str(write_config(PINNED))
    assert cli("--config", path, "load", "chat").exit_code == 0
    assert cli("--config", path, "load", "llama3.2:3b").exit_code == 0
    assert sorted(emulator.loaded_names()) == ["llama3.2:3b", "qwen3:4b"]
    return emulator, path


def test_unload_all_keeps_the_pins_and_says_which(cli: CliFn, pinned) -> None:  # type: ignore[no-untyped-def]
    emulator, path = pinned

    result = cli("--config", path, "unload", "--all", "--json")

    assert result.exit_code == 0, result.stderr
    assert emulator.loaded_names() == ["qwen3:4b"]
    document = result.json()
    assert document["endpoints"][0]["unloaded"] == ["llama3.2:3b"]
    assert document["kept_pins"] == [{"model": "qwen3:4b", "endpoint": "ollama"}]
    assert "kept pinned qwen3:4b on ollama (unload it by name, or --all --include-pins)" in result.stderr


def test_unload_all_with_include_pins_takes_them_too(cli: CliFn, pinned) -> None:  # type: ignore[no-untyped-def]
    emulator, path = pinned

    result = cli("--config", path, "unload", "--all", "--include-pins")

    assert result.exit_code == 0, result.stderr
    assert emulator.loaded_names() == []
    assert "qwen3:4b is pinned in the config; the next load or `sourceprep-models pin --repair` brings it back" in (
        result.stderr
    )


def test_include_pins_without_all_is_a_usage_error(cli: CliFn, pinned) -> None:  # type: ignore[no-untyped-def]
    emulator, path = pinned

    result = cli("--config", path, "unload", "llama3.2:3b", "--include-pins")

    assert result.exit_code == 2
    assert sorted(emulator.loaded_names()) == ["llama3.2:3b", "qwen3:4b"]
