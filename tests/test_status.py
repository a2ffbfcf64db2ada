"""`status`: what a user sees about loaded models, against the Ollama emulator."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import CliFn
from tests.emulator import EmulatedModel

MODELS = [
    EmulatedModel("qwen3:4b", file_mib=8),
    EmulatedModel("llama3.2:3b", file_mib=6),
    EmulatedModel("nomic-embed-text", file_mib=2, capabilities=["embedding"]),
]


def preload(url: str, model: str, **body: object) -> None:
    """Load through the server's own API, as another client would."""
    httpx.post(f"{url}/api/generate", json={"model": model, "stream": False, **body}, timeout=30).raise_for_status()


@pytest.fixture
def emu(ollama_emulator, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=64)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def test_status_empty(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    result = cli("status", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert [(ep["name"], ep["kind"], ep["url"], ep["ok"], ep["models"]) for ep in data["endpoints"]] == [
        ("ollama", "ollama", emu.url, True, [])
    ]
    table = cli("status")
    assert table.exit_code == 0
    assert "(nothing loaded)" in table.stdout


def test_status_lists_several_models_with_size_share_and_expiry(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    preload(emu.url, "qwen3:4b", keep_alive=-1)
    preload(emu.url, "llama3.2:3b", keep_alive="10m", options={"num_ctx": 2048})
    result = cli("status", "--json")
    assert result.exit_code == 0, result.stderr
    models = {m["name"]: m for m in result.json()["endpoints"][0]["models"]}
    runners = {r.name: r for r in emu.loaded()}
    assert set(models) == set(runners) == {"qwen3:4b", "llama3.2:3b"}
    for name, model in models.items():
        assert model["size"] == runners[name].size
        assert model["size_vram"] == runners[name].size_vram
        assert model["processor"] == "100% GPU"
        assert model["vram_percent"] == 100
    assert models["qwen3:4b"]["pinned"] is True and models["qwen3:4b"]["until"] == "forever"
    assert models["llama3.2:3b"]["pinned"] is False and models["llama3.2:3b"]["until"].startswith("in ")
    assert models["llama3.2:3b"]["context_length"] == 2048
    assert {model["state"] for model in models.values()} == {"loaded"}

    table = cli("status")
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ENDPOINT", "MODEL", "STATE", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    row = next(line for line in lines if "qwen3:4b" in line)
    assert row.split()[0] == "ollama" and "loaded (pinned)" in row and "100% GPU" in row and "forever" in row


def test_status_shows_partial_cpu_offload(cli: CliFn, ollama_emulator, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A 16 MiB model on an 8 MiB GPU: the server still loads it, partly on the CPU (ollama.md §4.3 step 4).
    emulator = ollama_emulator(models=[EmulatedModel("big:14b", file_mib=16)], gpu_vram_mib=8)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    preload(emulator.url, "big:14b")
    model = cli("status", "--json").json()["endpoints"][0]["models"][0]
    assert 0 < model["size_vram"] < model["size"]
    assert model["processor"].endswith("CPU/GPU")
    assert 0 < model["vram_percent"] < 100
    assert "CPU/GPU" in cli("status").stdout


def test_status_includes_the_hardware_view(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    data = cli("status", "--json").json()
    hardware = data["hardware"]
    assert hardware["ram_total"] > 0
    assert "budget_source" in hardware
    assert "RAM" in cli("status").stdout


def test_status_server_down_is_exit_4_with_one_line(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    emu.stop()
    result = cli("status", "--json")
    assert result.exit_code == 4
    data = result.json()
    assert data["endpoints"][0]["ok"] is False
    assert result.stderr.count("\n") == 1
    assert f"cannot reach Ollama at {emu.url}" in result.stderr and "ollama serve" in result.stderr
    table = cli("status", "--no-hardware")
    assert table.exit_code == 4 and "(unreachable)" in table.stdout


def test_status_server_error_is_exit_1(cli: CliFn, emu) -> None:  # type: ignore[no-untyped-def]
    emu.faults.error_500 = "something broke"
    result = cli("status", "--no-hardware")
    assert result.exit_code == 1
    assert "answered 500: something broke" in result.stderr
