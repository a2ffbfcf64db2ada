"""OLLAMA_HOST read exactly as the `ollama` command reads it.

The tables are Ollama's own test cases, copied from envconfig/config_test.go (TestHost,
TestConnectableHost) at the commit the emulator follows; the rejections are where Go's net/http
refuses the URL that envconfig/config.go Host() builds (api/client.go Client.do ->
http.NewRequestWithContext -> url.Parse: "invalid URL escape", "invalid port"; http.Client:
"unsupported protocol scheme").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sourceprep_models.config.ollama_host import ollama_base_url, ollama_host_url
from tests.conftest import CliFn
from tests.emulator import EmulatedModel

# envconfig/config_test.go TestHost: value -> Host().String().
GO_TEST_HOST = {
    "empty": ("", "http://127.0.0.1:11434"),
    "only address": ("1.2.3.4", "http://1.2.3.4:11434"),
    "only port": (":1234", "http://:1234"),
    "address and port": ("1.2.3.4:1234", "http://1.2.3.4:1234"),
    "hostname": ("example.com", "http://example.com:11434"),
    "hostname and port": ("example.com:1234", "http://example.com:1234"),
    "zero port": (":0", "http://:0"),
    "too large port": (":66000", "http://:11434"),
    "too small port": (":-1", "http://:11434"),
    "ipv6 localhost": ("[::1]", "http://[::1]:11434"),
    "ipv6 world open": ("[::]", "http://[::]:11434"),
    "ipv6 no brackets": ("::1", "http://[::1]:11434"),
    "ipv6 + port": ("[::1]:1337", "http://[::1]:1337"),
    "extra space": (" 1.2.3.4 ", "http://1.2.3.4:11434"),
    "extra quotes": ('"1.2.3.4"', "http://1.2.3.4:11434"),
    "extra space+quotes": (' " 1.2.3.4 " ', "http://1.2.3.4:11434"),
    "extra single quotes": ("'1.2.3.4'", "http://1.2.3.4:11434"),
    "http": ("http://1.2.3.4", "http://1.2.3.4:80"),
    "http port": ("http://1.2.3.4:4321", "http://1.2.3.4:4321"),
    "https": ("https://1.2.3.4", "https://1.2.3.4:443"),
    "https port": ("https://1.2.3.4:4321", "https://1.2.3.4:4321"),
    "proxy path": ("https://example.com/ollama", "https://example.com:443/ollama"),
    "ollama.com": ("ollama.com", "https://ollama.com:443"),
}

# envconfig/config_test.go TestConnectableHost: value -> ConnectableHost().String().
GO_TEST_CONNECTABLE_HOST = {
    "empty": ("", "http://127.0.0.1:11434"),
    "localhost": ("127.0.0.1", "http://127.0.0.1:11434"),
    "localhost and port": ("127.0.0.1:1234", "http://127.0.0.1:1234"),
    "ipv4 unspecified": ("0.0.0.0", "http://127.0.0.1:11434"),
    "ipv4 unspecified + port": ("0.0.0.0:1234", "http://127.0.0.1:1234"),
    "ipv6 unspecified": ("[::]", "http://[::1]:11434"),
    "ipv6 unspecified + port": ("[::]:1234", "http://[::1]:1234"),
    "ipv6 localhost": ("[::1]", "http://[::1]:11434"),
    "ipv6 localhost + port": ("[::1]:1234", "http://[::1]:1234"),
    "specific address": ("192.168.1.5", "http://192.168.1.5:11434"),
    "specific address + port": ("192.168.1.5:8080", "http://192.168.1.5:8080"),
    "hostname": ("example.com", "http://example.com:11434"),
    "hostname and port": ("example.com:1234", "http://example.com:1234"),
    "https unspecified + port": ("https://0.0.0.0:4321", "https://127.0.0.1:4321"),
}

# What Go's ParseInt/ParseIP make of forms Ollama's tests do not cover (strconv.ParseInt(port, 10,
# 32) knows only ASCII digits; net.ParseIP(...).String() writes an IPv4-mapped address as IPv4).
MORE_HOST = {
    "arabic-indic digits are no port": ("box:\u0661\u0662\u0663\u0664", "http://box:11434"),
    "superscript digit is no port": ("box:\u00b2", "http://box:11434"),
    "underscores need base 0": ("box:1_0", "http://box:11434"),
    "ipv4-mapped unspecified": ("::ffff:0.0.0.0", "http://0.0.0.0:11434"),
    "ipv4-mapped loopback": ("::FFFF:127.0.0.1", "http://127.0.0.1:11434"),
    "a signed port passes ParseInt": ("box:+80", "http://box:+80"),
    "a user passes Host()": ("user@box", "http://user@box:11434"),
    "scheme compared as written": ("HTTP://box", "HTTP://box:11434"),
}


@pytest.mark.parametrize(("value", "expected"), GO_TEST_HOST.values(), ids=GO_TEST_HOST.keys())
def test_host_follows_ollamas_own_test_host_cases(value: str, expected: str) -> None:
    assert ollama_host_url(value) == expected


@pytest.mark.parametrize(("value", "expected"), MORE_HOST.values(), ids=MORE_HOST.keys())
def test_host_follows_go_for_forms_ollamas_tests_leave_out(value: str, expected: str) -> None:
    assert ollama_host_url(value) == expected


@pytest.mark.parametrize(("value", "expected"), GO_TEST_CONNECTABLE_HOST.values(), ids=GO_TEST_CONNECTABLE_HOST.keys())
def test_connecting_follows_ollamas_own_connectable_host_cases(value: str, expected: str) -> None:
    assert ollama_base_url(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("::ffff:0.0.0.0", "http://127.0.0.1:11434"),  # canonical IPv4, then loopback
        ("[::ffff:0.0.0.0]:1234", "http://127.0.0.1:1234"),  # ip.To4() != nil: IPv4 loopback
        ("box:\u0661\u0662\u0663\u0664", "http://box:11434"),
        ("box:0080", "http://box:80"),
        ("HTTP://box", "http://box:11434"),  # url.Parse lowercases the scheme; Host() kept port 11434
        ("[box]", "http://box:11434"),  # Go dials the name inside the brackets
    ],
)
def test_connecting_to_the_forms_the_ollama_command_accepts(value: str, expected: str) -> None:
    assert ollama_base_url(value) == expected


# The forms the `ollama` command fails on, and a word of what it says.
REJECTED = {
    "user@box": "invalid URL escape",
    "user@box:11434": "invalid URL escape",
    "box:+80": "invalid port",
    "box:-0": "invalid port",
    "my box:11434": "invalid URL escape",
    "ftp://box": "only http and https",
    "://box:11434": "only http and https",
}


@pytest.mark.parametrize(("value", "says"), REJECTED.items(), ids=REJECTED.keys())
def test_an_ollama_host_the_ollama_command_rejects_is_a_config_error(
    cli: CliFn, monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", value)

    result = cli("status", "--no-hardware")

    assert result.exit_code == 5, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    error = result.stderr.rstrip("\n")
    assert error.startswith(f"error: OLLAMA_HOST={value!r}: ")  # names the variable and its value
    assert says in error
    assert "write it as host, host:port or http://host:port" in error  # the form to write


def test_a_user_name_in_ollama_host_is_named_as_the_problem(cli: CliFn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "alice@gpu-box:11434")
    result = cli("status", "--no-hardware")
    assert result.exit_code == 5
    assert "'alice@gpu-box' holds '@'" in result.stderr and "a user name cannot go in it" in result.stderr


def test_an_ipv4_mapped_ollama_host_reaches_the_server_the_ollama_command_reaches(  # type: ignore[no-untyped-def]
    cli: CliFn, ollama_emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    emu = ollama_emulator(models=[EmulatedModel("qwen3:4b", file_mib=2)])
    config = tmp_path / "c.toml"
    config.write_text(f'[endpoints.ollama]\nkind = "ollama"\nurl = "http://127.0.0.1:{emu.port}"\n')
    monkeypatch.setenv("OLLAMA_HOST", f"[::ffff:0.0.0.0]:{emu.port}")

    result = cli("--config", str(config), "doctor", "--json")

    check = {item["id"]: item for item in result.json()["checks"]}["config.endpoint.ollama"]
    # The `ollama` command goes to 127.0.0.1 as the config does: doctor sees no disagreement.
    assert check["status"] == "ok", check
