"""End to end against a REAL llama-server in router mode, with real (tiny, generated) GGUF models.

Every test drives the installed CLI's app in-process and then asks the server itself what it has
loaded. The servers run on 127.0.0.1 with a free port, ``--no-webui``, ``--no-models-autoload``
and a small ``--models-max``, and are stopped by PID at the end of each test.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CliFn
from tests.loopback import unused_port
from tests.realserver.make_gguf import PRESETS, write_model
from tests.realserver.router import LlamaServer, llama_server, require_binary

pytestmark = pytest.mark.realserver

MODELS = ("tiny-a", "tiny-b", "tiny-c")


@pytest.fixture(scope="module")
def binary() -> Path:
    return require_binary()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("gguf", reason="the model generator needs the gguf package (pip install gguf)")
    folder = tmp_path_factory.mktemp("gguf")
    return {
        name: write_model(folder / f"{name}.gguf", PRESETS["tiny"], seed=index) for index, name in enumerate(MODELS)
    }


@pytest.fixture
def models_dir(tmp_path: Path, model_files: dict[str, Path]) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for path in model_files.values():
        shutil.copy(path, folder / path.name)
    return folder


StartRouter = Callable[..., LlamaServer]


@pytest.fixture
def start_router(binary: Path, models_dir: Path, tmp_path: Path) -> Iterator[StartRouter]:
    """Start routers on demand; all are stopped by PID when the test ends."""
    with contextlib.ExitStack() as stack:

        def start(models_max: int = 2, *extra: str) -> LlamaServer:
            router = llama_server(
                binary,
                tmp_path,
                "--models-dir",
                str(models_dir),
                "--models-max",
                str(models_max),
                "--no-models-autoload",
                *extra,
            )
            return stack.enter_context(router)

        yield start


def config(write_config: Callable[[str], Path], url: str, extra: str = "") -> str:
    return str(write_config(f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{url}"\n{extra}'))


# -- status ------------------------------------------------------------------------------------------


def test_status_shows_the_router_its_limit_and_nothing_loaded(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router(models_max=2)
    path = config(write_config, server.url)

    result = cli("--config", path, "status", "--json", "--no-hardware")

    assert result.exit_code == 0, result.stderr
    [endpoint] = result.json()["endpoints"]
    assert (endpoint["kind"], endpoint["ok"], endpoint["models"]) == ("llamacpp", True, [])
    assert endpoint["server"]["role"] == "router" and endpoint["server"]["max_models"] == 2
    table = cli("--config", path, "status", "--no-hardware")
    assert "(nothing loaded)" in table.stdout and "keeps at most 2 models loaded" in table.stdout


# -- load ----------------------------------------------------------------------------------------------


def test_load_waits_until_the_server_has_it_loaded(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router()
    path = config(write_config, server.url)

    result = cli("--config", path, "load", "tiny-a", "--no-warm", "--json")

    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["outcome"] == "loaded"
    assert report["resident"]["name"] == "tiny-a" and report["resident"]["state"] == "loaded"
    assert server.state("tiny-a") == "loaded"  # the load returned only once the router said so
    load_step = next(step for step in report["steps"] if step["step"] == "load")
    assert load_step["wall_s"] > 0
    status = cli("--config", path, "status", "--json", "--no-hardware").json()
    [model] = status["endpoints"][0]["models"]
    assert (model["name"], model["state"], model["context_length"]) == ("tiny-a", "loaded", 512)
    assert model["size"] > 0


def test_the_prediction_uses_the_context_the_router_gives_the_model(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router(2, "-c", "768")  # the last --ctx-size wins: every child gets 768
    path = config(write_config, server.url)

    result = cli("--config", path, "load", "tiny-a", "--dry-run", "--json")

    assert result.exit_code == 0, result.stderr
    preview = result.json()
    assert preview["context_length"] == 768
    assert preview["prediction_source"] == "estimate"  # the GGUF header, not the file size
    assert server.loaded() == set()


def test_the_measured_size_is_the_child_process_memory_under_the_routers_context(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path], models_dir: Path
) -> None:
    import json
    import os

    import psutil

    from sourceprep_models.paths import size_book_file

    server = start_router(1, "-c", "768")
    path = config(write_config, server.url)

    result = cli("--config", path, "load", "tiny-a", "--no-warm", "--json")

    assert result.exit_code == 0, result.stderr
    book = json.loads(size_book_file().read_text())
    [(key, remembered)] = book.items()
    assert key.endswith(":tiny-a@768")
    [child] = psutil.Process(server.process.pid).children()
    file_size = os.path.getsize(models_dir / "tiny-a.gguf")
    # A whole llama-server process holds far more than the weights the router reports as meta.size.
    assert remembered > 4 * file_size
    assert remembered > server.models()["tiny-a"]["meta"]["size"]
    status = cli("--config", path, "status", "--json", "--no-hardware").json()
    [model] = status["endpoints"][0]["models"]
    assert model["size"] > 4 * file_size and child.is_running()


def test_load_of_a_model_already_loaded_is_already_loaded(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router()
    assert server.post("/models/load", {"model": "tiny-b"}).status_code == 200
    path = config(write_config, server.url)
    cli("--config", path, "load", "tiny-b", "--no-warm")  # waits for the other client's load to finish

    result = cli("--config", path, "load", "tiny-b", "--no-warm", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["outcome"] == "already-loaded"
    assert server.loaded() == {"tiny-b"}


def test_asking_for_a_bigger_context_warns_that_the_server_fixes_it(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router()
    path = config(write_config, server.url)

    result = cli("--config", path, "load", "tiny-a", "--ctx", "1024", "--no-warm")

    assert result.exit_code == 0, result.stderr
    assert "512-token context, less than the 1024 asked for" in result.stderr
    assert "--ctx-size" in result.stderr
    assert server.loaded() == {"tiny-a"}


def test_unknown_model_exits_3_on_load_and_on_unload(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router()
    path = config(write_config, server.url)

    load = cli("--config", path, "load", "tiny-z", "--no-warm")
    unload = cli("--config", path, "unload", "tiny-z")

    assert load.exit_code == 3 and unload.exit_code == 3
    assert "'tiny-z' not found on endpoint 'llama'" in load.stderr
    assert "did you mean 'tiny-" in load.stderr
    assert "Traceback" not in load.stderr + unload.stderr
    assert server.loaded() == set()


def test_a_gguf_added_after_start_is_found_without_a_restart(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path], models_dir: Path
) -> None:
    server = start_router()
    shutil.copy(models_dir / "tiny-a.gguf", models_dir / "late-comer.gguf")
    path = config(write_config, server.url)

    result = cli("--config", path, "load", "late-comer", "--no-warm")

    assert result.exit_code == 0, result.stderr
    assert server.loaded() == {"late-comer"}


def test_a_model_that_crashes_while_loading_is_a_one_line_error(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path], models_dir: Path
) -> None:
    data = (models_dir / "tiny-a.gguf").read_bytes()
    (models_dir / "broken.gguf").write_bytes(data[: len(data) // 2])  # header intact, tensors cut short
    server = start_router()
    path = config(write_config, server.url)

    result = cli("--config", path, "load", "broken", "--no-warm")

    assert result.exit_code == 1
    assert "failed to load broken" in result.stderr and "exit code" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert server.loaded() == set()


# -- unload --------------------------------------------------------------------------------------------


def test_unload_one_then_all(cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]) -> None:
    server = start_router(models_max=3)
    path = config(write_config, server.url)
    for name in MODELS:
        assert cli("--config", path, "load", name, "--no-warm").exit_code == 0
    assert server.loaded() == set(MODELS)

    one = cli("--config", path, "unload", "tiny-b", "--json")
    assert one.exit_code == 0, one.stderr
    assert server.loaded() == {"tiny-a", "tiny-c"}

    again = cli("--config", path, "unload", "tiny-b")
    assert again.exit_code == 0 and "was not loaded" in again.stderr

    everything = cli("--config", path, "unload", "--all")
    assert everything.exit_code == 0, everything.stderr
    assert server.loaded() == set()


# -- the router's own LRU eviction, and the planner getting there first -----------------------------


def test_eviction_by_models_max_is_visible_in_status(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router(models_max=2)
    path = config(write_config, server.url)
    assert cli("--config", path, "load", "tiny-a", "--no-warm").exit_code == 0
    assert cli("--config", path, "load", "tiny-b", "--no-warm").exit_code == 0

    # Another client loads a third model: the router evicts its least recently used one (servers.md §2.3).
    assert server.post("/models/load", {"model": "tiny-c"}).json() == {"success": True}
    cli("--config", path, "load", "tiny-c", "--no-warm")  # waits until the router reports it loaded

    status = cli("--config", path, "status", "--json", "--no-hardware").json()
    names = {model["name"] for model in status["endpoints"][0]["models"] if model["state"] == "loaded"}
    assert names == {"tiny-b", "tiny-c"}
    assert server.loaded() == {"tiny-b", "tiny-c"}


def test_a_pin_survives_where_the_router_alone_would_evict_it(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router(models_max=2)
    path = config(write_config, server.url, '[models.tiny-a]\nendpoint = "llama"\nalways_available = true\n')
    assert cli("--config", path, "load", "tiny-a", "--no-warm").exit_code == 0
    assert cli("--config", path, "load", "tiny-b", "--no-warm").exit_code == 0

    # tiny-a is the least recently used: the router would evict it. The plan evicts tiny-b instead.
    result = cli("--config", path, "load", "tiny-c", "--no-warm", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["evicted"] == ["tiny-b"]
    assert server.loaded() == {"tiny-a", "tiny-c"}
    status = cli("--config", path, "status", "--json", "--no-hardware").json()
    marks = {m["name"]: (m["pinned"], m["always_available"]) for m in status["endpoints"][0]["models"]}
    assert marks == {"tiny-a": (False, True), "tiny-c": (False, False)}  # the router has no pins; the config does
    assert "loaded (pinned)" in cli("--config", path, "status", "--no-hardware").stdout


def test_a_pipeline_of_swaps_shows_the_servers_real_load_times(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router(models_max=1)
    path = config(write_config, server.url)
    sequence = ["tiny-a", "tiny-b", "tiny-c", "tiny-a"]
    reports = []
    for name in sequence:
        result = cli("--config", path, "load", name, "--no-warm", "--json")
        assert result.exit_code == 0, result.stderr
        reports.append(result.json())
        assert server.loaded() == {name}

    assert [report["evicted"] for report in reports] == [[], ["tiny-a"], ["tiny-b"], ["tiny-c"]]
    for report in reports[1:]:
        steps = [step["step"] for step in report["steps"]]
        assert steps[:3] == ["unload", "wait-for-free", "load"]
    assert all(next(s for s in r["steps"] if s["step"] == "load")["wall_s"] > 0 for r in reports)

    table = cli("--config", path, "load", "tiny-b", "--no-warm")
    assert table.exit_code == 0, table.stderr
    for word in ("unload", "wait-for-free", "load", "verify", "tiny-a", "tiny-b"):
        assert word in table.stdout


# -- servers that are down, or not routers ---------------------------------------------------------------


def test_server_down_exits_4_with_how_to_start_it(cli: CliFn, write_config: Callable[[str], Path]) -> None:
    path = config(write_config, f"http://127.0.0.1:{unused_port()}")

    status = cli("--config", path, "status", "--no-hardware")
    load = cli("--config", path, "load", "tiny-a", "--no-warm")

    assert status.exit_code == 4 and load.exit_code == 4
    assert "cannot reach llama-server" in load.stderr and "llama-server --models-dir" in load.stderr
    assert "(unreachable)" in status.stdout


def test_a_single_model_server_is_listed_as_fixed(
    cli: CliFn, binary: Path, model_files: dict[str, Path], tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    with llama_server(binary, tmp_path, "-m", str(model_files["tiny-a"]), "--alias", "tiny-a") as server:
        path = config(write_config, server.url)

        status = cli("--config", path, "status", "--json", "--no-hardware")
        unload = cli("--config", path, "unload", "tiny-a")
        other = cli("--config", path, "load", "tiny-b", "--no-warm")
        same = cli("--config", path, "load", "tiny-a", "--no-warm", "--json")

    assert status.exit_code == 0, status.stderr
    [endpoint] = status.json()["endpoints"]
    assert endpoint["server"]["role"] == "single-model"
    assert [(m["name"], m["state"]) for m in endpoint["models"]] == [("tiny-a", "fixed")]
    assert unload.exit_code == 1 and "single-model llama-server" in unload.stderr and "router mode" in unload.stderr
    assert other.exit_code == 3 and "serves only 'tiny-a'" in other.stderr
    assert same.exit_code == 0 and same.json()["outcome"] == "already-loaded"


# -- pipelines on the real server ----------------------------------------------------------------------

PIPELINES = """
[models.fast]
name = "tiny-a"
endpoint = "llama"
[models.reason]
name = "tiny-b"
endpoint = "llama"
[models.coder]
name = "tiny-c"
endpoint = "llama"

