"""keep_alive values at the edges of what Ollama can hold, against the emulator.

Ollama keeps keep_alive as a Go time.Duration, whole nanoseconds in an int64 (api/types.go
Duration.UnmarshalJSON): below 1 ns is 0 (unload as soon as idle), and beyond about 292 years a
number overflows. `load --keep-alive` refuses both with a usage error (exit 2) before anything
is sent; a config's keep_alive beyond the range is a bad config (exit 5) naming the key.
"""

from __future__ import annotations

import pytest

from sourceprep_models.units import KeepAlive
from tests.conftest import CliFn, WriteConfig
from tests.emulator import EmulatedModel


@pytest.fixture
def emu(ollama_emulator, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    emulator = ollama_emulator(models=[EmulatedModel("qwen3:4b", file_mib=4)], gpu_vram_mib=64)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def generates(emu) -> list[object]:  # type: ignore[no-untyped-def]
    return [r.body for r in emu.requests if r.path == "/api/generate"]


@pytest.mark.parametrize("value", ["0.5ns", "0.0000000001"])
def test_a_keep_alive_below_one_nanosecond_is_refused_as_an_unload(cli: CliFn, emu, value: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("load", "qwen3:4b", "--keep-alive", value)

    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert f"{value} is below 1 ns, which Ollama counts as 0" in result.stderr
    assert "use `unload` instead" in result.stderr
    assert generates(emu) == [] and emu.loaded_names() == []


# Chosen: a usage error, not "forever" with a warning. A finite value that large is a slip (a unit,
# a digit), and "forever" would pin the model where the user asked for it to leave; the fix is one
# word. 10 years is the cap, far inside Go's int64 nanoseconds (292 years).
@pytest.mark.parametrize("value", ["96360h", "9300000000", "3000000h"])
def test_a_keep_alive_beyond_the_range_is_a_usage_error_and_nothing_is_sent(cli: CliFn, emu, value: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("load", "qwen3:4b", "--keep-alive", value)

    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert f"--keep-alive: {value} is longer than 10 years" in result.stderr
    assert "use --keep-alive forever" in result.stderr
    assert generates(emu) == [] and emu.loaded_names() == []


def test_a_configured_keep_alive_beyond_the_range_is_a_bad_config(  # type: ignore[no-untyped-def]
    cli: CliFn, emu, write_config: WriteConfig
) -> None:
    path = write_config(
        f'[endpoints.ollama]\nkind = "ollama"\nurl = "{emu.url}"\n\n[models.chat]\nname = "qwen3:4b"\n'
        'keep_alive = "3000000h"\n'
    )
    result = cli("--config", str(path), "load", "chat")

    assert result.exit_code == 5, result.stderr
    error = result.stderr.rstrip("\n")
    assert len(error.splitlines()) == 1
    assert "models.chat.keep_alive: 3000000h is longer than 10 years" in error  # key, value, range
    assert generates(emu) == [] and emu.loaded_names() == []


def test_a_keep_alive_past_gos_range_never_goes_on_the_wire_as_a_number() -> None:
    # Only code can build one (parsing caps at 10 years); it becomes forever, never an overflow.
    assert KeepAlive(9.3e9).to_ollama() == -1
    assert KeepAlive(9.2e9).to_ollama() == 9_200_000_000
