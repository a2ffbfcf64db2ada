"""Planned swaps end to end against the Ollama emulator: no-op, refusal before eviction, single-model
mode, pins evicted for heavy work and restored, pins repaired after a server restart, dry runs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import CliFn, WriteConfig
from tests.emulator import EmulatedModel

MIB = 1024**2
MODELS = [
    EmulatedModel("small:1b", file_mib=4),
    EmulatedModel("mid:3b", file_mib=6),
    EmulatedModel("pinned:4b", file_mib=5),
    EmulatedModel("heavy:30b", file_mib=12),
]


@pytest.fixture
def emu(ollama_emulator, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    # CPU-only: the server itself never evicts for memory (ollama.md §4.3 step 6), so every eviction
    # seen here is this tool's plan; max 4 models keeps the server's own count limit out of the way.
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=None, max_loaded_models=4, unload_delay_s=0.05)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def predicted(cli: CliFn, config: Path, name: str) -> int:
    result = cli("--config", str(config), "load", name, "--dry-run", "--json")
    assert result.exit_code in (0, 6), result.stderr
    return int(result.json()["predicted_size"])


def configure(write_config: WriteConfig, budget: int, **memory: object) -> Path:
    lines = ["[models.pin]", 'name = "pinned:4b"', "always_available = true", "", "[memory]"]
    lines += [f'budget = "{budget}"', 'headroom = "0"']
    lines += [f"{key} = {str(value).lower()}" for key, value in memory.items()]
    return write_config("\n".join(lines) + "\n")


def server_load(emu, name: str) -> None:  # type: ignore[no-untyped-def]
    httpx.post(f"{emu.url}/api/generate", json={"model": name, "stream": False}, timeout=30).raise_for_status()


def test_same_model_is_a_noop(cli: CliFn, emu, write_config) -> None:  # type: ignore[no-untyped-def]
    config = configure(write_config, 10**9)
    assert cli("--config", str(config), "load", "small:1b").exit_code == 0
    loads = dict(emu.load_count)
    plan = cli("--config", str(config), "load", "small:1b", "--dry-run", "--json").json()
    assert plan["noop"] is True and plan["evict"] == []
    result = cli("--config", str(config), "load", "small:1b", "--json")
    assert result.exit_code == 0 and result.json()["outcome"] == "already-loaded"
    assert emu.load_count == loads


def test_too_large_is_refused_before_anything_is_evicted(cli: CliFn, emu, write_config) -> None:  # type: ignore[no-untyped-def]
    big = predicted(cli, configure(write_config, 10**9), "heavy:30b")
    config = configure(write_config, big - 1)
    server_load(emu, "small:1b")
    dry = cli("--config", str(config), "load", "heavy:30b", "--dry-run")
    assert dry.exit_code == 6
    assert "refused" in dry.stdout and "even with nothing else loaded" in dry.stderr
    result = cli("--config", str(config), "load", "heavy:30b")
    assert result.exit_code == 6
    assert "nothing was unloaded" in result.stderr
    assert emu.loaded_names() == ["small:1b"]


def test_load_evicts_only_what_it_must(cli: CliFn, emu, write_config) -> None:  # type: ignore[no-untyped-def]
    probe = configure(write_config, 10**9)
    need = predicted(cli, probe, "heavy:30b")
    server_load(emu, "small:1b")
    server_load(emu, "mid:3b")
    sizes = {runner.name: runner.size for runner in emu.loaded()}
    # Room for heavy plus "mid" but not plus both: evicting the cheaper single model suffices.
    config = configure(write_config, need + sizes["mid:3b"] + sizes["small:1b"] // 2)
    plan = cli("--config", str(config), "load", "heavy:30b", "--dry-run", "--json").json()
    assert plan["evict"] == ["small:1b"]
    result = cli("--config", str(config), "load", "heavy:30b", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["evicted"] == ["small:1b"]
    assert sorted(emu.loaded_names()) == ["heavy:30b", "mid:3b"]
    steps = [step["step"] for step in result.json()["steps"]]
    assert steps.index("unload") < steps.index("wait-for-free") < steps.index("load")


def test_single_model_mode_evicts_every_unpinned_and_keeps_pins(cli: CliFn, emu, write_config) -> None:  # type: ignore[no-untyped-def]
    config = configure(write_config, 10**9)
    assert cli("--config", str(config), "load", "pin").exit_code == 0  # the pin itself
    server_load(emu, "small:1b")
    server_load(emu, "mid:3b")
    result = cli("--config", str(config), "load", "heavy:30b", "--single-model", "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(result.json()["evicted"]) == ["mid:3b", "small:1b"]
    assert sorted(emu.loaded_names()) == ["heavy:30b", "pinned:4b"]


def test_single_model_from_config(cli: CliFn, emu, write_config) -> None:  # type: ignore[no-untyped-def]
    config = configure(write_config, 10**9, single_model=True)
    server_load(emu, "small:1b")
    assert cli("--config", str(config), "load", "mid:3b").exit_code == 0
    assert emu.loaded_names() == ["mid:3b"]


def test_pin_evicted_for_heavy_work_comes_back_afterwards(cli: CliFn, emu, write_config) -> None:  # type: ignore[no-untyped-def]
    probe = configure(write_config, 10**9)
    need = predicted(cli, probe, "heavy:30b")
    assert cli("--config", str(probe), "load", "pin").exit_code == 0
    strict = configure(write_config, need + MIB)  # heavy fits only alone
    refused = cli("--config", str(strict), "load", "heavy:30b")
    assert refused.exit_code == 6
    assert "pinned:4b" in refused.stderr and "allow_evict_pinned" in refused.stderr
    assert emu.loaded_names() == ["pinned:4b"]

    allowed = configure(write_config, need + MIB, allow_evict_pinned=True)
    result = cli("--config", str(allowed), "load", "heavy:30b", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["pending_restore"] == ["pinned:4b"]
    assert "evicting pinned pinned:4b" in result.stderr
    assert emu.loaded_names() == ["heavy:30b"]

    done = cli("--config", str(allowed), "unload", "heavy:30b", "--json")
    assert done.exit_code == 0, done.stderr
    assert done.json()["restored_pins"] == ["pinned:4b"]
    assert emu.loaded_names() == ["pinned:4b"]
    assert emu.loaded()[0].keep_alive_s is None  # back as a pin: forever


def test_pin_lost_after_a_server_restart_is_shown_by_status_and_put_back_by_pin_repair(
    cli: CliFn, ollama_emulator, monkeypatch, tmp_path, write_config
) -> None:  # type: ignore[no-untyped-def]
    first = ollama_emulator(models=MODELS, gpu_vram_mib=None, root=tmp_path / "store")
    monkeypatch.setenv("OLLAMA_HOST", first.url)
    config = configure(write_config, 10**9)
    assert cli("--config", str(config), "pin", "pin").exit_code == 0
    assert first.loaded_names() == ["pinned:4b"]
    # A restart: a fresh server on the same store has nothing loaded.
    first.stop()
    second = ollama_emulator(models=MODELS, gpu_vram_mib=None, root=tmp_path / "store")
    monkeypatch.setenv("OLLAMA_HOST", second.url)
    assert second.loaded_names() == []
    # status only looks: the lost pin is shown as lost, with the command that repairs it.
    looked = cli("--config", str(config), "status", "--json")
    assert looked.exit_code == 0, looked.stderr
    assert "pinned pinned:4b is not loaded on ollama; `sourceprep-models pin --repair` puts it back" in looked.stderr
    assert looked.json()["endpoints"][0]["lost_pins"] == [{"model": "pinned:4b", "reason": "missing"}]
    assert second.loaded_names() == []

    repaired = cli("--config", str(config), "pin", "--repair", "--json")

    assert repaired.exit_code == 0, repaired.stderr
    assert repaired.json()["repaired"] == [{"model": "pinned:4b", "endpoint": "ollama"}]
    assert "put back pinned pinned:4b on ollama" in repaired.stderr
    after = cli("--config", str(config), "status", "--json").json()["endpoints"][0]
    assert ([m["name"] for m in after["models"]], after["lost_pins"]) == (["pinned:4b"], [])
    assert second.loaded()[0].keep_alive_s is None


def test_pin_whose_keep_alive_another_client_replaced_is_reasserted(cli: CliFn, emu, write_config) -> None:  # type: ignore[no-untyped-def]
    config = configure(write_config, 10**9)
    assert cli("--config", str(config), "load", "pin").exit_code == 0
    # Another client sends a finite keep_alive: the server drops the pin (ollama.md §3.2).
    server_load(emu, "pinned:4b")
    httpx.post(f"{emu.url}/api/generate", json={"model": "pinned:4b", "keep_alive": "5m", "stream": False})
    assert emu.loaded()[0].keep_alive_s == 300
    loads = dict(emu.load_count)
    result = cli("--config", str(config), "load", "small:1b")
    assert result.exit_code == 0, result.stderr
    runners = {runner.name: runner for runner in emu.loaded()}
    assert runners["pinned:4b"].keep_alive_s is None
    assert emu.load_count["pinned:4b"] == loads["pinned:4b"]  # re-asserted without a reload


def test_pin_command_records_the_pin_keeping_comments(cli: CliFn, emu, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    example = (Path(__file__).resolve().parent.parent / "models.example.toml").read_text()
    text = example.replace(
        '[endpoints.ollama]\nkind = "ollama"\n', f'[endpoints.ollama]\nkind = "ollama"\nurl = "{emu.url}"\n'
    )
    config = tmp_path / "models.toml"
    config.write_text(text)
    result = cli("--config", str(config), "pin", "mid:3b", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["pinned"] is True
    assert emu.loaded_names() == ["mid:3b"] and emu.loaded()[0].keep_alive_s is None
    edited = config.read_text()
    assert edited.startswith(text)  # every byte of the original file is kept
    assert edited[len(text) :] == '\n[models."mid:3b"]\nalways_available = true\n'

    unpinned = cli("--config", str(config), "pin", "--remove", "mid:3b")
    assert unpinned.exit_code == 0, unpinned.stderr
    assert config.read_text() == text + '\n[models."mid:3b"]\n'
    assert emu.loaded()[0].keep_alive_s == 300  # no longer forever; no reload needed

    listing = cli("--config", str(config), "pin", "--json")
    assert {pin["key"] for pin in listing.json()["pins"]} == {"catalog"}


def test_pin_unknown_model_leaves_the_config_untouched(cli: CliFn, emu, write_config) -> None:  # type: ignore[no-untyped-def]
    config = configure(write_config, 10**9)
    before = config.read_text()
    result = cli("--config", str(config), "pin", "nope:1b")
    assert result.exit_code == 3
    assert config.read_text() == before


def test_pin_that_can_never_fit_is_refused_with_config_untouched(cli: CliFn, emu, write_config) -> None:  # type: ignore[no-untyped-def]
    config = configure(write_config, 1024)
    before = config.read_text()
    result = cli("--config", str(config), "pin", "heavy:30b")
    assert result.exit_code == 6
    assert "the config is unchanged" in result.stderr
    assert config.read_text() == before