[pipelines.trace]
stages = [
  { name = "catalogue", model = "fast", prompts = ["hello world, the model"], max_tokens = 8 },
  { name = "group", model = "reason", prompts = ["group the code"], max_tokens = 8 },
  { name = "catalogue-tests", model = "fast", prompts = ["test the code"], max_tokens = 8 },
  { name = "code", model = "coder", prompts = ["write the function"], max_tokens = 8 },
  { name = "summary", model = "fast", prompts = ["answer"], max_tokens = 8 },
]

[pipelines.retrieval]
stages = [
  { name = "query", repeat = 3, stages = [
    { name = "embed", model = "fast", command = "test -n \\"$SOURCEPREP_MODEL\\"" },
    { name = "rerank", model = "reason", prompts = ["rerank"], max_tokens = 4 },
  ] },
]

[pipelines.agent]
stages = [
  { name = "context", model = "fast", prompts = ["context"], max_tokens = 4 },
  { name = "execute", model = "coder", command = "true" },
  { name = "verify", model = "fast", command = "exit 1" },
  { name = "debug", model = "reason", prompts = ["debug"], max_tokens = 4, when = "previous_failed" },
]
"""


@pytest.mark.parametrize("pipeline", ["trace", "retrieval", "agent"])
def test_reference_pipelines_run_as_planned_on_the_real_server(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path], pipeline: str, tmp_path: Path
) -> None:
    server = start_router(models_max=2)
    path = config(write_config, server.url, PIPELINES)

    dry = cli("--config", path, "run-pipeline", pipeline, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    run = cli(
        "--config", path, "run-pipeline", pipeline, "--no-overlap", "--json", "--outputs", str(tmp_path / "out.jsonl")
    )
    assert run.exit_code == 0, run.stderr

    planned = [(row["stage"], row["action"], row["evict"]) for row in dry.json()["stages"]]
    done = [(row["stage"], row["action"], row["evicted"]) for row in run.json()["stages"]]
    if pipeline == "agent":  # debug runs because verify failed; the plan had it as a possible stage
        assert run.json()["stages"][-1]["status"] == "ok"
    assert done == planned
    assert len(server.loaded()) <= 2
    loads = [row for row in run.json()["stages"] if row["action"] == "load"]
    assert loads and all(row["load_s"] > 0 for row in loads)  # the server's real load times
    prompted = [row for row in run.json()["stages"] if row["ttft_s"] is not None]
    assert prompted and all(row["tokens_per_s"] is None or row["tokens_per_s"] > 0 for row in prompted)


def test_trace_pipeline_keeps_the_fast_model_across_the_big_ones(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router(models_max=2)
    path = config(write_config, server.url, PIPELINES)

    run = cli("--config", path, "run-pipeline", "trace", "--no-overlap", "--json")

    assert run.exit_code == 0, run.stderr
    actions = [(row["stage"], row["action"], row["evicted"]) for row in run.json()["stages"]]
    # Under a 2-model cap, tiny-a (used again and again) stays; reason leaves for coder.
    assert actions == [
        ("catalogue", "load", []),
        ("group", "load", []),
        ("catalogue-tests", "hit", []),
        ("code", "load", ["tiny-b"]),
        ("summary", "hit", []),
    ]
    assert server.loaded() == {"tiny-a", "tiny-c"}


# -- bench on the real server ----------------------------------------------------------------------------


def test_bench_measures_real_cold_and_warm_loads(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    # Greedy and past end-of-stream: a random tiny model's first tokens are then the same text on every run,
    # so the time to the first one is measured (sampled, it sometimes ended before any text).
    server = start_router(2, "--temp", "0", "--ignore-eos")
    path = config(write_config, server.url)

    result = cli("--config", path, "bench", "tiny-a", "--json")

    assert result.exit_code == 0, result.stderr
    [row] = result.json()["models"]
    assert row["cold_load_s"] > 0 and row["warm_load_s"] > 0 and row["ttft_s"] > 0
    assert row["cache"] == "cold"  # the router's GGUF is a local file: its pages were dropped first
    assert server.loaded() == {"tiny-a"}


def test_bench_alternation_on_a_one_model_router_recommends_models_max(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router(models_max=1)
    path = config(write_config, server.url)

    result = cli("--config", path, "bench", "tiny-a", "tiny-b", "--alternate", "4", "--json")

    assert result.exit_code == 0, result.stderr
    alternation = result.json()["alternation"]
    assert [call["before_s"] > 0 for call in alternation["calls"]] == [True] * 4
    assert alternation["after_possible"] is False
    assert "--models-max 2" in alternation["recommendation"]
    assert len(server.loaded()) == 1


def test_a_server_that_dies_mid_run_stops_it_resumable_and_resume_finishes_on_a_new_one(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    first = start_router(models_max=2)
    stages = (
        "[pipelines.p]\nstages = [\n"
        '  { name = "one", model = "fast", prompts = ["hello"], max_tokens = 4 },\n'
        f'  {{ name = "crash", model = "reason", command = "kill {first.process.pid}" }},\n'
        '  { name = "three", model = "coder", prompts = ["world"], max_tokens = 4 },\n]\n'
    )
    models = PIPELINES.split("[pipelines.trace]")[0]
    path = config(write_config, first.url, models + stages)

    stopped = cli("--config", path, "run-pipeline", "p")

    assert stopped.exit_code == 4, stopped.stderr
    assert "stage 'three'" in stopped.stderr and "cannot reach llama-server" in stopped.stderr
    assert "--resume" in stopped.stderr and "Traceback" not in stopped.stderr

    second = start_router(models_max=2)
    path = config(write_config, second.url, models + stages.replace(f"kill {first.process.pid}", "true"))
    resumed = cli("--config", path, "run-pipeline", "p", "--resume", "--json")

    assert resumed.exit_code == 0, resumed.stderr
    assert [(row["stage"], row["action"]) for row in resumed.json()["stages"]] == [
        ("one", "resumed"),
        ("crash", "resumed"),
        ("three", "load"),
    ]
    assert "tiny-c" in second.loaded()
