"""The config file: where it is found, what it accepts, and one clear line for each mistake."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sourceprep_models.config import load_config, parse_config
from sourceprep_models.config.schema import StageGroup
from sourceprep_models.errors import ConfigError
from sourceprep_models.providers import endpoint_kinds
from tests.conftest import CliFn, WriteConfig

REPO = Path(__file__).resolve().parent.parent
# The provider registry's kinds, as the CLI passes them to every config read.
KINDS = endpoint_kinds()

# (what is wrong, config text, line the error must name, words the message must contain)
BAD_CONFIGS = [
    ("toml syntax", "[models.fast\nname = 'x'\n", 1, "invalid TOML"),
    ("duplicate key", "[models.fast]\nname = 'a'\nname = 'b'\n", 3, "invalid TOML"),
    ("unknown top-level section", "[modles.fast]\nname = 'x'\n", 1, "modles: unknown key; did you mean 'models'?"),
    ("endpoints not a table", "endpoints = 3\n", 1, "endpoints: expected a table"),
    ("endpoint without kind", "[endpoints.box]\nurl = 'http://h:1'\n", 1, "endpoints.box: missing key 'kind'"),
    ("unknown provider kind", "[endpoints.box]\nkind = 'olama'\n", 2, "did you mean 'ollama'?"),
    ("endpoint url not http", "[endpoints.box]\nkind = 'lmstudio'\nurl = 'ftp://h'\n", 3, "is not an http(s) URL"),
    ("endpoint url bad port", "[endpoints.box]\nkind = 'lmstudio'\nurl = 'http://h:99999'\n", 3, "invalid port"),
    ("non-ollama endpoint needs url", "[endpoints.box]\nkind = 'lmstudio'\n", 1, "missing key 'url'"),
    (
        "literal api key",
        "[endpoints.cloud]\nkind = 'openai'\nurl = 'https://api.example.com/v1'\napi_key = 'sk-123'\n",
        4,
        "secrets are never stored in the config",
    ),
    (
        "api_key_env holds a key, not a name",
        "[endpoints.cloud]\nkind = 'openai'\nurl = 'https://a.example/v1'\napi_key_env = 'sk-abc-123'\n",
        4,
        "must be the NAME of an environment variable",
    ),
    ("bad load timeout", "[endpoints.ollama]\nkind = 'ollama'\nload_timeout = 'soon'\n", 3, "is not a duration"),
    ("zero unload timeout", "[endpoints.ollama]\nkind = 'ollama'\nunload_timeout = 0\n", 3, "positive duration"),
    ("sleep level 3", "[endpoints.v]\nkind = 'vllm'\nurl = 'http://h:8000'\nsleep_level = 3\n", 4, "must be 1"),
    ("sleep level on ollama", "[endpoints.ollama]\nkind = 'ollama'\nsleep_level = 1\n", 3, "only to vllm"),
    ("unknown endpoint key", "[endpoints.ollama]\nkind = 'ollama'\nhots = 'x'\n", 3, "unknown key"),
    ("default_endpoint unknown", "default_endpoint = 'lms'\n", 1, "no endpoint named 'lms'"),
    ("model endpoint unknown", "[models.fast]\nendpoint = 'olama'\n", 2, "did you mean 'ollama'?"),
    ("context length a string", "[models.fast]\ncontext_length = 'big'\n", 2, "expected a whole number"),
    ("context length too small", "[models.fast]\ncontext_length = 16\n", 2, "must be at least 256"),
    ("keep_alive prose", "[models.fast]\nkeep_alive = '5 minutes'\n", 2, "is not a keep-alive"),
    ("keep_alive boolean", "[models.fast]\nkeep_alive = true\n", 2, "expected a duration"),
    ("always_available not bool", "[models.fast]\nalways_available = 'yes'\n", 2, "expected true or false"),
    ("model kind unknown", "[models.fast]\nkind = 'rerank'\n", 2, "must be one of: chat, embedding"),
    ("model name empty", "[models.fast]\nname = ''\n", 2, "must not be empty"),
    ("options not a table", "[models.fast]\noptions = 5\n", 2, "models.fast.options: expected a table"),
    ("option wrong type", "[models.fast]\noptions = { num_ctx = 'big' }\n", 2, "models.fast.options.num_ctx"),
    (
        "num_ctx disagrees with context_length",
        "[models.fast]\ncontext_length = 8192\noptions = { num_ctx = 4096 }\n",
        3,
        "disagrees with context_length",
    ),
    (
        "same server model twice",
        "[models.a]\nname = 'qwen3:4b'\n[models.b]\nname = 'qwen3:4b'\n",
        4,
        "already configured as models.a",
    ),
    ("unknown model key", "[models.fast]\ncontext = 8192\n", 2, "did you mean 'context_length'?"),
    ("budget not a size", "[memory]\nbudget = 'lots'\n", 2, "is not a size"),
    ("headroom negative", "[memory]\nheadroom = -5\n", 2, "cannot be negative"),
    ("headroom above budget", "[memory]\nbudget = '4GiB'\nheadroom = '8GiB'\n", 3, "nothing would ever fit"),
    ("single_model not bool", "[memory]\nsingle_model = 1\n", 2, "expected true or false"),
    ("pipeline without stages", "[pipelines.trace]\ndescription = 'x'\n", 1, "needs at least one stage"),
    (
        "stage without model",
        "[pipelines.trace]\n[[pipelines.trace.stages]]\nname = 'a'\n[[pipelines.trace.stages]]\nname = 'b'\n",
        2,
        "pipelines.trace.stages[0]: missing key 'model'",
    ),
    (
        "second stage bad repeat",
        "[[pipelines.t.stages]]\nmodel = 'a'\n[[pipelines.t.stages]]\nmodel = 'b'\nrepeat = 0\n",
        5,
        "pipelines.t.stages[1].repeat: must be at least 1",
    ),
    (
        "stage name twice",
        "[pipelines.t]\nstages = [ { name = 'x', model = 'a' }, { name = 'x', model = 'b' } ]\n",
        2,
        "is used twice",
    ),
    # Values outside what the servers and this machine can take: each a config error saying the range.
    (
        "duplicate key named",
        "[models.fast]\nname = 'a'\nname = 'b'\n",
        3,
        "models.fast.name is set twice (lines 2 and 3)",
    ),
    ("newline in a key", '[models."a\\nb"]\ncontext_length = "big"\n', 2, 'models."a\\nb".context_length: expected'),
    (
        "table again after its subtable and another table",
        "[models.a]\nname = 'x'\n[memory]\n[models.a.options]\nnum_ctx = 512\n[models.a]\nname = 'y'\n",
        6,
        "models.a is set twice (lines 1 and 6)",
    ),
    ("duplicate table named", "[models.a]\n[models.b]\n\n[models.a]\n", 4, "models.a is set twice (lines 1 and 4)"),
    ("budget of 400 digits", f"[memory]\nbudget = {'9' * 400}\n", 2, "memory.budget: 9999"),
    ("budget of 400 digits, larger than", f"[memory]\nbudget = {'9' * 400}\n", 2, "larger than 1 PiB"),
    ("headroom of 400 digits", f"[memory]\nheadroom = {'9' * 400}\n", 2, "larger than 1 PiB, the largest size"),
    ("budget string of 400 digits", f"[memory]\nbudget = '{'9' * 400}GiB'\n", 2, "larger than 1 PiB"),
    ("headroom a float", "[memory]\nheadroom = 1.5\n", 2, 'memory.headroom: expected a size such as "12GiB"'),
    ("keep_alive nan", "[models.fast]\nkeep_alive = nan\n", 2, "models.fast.keep_alive: 'nan' is not a keep-alive"),
    (
        "keep_alive inf",
        "[models.fast]\nkeep_alive = inf\n",
        2,
        'longer than 10 years, the longest duration accepted; write "forever"',
    ),
    ("keep_alive 11 years", "[models.fast]\nkeep_alive = '96360h'\n", 2, "96360h is longer than 10 years"),
    (
        "load_timeout nan",
        "[endpoints.ollama]\nkind = 'ollama'\nload_timeout = nan\n",
        3,
        "load_timeout: nan is not a duration",
    ),
    (
        "load_timeout inf",
        "[endpoints.ollama]\nkind = 'ollama'\nload_timeout = inf\n",
        3,
        "load_timeout: inf is longer than 10 years",
    ),
    ("unload_timeout -inf", "[endpoints.ollama]\nkind = 'ollama'\nunload_timeout = -inf\n", 3, "longer than 10 years"),
    (
        "load_timeout huge string",
        "[endpoints.ollama]\nkind = 'ollama'\nload_timeout = '99999999999999999h'\n",
        3,
        "longer than 10 years",
    ),
    (
        "option nan",
        "[models.fast]\noptions = { temperature = nan }\n",
        2,
        "models.fast.options.temperature: must be a finite number",
    ),
    (
        "option inf in an array",
        "[models.fast]\noptions = { stop = [inf] }\n",
        2,
        "models.fast.options.stop[0]: must be a finite number",
    ),
    (
        "option past 64 bits",
        f"[models.fast]\noptions = {{ num_gpu = {2**63} }}\n",
        2,
        "num_gpu: must be at most 9,223,372,036,854,775,807",
    ),
    (
        "context_length past 64 bits",
        f"[models.fast]\ncontext_length = {'9' * 400}\n",
        2,
        "context_length: must be at most",
    ),
    (
        "stage repeat 1e9",
        "[[pipelines.t.stages]]\nmodel = 'a'\nrepeat = 1000000000\n",
        3,
        "pipelines.t.stages[0].repeat: must be at most 10,000 (a pipeline runs at most 10,000 stages",
    ),
    (
        "repeats that expand past the cap",
        "[[pipelines.t.stages]]\nmodel = 'a'\nrepeat = 6000\n[[pipelines.t.stages]]\nmodel = 'b'\nrepeat = 6000\n",
        6,
        "pipelines.t.stages[1].repeat: the pipeline would run 12,000+ stages in all",
    ),
    (
        "group repeat times its stages past the cap",
        "[[pipelines.t.stages]]\nrepeat = 4000\nstages = [{ model = 'a' }, { model = 'b' }, { model = 'c' }]\n",
        2,
        "pipelines.t.stages[0].repeat: the pipeline would run 12,000+ stages in all",
    ),
]


@pytest.mark.parametrize(("problem", "text", "line", "words"), BAD_CONFIGS, ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config_is_one_line_naming_file_line_and_key(
    cli: CliFn,
    write_config: WriteConfig,
    problem: str,
    text: str,
    line: int,
    words: str,
) -> None:
    path = write_config(text)
    result = cli("--config", str(path), "status", "--no-hardware")
    assert result.exit_code == 5, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {path}:{line}: "), result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_secret_value_never_echoed_in_the_error(cli: CliFn, write_config: WriteConfig) -> None:
    path = write_config("[endpoints.c]\nkind = 'openai'\nurl = 'https://a.example/v1'\napi_key = 'sk-SECRET-42'\n")
    result = cli("--config", str(path), "status", "--no-hardware")
    assert result.exit_code == 5
    assert "sk-SECRET-42" not in result.stderr + result.stdout


def test_missing_explicit_config_file_is_exit_5(cli: CliFn, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = cli("--config", str(missing), "status", "--no-hardware")
    assert result.exit_code == 5
    assert result.stderr == f"error: {missing}: config file not found (named by --config); create it or fix the path\n"


def test_env_var_names_the_config_and_flag_beats_it(cli: CliFn, write_config: WriteConfig, tmp_path: Path) -> None:
    bad = write_config("[models.x]\ncontext_length = 'big'\n")
    good = tmp_path / "good.toml"
    good.write_text("[endpoints.ollama]\nkind = 'ollama'\nurl = 'http://127.0.0.1:9'\n")
    from_env = cli("status", "--no-hardware", env={"SOURCEPREP_MODELS_CONFIG": str(bad)})
    assert from_env.exit_code == 5 and str(bad) in from_env.stderr
    # --config wins over the environment: the good file points at a closed port → exit 4, not 5.
    from_flag = cli("--config", str(good), "status", "--no-hardware", env={"SOURCEPREP_MODELS_CONFIG": str(bad)})
    assert from_flag.exit_code == 4, from_flag.stderr


def test_user_config_file_is_used_when_nothing_else_names_one(tmp_path: Path) -> None:
    user_file = tmp_path / "xdg-config" / "sourceprep-models" / "config.toml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text("[endpoints.box]\nkind = 'ollama'\nurl = 'http://10.0.0.5:11434'\n")
    config = load_config(None, {}, kinds=KINDS)
    assert config.path == user_file
    assert config.endpoints["box"].url == "http://10.0.0.5:11434"


def test_no_config_means_ollama_at_ollama_host() -> None:
    config = load_config(None, {"OLLAMA_HOST": "gpu-box:8080"}, kinds=KINDS)
    assert config.path is None
    assert [(e.name, e.kind, e.url, e.source) for e in config.endpoints.values()] == [
        ("ollama", "ollama", "http://gpu-box:8080", "OLLAMA_HOST")
    ]


def test_example_config_is_accepted_with_every_reference_setup() -> None:
    config = load_config(str(REPO / "models.example.toml"), {}, kinds=KINDS)
    assert {e.kind for e in config.endpoints.values()} >= {"ollama", "lmstudio", "openai"}
    assert config.endpoints["cloud"].api_key_env == "OPENAI_API_KEY"
    assert config.models["catalog"].always_available
    assert config.models["coder"].runner_options() == {"num_batch": 512, "num_gpu": -1, "num_ctx": 32768}
    assert config.models["fast"].endpoint == "lmstudio"
    assert set(config.pipelines) == {"trace", "retrieval", "agent"}
    group = config.pipelines["retrieval"].stages[0]
    assert isinstance(group, StageGroup) and group.repeat == 20 and len(group.stages) == 2
    debug = config.pipelines["agent"].stages[-1]
    assert not isinstance(debug, StageGroup) and debug.when == "previous_failed"


def test_values_are_typed() -> None:
    text = textwrap.dedent(
        """
        [models.big]
        name = "qwen3:14b"
        keep_alive = "1h30m"
        options = { num_ctx = 16384, temperature = 0.2 }
        [memory]
        budget = "12GiB"
        headroom = "512MiB"
        single_model = true
        """
    )
    config = parse_config(text, None, {}, kinds=KINDS)
    big = config.models["big"]
    assert big.keep_alive is not None and big.keep_alive.seconds == 5400
    assert big.context_length == 16384
    assert big.runner_options() == {"temperature": 0.2, "num_ctx": 16384}
    assert config.memory.budget_bytes == 12 * 1024**3
    assert config.memory.headroom_bytes == 512 * 1024**2
    assert config.memory.single_model


def test_error_without_file_still_names_key() -> None:
    with pytest.raises(ConfigError, match=r"^<config>:2: models.x.keep_alive: "):
        parse_config("[models.x]\nkeep_alive = []\n", None, {}, kinds=KINDS)


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("[pipelines.p]\nstages = [{ model = 'a', when = 'sometimes' }]\n", 2, "one of: always, previous_failed"),
        ("[pipelines.p]\nstages = [{ model = 'a', when = 'previous_failed' }]\n", 2, "the first stage has no stage"),
        ("[pipelines.p]\nstages = [{ name = 'g', stages = [] }]\n", 2, "a group needs a list of stages"),
        (
            "[pipelines.p]\nstages = [{ name = 'g', stages = [{ stages = [{ model = 'a' }] }] }]\n",
            2,
            "groups cannot be nested",
        ),
        ("[pipelines.p]\nstages = [{ model = 'a', max_tokens = 0 }]\n", 2, "must be at least 1"),
    ],
)
def test_bad_pipeline_definitions_are_one_line_errors(text: str, line: int, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("p.toml"), {}, kinds=KINDS)
    assert expected in caught.value.message and f"p.toml:{line}:" in caught.value.message


# -- one endpoint per server -------------------------------------------------------------------

SAME_SERVER = [
    ("loopback names", "http://127.0.0.1:11434", "http://localhost:11434"),
    ("ipv6 loopback and host case", "http://[::1]:11434", "HTTP://LocalHost:11434"),
    ("bind-all address", "http://0.0.0.0:1234", "http://127.0.0.1:1234/"),
    ("the scheme's port", "http://gpu-box", "http://gpu-box:80"),
    ("https port", "https://api.example.com/v1", "https://API.example.com:443"),
    ("trailing /v1", "http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
]


@pytest.mark.parametrize(("problem", "first", "second"), SAME_SERVER, ids=[case[0] for case in SAME_SERVER])
def test_two_endpoints_for_one_server_are_a_config_error(
    cli: CliFn, write_config: WriteConfig, problem: str, first: str, second: str
) -> None:
    path = write_config(
        f"[endpoints.a]\nkind = 'lmstudio'\nurl = '{first}'\n\n[endpoints.b]\nkind = 'openai'\nurl = '{second}'\n"
    )
    result = cli("--config", str(path), "status", "--no-hardware")
    assert result.exit_code == 5, result.stderr
    written = second.rstrip("/")
    assert result.stderr == (
        f"error: {path}:7: endpoints.b.url: {written} is the same server as endpoints.a (line 1) at {first}; "
        "keep one endpoint per server: remove one of the two, or correct the url that is wrong\n"
    )


def test_an_endpoint_at_ollama_host_clashes_with_one_written_out() -> None:
    text = (
        "[endpoints.local]\nkind = 'ollama'\n[endpoints.compat]\nkind = 'openai'\nurl = 'http://localhost:11434/v1'\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("c.toml"), {}, kinds=KINDS)
    assert caught.value.message == (
        "c.toml:5: endpoints.compat.url: http://localhost:11434/v1 is the same server as endpoints.local (line 1) "
        "at http://127.0.0.1:11434 (the default address); keep one endpoint per server: remove one of the two, "
        "or correct the url that is wrong"
    )
    # Written the other way round, the error names the endpoint without a url, at its table's line.
    swapped = "[endpoints.compat]\nkind = 'openai'\nurl = 'http://box:11434/v1'\n[endpoints.local]\nkind = 'ollama'\n"
    with pytest.raises(ConfigError, match=r"^c.toml:4: endpoints.local: http://box:11434 \(from OLLAMA_HOST\) is"):
        parse_config(swapped, Path("c.toml"), {"OLLAMA_HOST": "box"}, kinds=KINDS)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("http://127.0.0.1:11434", "http://127.0.0.1:11435"),  # another port
        ("http://127.0.0.1:8080", "http://127.0.0.2:8080"),  # another loopback address may be another server
        ("http://gateway/ollama", "http://gateway/lmstudio"),  # one proxy, two servers behind it
        ("http://gpu-box:8080", "https://gpu-box:8080"),
        ("http://gpu-box", "http://gpu-box:11434"),  # no port means port 80, whatever the kind
        ("http://gpu-box:8000/v2", "http://gpu-box:8000"),
    ],
)
def test_different_servers_are_accepted(first: str, second: str) -> None:
    text = f"[endpoints.a]\nkind = 'ollama'\nurl = '{first}'\n[endpoints.b]\nkind = 'llamacpp'\nurl = '{second}'\n"
    config = parse_config(text, None, {}, kinds=KINDS)
    assert [endpoint.url for endpoint in config.endpoints.values()] == [first, second]


# -- endpoint kinds come from the provider registry -------------------------------------------


def test_the_config_accepts_exactly_the_registered_kinds() -> None:
    from sourceprep_models.providers import registered_kinds

    assert sorted(KINDS.names) == registered_kinds()
    for kind in KINDS.names:
        url = "" if kind == KINDS.ollama_host_kind else "url = 'http://127.0.0.1:9'\n"
        config = parse_config(f"[endpoints.e]\nkind = '{kind}'\n{url}", None, {}, kinds=KINDS)
        assert config.endpoints["e"].kind == kind


def test_kinds_and_their_rules_are_whatever_the_caller_passes() -> None:
    from sourceprep_models.config import EndpointKinds

    kinds = EndpointKinds(names=("alpha", "beta"), ollama_host_kind="alpha", sleep_level_kinds=frozenset({"beta"}))
    config = parse_config("", None, {"OLLAMA_HOST": "box"}, kinds=kinds)
    assert [(e.name, e.kind, e.url) for e in config.endpoints.values()] == [("ollama", "alpha", "http://box:11434")]
    beta = parse_config("[endpoints.b]\nkind = 'beta'\nurl = 'http://h:1'\nsleep_level = 2\n", None, {}, kinds=kinds)
    assert beta.endpoints["b"].sleep_level == 2
    with pytest.raises(ConfigError, match=r"endpoints.a.sleep_level: applies only to beta endpoints, not alpha"):
        parse_config("[endpoints.a]\nkind = 'alpha'\nsleep_level = 1\n", None, {}, kinds=kinds)
    with pytest.raises(ConfigError, match=r"unknown provider kind 'ollama'; use one of: alpha, beta"):
        parse_config("[endpoints.o]\nkind = 'ollama'\nurl = 'http://h:1'\n", None, {}, kinds=kinds)


# -- editing in place ------------------------------------------------------------------------


def test_an_edit_through_a_symlinked_config_keeps_the_link(tmp_path: Path) -> None:
    from sourceprep_models.config.edit import edit_config, set_pin

    real = tmp_path / "dotfiles" / "sourceprep.toml"
    real.parent.mkdir()
    real.write_text("# my models\n[models.fast]\nname = 'qwen3:4b'\n")
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    config = edit_config(link, lambda text: set_pin(text, "fast", "qwen3:4b", None, pinned=True), {}, kinds=KINDS)
    assert config.models["fast"].always_available
    assert link.is_symlink()
    assert real.read_text() == "# my models\n[models.fast]\nname = 'qwen3:4b'\nalways_available = true\n"
    # An edit that would make the config invalid leaves the file as it was.
    with pytest.raises(ConfigError, match=r"endpoints\.x: missing key 'kind'"):
        edit_config(link, lambda text: text + "[endpoints.x]\n", {}, kinds=KINDS)
    assert real.read_text().endswith("always_available = true\n")


@pytest.mark.parametrize("value", ["::::", "[::::]:11434", "http://a:b:c"])
def test_an_ollama_host_with_no_host_in_it_is_a_config_error_naming_it(
    cli: CliFn, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", value)

    result = cli("status", "--no-hardware")

    assert result.exit_code == 5
    assert result.stderr.startswith(f"error: OLLAMA_HOST={value!r}: ")
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
