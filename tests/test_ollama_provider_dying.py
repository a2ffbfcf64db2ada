"""A preload that meets a runner on its way out, against the emulator.

Ollama hands a request to a runner whose expiry is still pending (it stays in the loaded set until
processCompleted acts on the expiry, sched.go), and that runner unloads afterwards whatever
keep_alive the request carried. So an unload by someone else followed by our preload can end with
the model NOT loaded. `load` lets the pending unload finish first, then confirms the model stayed.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import CliFn
from tests.emulator import EmulatedModel


def post(emu, body: dict[str, object]) -> httpx.Response:  # type: ignore[no-untyped-def]
    reply = httpx.post(f"{emu.url}/api/generate", json={"prompt": "", "stream": False, **body}, timeout=30)
    reply.raise_for_status()
    return reply


def test_a_load_during_a_pending_unload_ends_with_the_model_loaded(  # type: ignore[no-untyped-def]
    cli: CliFn, ollama_emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The expiry waits 2 s before the scheduler acts on it (processCompleted busy elsewhere).
    emu = ollama_emulator(
        models=[EmulatedModel("qwen3:4b", file_mib=4)], gpu_vram_mib=64, unload_delay_s=0.05, expiry_delay_s=2.0
    )
    monkeypatch.setenv("OLLAMA_HOST", emu.url)
    post(emu, {"model": "qwen3:4b", "keep_alive": "5m"})
    post(emu, {"model": "qwen3:4b", "keep_alive": 0})  # another client unloads it
    assert emu.loaded()[0].stopping  # listed, its unload pending

    result = cli("load", "qwen3:4b", "--keep-alive", "30m", "--no-warm")

    assert result.exit_code == 0, result.stderr
    runners = emu.loaded()
    assert [runner.name for runner in runners] == ["qwen3:4b"]
    # A fresh runner that stays, not the dying one that took the preload and leaves anyway.
    assert not runners[0].stopping and runners[0].keep_alive_s == 1800
    assert emu.load_count["qwen3:4b"] == 2


def test_a_server_that_unloads_every_load_at_once_is_a_clear_error_after_three_tries(  # type: ignore[no-untyped-def]
    cli: CliFn, ollama_emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OLLAMA_KEEP_ALIVE=0 on the server: a request without keep_alive unloads the model once idle.
    emu = ollama_emulator(
        models=[EmulatedModel("qwen3:4b", file_mib=4)], gpu_vram_mib=64, unload_delay_s=0.01, default_keep_alive=0
    )
    monkeypatch.setenv("OLLAMA_HOST", emu.url)

    result = cli("load", "qwen3:4b", "--no-warm")

    assert result.exit_code == 1, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert "answered that qwen3:4b loaded, but unloaded it again 3 times" in result.stderr
    assert "OLLAMA_KEEP_ALIVE" in result.stderr and "give the model a keep_alive" in result.stderr
    assert emu.load_count["qwen3:4b"] == 3  # bounded
    assert emu.loaded_names() == []
