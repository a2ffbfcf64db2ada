"""One budget per machine: several servers on this machine share its memory, so a load on one may
evict from another, pins hold across servers, and a pipeline is planned for the machine as one.

Two REAL llama-server routers (and the Ollama emulator beside one) on loopback ports, with tiny
generated GGUFs (about 0.6 MB each, about 18 MB as a running llama-server child) and a budget where
one model fits and two do not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliFn
from tests.emulator import EmulatedModel
from tests.realserver.router import LlamaServer, llama_server, require_binary

pytestmark = pytest.mark.realserver

# One tiny model fits, two do not: its child process holds 17-20 MB (0.6 MB of it weights), which
# is what its prediction and its measured size say (benchmarks/llamacpp_sizes.py).
ONE_MODEL_BUDGET_BYTES = 28 * 1024 * 1024
ONE_MODEL_BUDGET = 'budget = "28MiB"\nheadroom = "0"\n'


def two_router_config(
    write: Callable[[str], Path],
    a: LlamaServer,
    b: LlamaServer,
    extra: str = "",
    *,
    memory: str = ONE_MODEL_BUDGET,
    fast: str = "",
) -> str:
    """Endpoints a and b (two routers), ``fast`` (tiny-a) on a, ``coder`` (tiny-b) on b."""
    return str(
        write(
            f'default_endpoint = "a"\n[memory]\n{memory}'
            f'[endpoints.a]\nkind = "llamacpp"\nurl = "{a.url}"\n'
            f'[endpoints.b]\nkind = "llamacpp"\nurl = "{b.url}"\n'
            f'[models.fast]\nname = "tiny-a"\nendpoint = "a"\n{fast}'
            '[models.coder]\nname = "tiny-b"\nendpoint = "b"\n' + extra
        )
    )


PINNED = "always_available = true\n"


def test_a_load_on_one_server_evicts_from_the_other_when_the_machine_is_full(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_router_config(write_config, a, b)
    assert cli("--config", path, "load", "fast").exit_code == 0

    dry = cli("--config", path, "load", "coder", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert dry.json()["evictions"] == [{"model": "tiny-a", "endpoint": "a", "pinned": False}]
    assert a.loaded() == {"tiny-a"} and b.loaded() == set()  # a dry run touches nothing

    result = cli("--config", path, "load", "coder", "--json")

    assert result.exit_code == 0, result.stderr
    assert "evicting tiny-a from a to fit tiny-b on b" in result.stderr
    assert result.json()["evictions"] == [{"model": "tiny-a", "endpoint": "a", "pinned": False}]
    assert (a.loaded(), b.loaded()) == (set(), {"tiny-b"})


def test_the_dry_run_table_names_the_victim_on_the_other_server(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_router_config(write_config, a, b)
    cli("--config", path, "load", "fast")

    dry = cli("--config", path, "load", "coder", "--dry-run")

    rows = [line.split() for line in dry.stdout.splitlines()]
    assert rows[1][:3] == ["tiny-a", "a", "evict"]
    assert rows[2][:3] == ["tiny-b", "b", "load"]


def test_a_pin_on_one_server_is_never_evicted_for_another(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_router_config(write_config, a, b, fast=PINNED)
    assert cli("--config", path, "load", "fast").exit_code == 0

    result = cli("--config", path, "load", "coder")

    assert result.exit_code == 6
    assert "pinned tiny-a" in result.stderr and "nothing was unloaded" in result.stderr
    assert (a.loaded(), b.loaded()) == ({"tiny-a"}, set())


def test_an_allowed_pin_eviction_across_servers_comes_back_on_its_own_server(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_router_config(write_config, a, b, fast=PINNED, memory=ONE_MODEL_BUDGET + "allow_evict_pinned = true\n")
    cli("--config", path, "load", "fast")

    heavy = cli("--config", path, "load", "coder", "--json")
    assert heavy.exit_code == 0, heavy.stderr
    assert heavy.json()["evictions"] == [{"model": "tiny-a", "endpoint": "a", "pinned": True}]
    assert (a.loaded(), b.loaded()) == (set(), {"tiny-b"})

    done = cli("--config", path, "unload", "coder")

    assert done.exit_code == 0, done.stderr
    assert "restored pinned tiny-a" in done.stderr
    assert (a.loaded(), b.loaded()) == ({"tiny-a"}, set())


def test_single_model_means_one_unpinned_model_on_this_machine(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_router_config(write_config, a, b, memory='budget = "200MiB"\nheadroom = "0"\n')
    cli("--config", path, "load", "fast")
    assert cli("--config", path, "load", "tiny-c", "--endpoint", "b").exit_code == 0
    assert (a.loaded(), b.loaded()) == ({"tiny-a"}, {"tiny-c"})  # room for both: nothing left

    result = cli("--config", path, "load", "coder", "--single-model")

    assert result.exit_code == 0, result.stderr
    assert (a.loaded(), b.loaded()) == (set(), {"tiny-b"})


def test_status_shows_the_machine_budget_and_what_its_servers_use(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_router_config(write_config, a, b)
    cli("--config", path, "load", "fast")

    document = cli("--config", path, "status", "--json").json()

    (host,) = document["hosts"]
    used = sum(model["size"] for endpoint in document["endpoints"] for model in endpoint["models"])
    assert (host["name"], host["budget_bytes"], host["endpoints"]) == ("local", ONE_MODEL_BUDGET_BYTES, ["a", "b"])
    assert host["used_bytes"] == used > 0
    assert host["free_bytes"] == ONE_MODEL_BUDGET_BYTES - used
    table = cli("--config", path, "status")
    assert "MACHINE local:" in table.stdout and "servers: a, b" in table.stdout


PIPELINE = """
[pipelines.mixed]
stages = [
  { name = "catalogue", model = "fast", command = "true" },
  { name = "code", model = "coder", command = "true" },
  { name = "summary", model = "fast", command = "true" },
]
"""


def test_a_pipeline_across_two_servers_is_one_plan_within_the_machine_budget(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_router_config(write_config, a, b, PIPELINE)

    dry = cli("--config", path, "run-pipeline", "mixed", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    planned = [(row["stage"], row["endpoint"], row["action"], row["evict"]) for row in dry.json()["stages"]]
    assert planned == [
        ("catalogue", "a", "load", []),
        ("code", "b", "load", ["tiny-a@a"]),
        ("summary", "a", "load", ["tiny-b@b"]),
    ]
    run = cli("--config", path, "run-pipeline", "mixed", "--json")

    assert run.exit_code == 0, run.stderr
    assert [row["evicted"] for row in run.json()["stages"]] == [[], ["tiny-a@a"], ["tiny-b@b"]]
    assert (a.loaded(), b.loaded()) == ({"tiny-a"}, set())


def test_a_stage_that_cannot_fit_beside_a_pin_on_another_server_refuses_the_run(
    cli: CliFn, routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path]
) -> None:
    a, b = routers
    path = two_router_config(write_config, a, b, PIPELINE, fast=PINNED)

    result = cli("--config", path, "run-pipeline", "mixed")

    assert result.exit_code == 6
    assert "stage 'code' on b" in result.stderr
    assert b.loaded() == set()


def test_the_ollama_emulator_and_a_real_router_share_one_budget(
    cli: CliFn,
    ollama_emulator: Callable[..., object],
    model_files: dict[str, Path],
    tmp_path: Path,
    write_config: Callable[[str], Path],
) -> None:
    emulator = ollama_emulator(models=[EmulatedModel("small:1b", file_mib=64)], gpu_vram_mib=512)
    folder = tmp_path / "router-models"
    folder.mkdir()
    (folder / "tiny-a.gguf").symlink_to(model_files["tiny-a"])
    with llama_server(
        require_binary(), tmp_path, "--models-dir", str(folder), "--models-max", "2", "--no-models-autoload"
    ) as router:

        def configure(budget: int) -> str:
            return str(
                write_config(
                    f'[memory]\nbudget = "{budget}"\nheadroom = "0"\n'
                    f'[endpoints.ollama]\nkind = "ollama"\nurl = "{emulator.url}"\n'  # type: ignore[attr-defined]
                    f'[endpoints.router]\nkind = "llamacpp"\nurl = "{router.url}"\n'
                    '[models.small]\nname = "small:1b"\nendpoint = "ollama"\n'
                    '[models.fast]\nname = "tiny-a"\nendpoint = "router"\n'
                )
            )

        first = cli("--config", configure(1024**3), "load", "small", "--json")
        assert first.exit_code == 0, first.stderr
        # Room for the emulator's model as measured (over 64 MiB), or for tiny-a (about 20 MB), never for both.
        path = configure(first.json()["resident"]["size"] + 300_000)

        result = cli("--config", path, "load", "fast", "--json")

        assert result.exit_code == 0, result.stderr
        assert result.json()["evictions"] == [{"model": "small:1b", "endpoint": "ollama", "pinned": False}]
        assert emulator.loaded_names() == []  # type: ignore[attr-defined]
        assert router.loaded() == {"tiny-a"}

        back = cli("--config", path, "load", "small", "--json")
        assert back.exit_code == 0, back.stderr
        assert back.json()["evictions"] == [{"model": "tiny-a", "endpoint": "router", "pinned": False}]
        assert router.loaded() == set()
        assert emulator.loaded_names() == ["small:1b"]  # type: ignore[attr-defined]


def test_two_processes_crossing_between_two_servers_never_deadlock(
    routers: tuple[LlamaServer, LlamaServer], write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    """One process loads on a (evicting from b), the other on b (evicting from a), at the same time, repeatedly."""
    a, b = routers
    path = two_router_config(write_config, a, b)
    env = {**os.environ, "SOURCEPREP_MODELS_CONFIG": path}
    for _round in range(3):
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "sourceprep_models", "load", model],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for model in ("fast", "coder")
        ]
        errors = []
        try:
            for process in processes:
                errors.append(process.communicate(timeout=60)[1])
        finally:
            for process in processes:
                if process.poll() is None:  # a deadlock: end both by PID, then fail below
                    process.kill()
                    process.communicate()
        assert [process.returncode for process in processes] == [0, 0], errors
        assert len(a.loaded()) + len(b.loaded()) == 1  # the budget holds one model: never two at once at rest
