"""Hostile input: odd config files and values, odd command-line and environment values.

Every one ends in one stderr line and its documented exit code (2 usage, 5 bad config), never a
traceback, a hang or a memory blow-up. The two hypothesis harnesses at the end keep the attacks
that found these in the suite, with a fixed example budget so it stays fast. No server is needed:
the config points at a loopback port nobody listens on, so a value that gets past the checks ends
in exit 4 (server unreachable), which the properties accept.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CliFn, Run, WriteConfig
from tests.loopback import unused_port

# What a command may end with: the documented exit codes (README, errors.py).
EXIT_CODES = {0, 1, 2, 3, 4, 5, 6}


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> int:
    """A loopback port nobody listens on; OLLAMA_HOST points there too, for configs without endpoints."""
    free = unused_port()
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{free}")
    return free


def endpoint(port: int) -> str:
    return f"[endpoints.ollama]\nkind = 'ollama'\nurl = 'http://127.0.0.1:{port}'\n"


def assert_one_error_line(result: Run, code: int, *words: str) -> None:
    assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


# -- the config file itself --------------------------------------------------------------------


def test_a_config_path_too_long_is_exit_5(cli: CliFn, tmp_path: Path) -> None:
    path = tmp_path / ("x" * 5000)
    result = cli("--config", str(path), "status", "--no-hardware")
    assert_one_error_line(result, 5, "cannot open the config file (File name too long)", "fix the path")
    assert len(result.stderr) < 400  # the 5,000-character path is shortened in the message


@pytest.mark.skipif(os.geteuid() == 0, reason="root searches any directory")
def test_a_config_in_a_directory_that_cannot_be_searched_is_exit_5(cli: CliFn, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "config.toml").write_text("")
    locked.chmod(0)
    try:
        result = cli("--config", str(locked / "config.toml"), "status", "--no-hardware")
    finally:
        locked.chmod(stat.S_IRWXU)
    assert_one_error_line(result, 5, "Permission denied", "check the permissions")


def test_a_fifo_as_config_is_refused_without_waiting_for_a_writer(cli: CliFn, tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    result = cli("--config", str(fifo), "status", "--no-hardware")
    assert_one_error_line(result, 5, f"{fifo}: is not a regular file (a pipe, socket or device)")


def test_dev_zero_as_config_is_refused_without_reading_it(cli: CliFn) -> None:
    result = cli("--config", "/dev/zero", "status", "--no-hardware")
    assert_one_error_line(result, 5, "/dev/zero: is not a regular file")


def test_dev_null_still_means_an_empty_config(cli: CliFn, port: int) -> None:
    result = cli("--config", "/dev/null", "status", "--no-hardware")
    assert_one_error_line(result, 4, f"127.0.0.1:{port}")  # defaults: Ollama at OLLAMA_HOST, which is down


def test_a_config_over_256_kib_is_refused_naming_the_cap(cli: CliFn, write_config: WriteConfig, port: int) -> None:
    # Valid TOML (comments), so only the size is wrong; 10 MB of it took 28 s per command before.
    path = write_config(endpoint(port) + ("# padding\n" * 30_000))
    result = cli("--config", str(path), "status", "--no-hardware")
    assert_one_error_line(result, 5, f"{path}: is larger than 256 KiB, the largest config read")


def test_a_config_just_under_the_cap_is_read(cli: CliFn, write_config: WriteConfig, port: int) -> None:
    path = write_config(endpoint(port) + ("# padding\n" * 26_000))
    assert_one_error_line(cli("--config", str(path), "status", "--no-hardware"), 4)


def test_a_home_directory_of_nobody_is_a_missing_file(cli: CliFn) -> None:
    result = cli("--config", "~no-such-user-here/config.toml", "status", "--no-hardware")
    assert_one_error_line(result, 5, "~no-such-user-here/config.toml: config file not found")


def test_pin_on_a_config_too_long_to_open_is_exit_5(cli: CliFn, tmp_path: Path, port: int) -> None:
    path = tmp_path / ("x" * 5000)
    assert_one_error_line(cli("--config", str(path), "pin", "qwen3:4b"), 5)


# -- values that reach a command ---------------------------------------------------------------

REPEAT_1E9 = "[pipelines.p]\n[[pipelines.p.stages]]\nmodel = 'a'\nrepeat = 1000000000\n"


@pytest.mark.parametrize("command", [("run-pipeline", "p", "--dry-run"), ("status", "--no-hardware")])
def test_repeat_1e9_is_a_config_error_not_a_hang(
    cli: CliFn, write_config: WriteConfig, port: int, command: tuple[str, ...]
) -> None:
    path = write_config(endpoint(port) + REPEAT_1E9)
    result = cli("--config", str(path), *command)
    assert_one_error_line(result, 5, "pipelines.p.stages[0].repeat: must be at most 10,000")


def test_doctor_reports_repeat_1e9_as_its_config_problem(cli: CliFn, write_config: WriteConfig, port: int) -> None:
    path = write_config(endpoint(port) + REPEAT_1E9)
    result = cli("--config", str(path), "doctor")
    assert result.exit_code == 1, result.stderr  # doctor's own code: it found a problem
    assert "pipelines.p.stages[0].repeat: must be at most 10,000" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("keep_alive = nan", "models.a.keep_alive: 'nan' is not a keep-alive"),
        ("keep_alive = inf", "models.a.keep_alive: inf is longer than 10 years"),
        ("options = { temperature = nan }", "models.a.options.temperature: must be a finite number"),
        ("options = { top_p = -inf }", "models.a.options.top_p: must be a finite number"),
    ],
)
def test_values_json_cannot_carry_stop_load_before_any_request(
    cli: CliFn, write_config: WriteConfig, ollama_emulator, model: str, words: str
) -> None:  # type: ignore[no-untyped-def]
    from tests.emulator import EmulatedModel

    emulator = ollama_emulator(models=[EmulatedModel("qwen3:4b")], gpu_vram_mib=64)
    path = write_config(
        f"[endpoints.ollama]\nkind = 'ollama'\nurl = '{emulator.url}'\n[models.a]\nname = 'qwen3:4b'\n{model}\n"
    )
    result = cli("--config", str(path), "load", "a")
    assert_one_error_line(result, 5, words)
    assert emulator.loaded_names() == []


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (("load", "a", "--keep-alive", "99999999999999999999999h"), {}, "--keep-alive: 99999999999999999999999h is"),
        (("load", "a", "--keep-alive", "9" * 400), {}, "the longest duration accepted; use --keep-alive forever"),
        (("load", "a", "--timeout", "99999999999999999999999h"), {}, "--timeout: 99999999999999999999999h is longer"),
        (("load", "a", "--timeout", "9999999999"), {}, "--timeout: 9999999999 is longer than 10 years"),
        (("pin", "a", "--timeout", "9" * 400), {}, "longer than 10 years"),
        (("load", "a"), {"SOURCEPREP_MODELS_TIMEOUT": "99999999999999999999999h"}, "--timeout: 9999"),
        (("status",), {"SOURCEPREP_MODELS_VERBOSE": "²"}, "SOURCEPREP_MODELS_VERBOSE='²' is not a count"),
        (("status",), {"SOURCEPREP_MODELS_QUIET": "1" * 5000}, "SOURCEPREP_MODELS_QUIET='1111"),
        (("load", "a\udcff"), {}, "the argument 'a\\xff' is not valid UTF-8 text"),
        (("load", ""), {}, "the model name is empty"),
        (("unload", " "), {}, "the model name is empty"),
        (("pin", ""), {}, "the model name is empty"),
    ],
    ids=[
        "keep-alive-huge",
        "keep-alive-400-digits",
        "timeout-huge",
        "timeout-past-time_t",
        "pin-timeout-400-digits",
        "timeout-env",
        "verbose-superscript-two",
        "quiet-5000-digits",
        "undecodable-byte",
        "load-empty",
        "unload-blank",
        "pin-empty",
    ],
)
def test_odd_command_line_values_are_usage_errors(
    cli: CliFn, write_config: WriteConfig, port: int, args: tuple[str, ...], env: dict[str, str], words: str
) -> None:
    path = write_config(endpoint(port) + "[models.a]\nname = 'qwen3:4b'\n")
    result = cli("--config", str(path), *args, env=env)
    assert_one_error_line(result, 2, words)


def test_an_undecodable_byte_from_a_real_command_line_is_a_usage_error(write_config: WriteConfig, port: int) -> None:
    import subprocess

    from tests.test_cli_basics import COMMAND

    path = write_config(endpoint(port))
    result = subprocess.run(
        [os.fsencode(COMMAND), b"--config", os.fsencode(path), b"load", b"qwen3\xff:4b"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == b"error: the argument 'qwen3\\xff:4b' is not valid UTF-8 text; write it in UTF-8\n"


# -- the attack harnesses, bounded ---------------------------------------------------------------


@pytest.fixture
def watchdog() -> Iterator[None]:
    """Turns a hang into a failure naming it instead of a stuck suite (a guard, not a timing check)."""

    def hung(signum: int, frame: object) -> None:
        raise AssertionError("the command hung for 120 s")

    previous = signal.signal(signal.SIGALRM, hung)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def check_run(cli: CliFn, *args: str, env: dict[str, str] | None = None) -> Run:
    signal.alarm(120)
    try:
        result = cli(*args, env=env)
    finally:
        signal.alarm(0)
    assert result.exit_code in EXIT_CODES, (args, result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) <= 1, result.stderr
    if errors:
        assert result.stderr.splitlines()[-1] == errors[0], result.stderr
    elif result.exit_code != 0 and not _silenced(env or {}):
        # Only doctor ends with its own summary instead of an error line.
        assert args[2] == "doctor" and result.exit_code == 1, result.stderr
    return result


def _silenced(env: dict[str, str]) -> bool:
    """-qqq (here through the environment) hides errors too, as documented."""
    quiet, verbose = (env.get(f"SOURCEPREP_MODELS_{name}", "").strip() for name in ("QUIET", "VERBOSE"))
    count = int(quiet) if quiet.isascii() and quiet.isdigit() and len(quiet) <= 3 else 0
    return count - (int(verbose) if verbose.isascii() and verbose.isdigit() and len(verbose) <= 3 else 0) >= 3


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
_ODD_NUMBERS = st.sampled_from(
    ["nan", "inf", "-inf", "1e400", "-1e400", "0", "-0", "-1", "9" * 25, "9" * 400, "1.5", "1e9", "0.0", "1_000"]
)
_SCALARS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers().map(lambda n: n * 10**380),  # beyond float range
    _ODD_NUMBERS,  # written bare: TOML floats and ints, or invalid TOML
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.booleans().map(lambda b: "true" if b else "false"),
    _TEXT.map(lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.sampled_from(['"30m"', '"forever"', '"-1"', '"0"', '"12GiB"', '"auto"', '"99999999999999999h"', '"1.5GiB"']),
    st.integers(min_value=1, max_value=5000).map(lambda n: '"' + "x" * n + '"'),  # long strings
)


def _toml_value(depth: int = 0) -> st.SearchStrategy[str]:
    if depth >= 2:
        return _SCALARS.map(str)
    inner = _toml_value(depth + 1)
    return st.one_of(
        _SCALARS.map(str),
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.dictionaries(st.sampled_from(["a", "num_ctx", "temperature", "model"]), inner, max_size=3).map(
            lambda table: "{ " + ", ".join(f"{key} = {value}" for key, value in table.items()) + " }"
        ),
    )


_KEYS = {
    "endpoints.ollama": ["kind", "url", "load_timeout", "unload_timeout", "sleep_level", "api_key_env", "hots"],
    "models.a": ["name", "endpoint", "keep_alive", "context_length", "options", "always_available", "kind"],
    "models.a.options": ["num_ctx", "temperature", "top_p", "num_gpu", "stop", "use_mmap", "seed"],
    "memory": ["budget", "headroom", "single_model", "allow_evict_pinned"],
    "pipelines.p": ["description", "stages"],
    "[pipelines.p.stages]": ["model", "repeat", "name", "prompts", "max_tokens", "when", "stages"],
    "": ["default_endpoint", "endpoints", "models", "memory", "pipelines", "ünïcode", "x" * 300],
}


@st.composite
def malformed_configs(draw: st.DrawFn, port: int) -> str:
    """A config that is right except for a few keys: wrong types, NaN, inf, huge numbers, unicode,
    wrong tables, long strings, duplicate keys, broken syntax."""
    lines = [f"[endpoints.ollama]\nkind = 'ollama'\nurl = 'http://127.0.0.1:{port}'\n"]
    lines.append("[models.a]\nname = 'qwen3:4b'\n[pipelines.p]\n[[pipelines.p.stages]]\nmodel = 'a'\n")
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        table = draw(st.sampled_from(sorted(_KEYS)))
        key = draw(st.sampled_from(_KEYS[table]))
        value = draw(_toml_value())
        header = f"[{table}]" if table else ""
        lines.append(f"{header}\n{key} = {value}\n")
    if draw(st.booleans()):  # a duplicate key or table, or a line cut short
        lines.append(draw(st.sampled_from(["[models.a]\n", "name = 'x'\nname = 'y'\n", "[memory\n", "a = \n"])))
    return "".join(lines)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_malformed_configs_never_crash_or_hang(
    cli: CliFn, write_config: WriteConfig, port: int, watchdog: None, data: st.DataObject
) -> None:
    path = write_config(data.draw(malformed_configs(port)))
    for command in (("status", "--no-hardware"), ("load", "a"), ("run-pipeline", "p", "--dry-run"), ("doctor",)):
        check_run(cli, "--config", str(path), *command)


_ODD_ARGS = st.one_of(
    _TEXT,
    _ODD_NUMBERS,
    st.sampled_from(["", " ", "forever", "-1", "0", "30m", "²", "٣", "1h-1m", "--", "-", "a/b", "../x", "\x00"]),
    st.integers(min_value=1, max_value=400).map(lambda n: "9" * n),
    st.integers(min_value=1, max_value=3).map(lambda n: "h" * n * 1000),
    st.binary(min_size=1, max_size=6).map(lambda raw: os.fsdecode(b"m" + raw)),  # undecodable bytes
)
_COMMANDS = st.sampled_from(
    [
        ("load", "{}"),
        ("load", "a", "--keep-alive", "{}"),
        ("load", "a", "--timeout", "{}"),
        ("load", "a", "--ctx", "{}"),
        ("load", "a", "--endpoint", "{}"),
        ("status", "--no-hardware", "--endpoint", "{}"),
        ("run-pipeline", "{}", "--dry-run"),
        ("run-pipeline", "p", "--dry-run", "--strategy", "{}"),
        ("pin", "{}"),
        ("pin", "a", "--ctx", "{}"),
        ("pin", "a", "--timeout", "{}"),
        ("unload", "{}"),
    ]
)
_ENV = st.one_of(
    st.just({}),
    st.builds(
        lambda name, value: {name: value},
        st.sampled_from(["SOURCEPREP_MODELS_TIMEOUT", "SOURCEPREP_MODELS_VERBOSE", "SOURCEPREP_MODELS_QUIET"]),
        _ODD_ARGS.filter(lambda value: "\x00" not in value),
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(command=_COMMANDS, value=_ODD_ARGS, env=_ENV)
def test_odd_command_line_values_never_crash_or_hang(
    cli: CliFn,
    write_config: WriteConfig,
    port: int,
    watchdog: None,
    command: tuple[str, ...],
    value: str,
    env: dict[str, str],
) -> None:
    path = write_config(endpoint(port) + "[models.a]\nname = 'qwen3:4b'\n" + REPEAT_1E9.replace("1000000000", "2"))
    args = [value if arg == "{}" else arg for arg in command]
    check_run(cli, "--config", str(path), *args, env=env)
