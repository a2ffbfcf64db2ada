"""`unload`: release models and wait until the server has, against the Ollama emulator."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.conftest import CliFn
from tests.emulator import EmulatedModel
from tests.helpers import wait_for

MODELS = [
    EmulatedModel("qwen3:4b", file_mib=8),
    EmulatedModel("llama3.2:3b", file_mib=6),
    EmulatedModel("nomic-embed-text", file_mib=2, capabilities=["embedding"]),
]


@pytest.fixture
def emu(ollama_emulator, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=128, unload_delay_s=0.3)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    for name in ("qwen3:4b", "llama3.2:3b"):
        httpx.post(f"{emulator.url}/api/generate", json={"model": name, "stream": False}, timeout=30)
    httpx.post(f"{emulator.url}/api/embed", json={"model": "nomic-embed-text"}, timeout=30)
    assert len(emulator.loaded_names()) == 3
    return emulator


def test_unload_one_waits_until_it_is_gone(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("unload", "qwen3:4b")
    assert result.exit_code == 0, result.stderr
    # The server answers at once and unloads 0.3 s later; the command returns only after that.
    assert sorted(emu.loaded_names()) == ["llama3.2:3b", "nomic-embed-text:latest"]
    assert "unloaded qwen3:4b from ollama" in result.stderr
    steps = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert steps == ["unload", "wait-for-free", "total"]


def test_unload_embedding_model(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("unload", "nomic-embed-text", "--json")
    assert result.exit_code == 0, result.stderr
    assert "nomic-embed-text:latest" not in emu.loaded_names()
    assert result.json()["endpoints"][0]["unloaded"] == ["nomic-embed-text"]


def test_unload_all(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("unload", "--all", "--json")
    assert result.exit_code == 0, result.stderr
    assert emu.loaded_names() == []
    assert sorted(result.json()["endpoints"][0]["unloaded"]) == ["llama3.2:3b", "nomic-embed-text:latest", "qwen3:4b"]


def test_unload_not_loaded_is_ok_and_says_so(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    assert cli("unload", "qwen3:4b").exit_code == 0
    result = cli("unload", "qwen3:4b", "--json")
    assert result.exit_code == 0
    assert result.json()["endpoints"][0]["not_loaded"] == ["qwen3:4b"]
    assert "qwen3:4b was not loaded on ollama" in result.stderr


def test_unload_unknown_model_is_exit_3(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("unload", "mistral:7b")
    assert result.exit_code == 3
    assert "model 'mistral:7b' not found on endpoint 'ollama'" in result.stderr
    assert len(emu.loaded_names()) == 3


def test_unload_needs_names_or_all(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    assert cli("unload").exit_code == 2
    assert cli("unload", "qwen3:4b", "--all").exit_code == 2


def test_unload_busy_model_waits_for_its_requests(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    unload_sent = threading.Event()
    release = threading.Event()

    def busy_client() -> None:
        with emu.hold("qwen3:4b"):
            release.wait(30)

    thread = threading.Thread(target=busy_client)
    thread.start()
    wait_for(lambda: any(r.active_requests for r in emu.loaded()), what="the model to be busy")

    def release_when_unload_arrives() -> None:
        wait_for(lambda: any(r.body and r.body.get("keep_alive") == 0 for r in emu.requests), what="the unload request")
        unload_sent.set()
        release.set()

    releaser = threading.Thread(target=release_when_unload_arrives)
    releaser.start()
    result = cli("unload", "qwen3:4b")
    releaser.join()
    thread.join()
    assert unload_sent.is_set()
    assert result.exit_code == 0, result.stderr
    assert "qwen3:4b" not in emu.loaded_names()


def test_unload_busy_model_past_the_deadline_says_why(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    with emu.hold("qwen3:4b"):
        result = cli("unload", "qwen3:4b", "--timeout", "0.5")
        assert result.exit_code == 1
        assert "qwen3:4b still loaded on ollama after 0.50s" in result.stderr
        assert "busy" in result.stderr
    # Once its request ends, the server finishes the unload it was asked for (ollama.md §4.6).
    wait_for(lambda: "qwen3:4b" not in emu.loaded_names(), what="the deferred unload")


def test_unload_server_down_is_exit_4(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    emu.stop()
    assert cli("unload", "--all").exit_code == 4
