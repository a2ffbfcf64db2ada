"""Overlapped preload, planned: which loads can run during an earlier stage (pure, plain records), and
`run-pipeline --dry-run` / the run itself against the Ollama emulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sourceprep_models.pipeline.plan import preload_during
from sourceprep_models.planning.lookahead import PipelineModel, PipelinePlan, StagePlan, plan_pipeline
from tests.conftest import CliFn
from tests.test_pipeline import emu, sizes, trace_config

__all__ = ["emu"]  # the emulator fixture, shared with the pipeline tests

SIZES = {"fast": 4, "reason": 10, "coder": 8, "pin": 3}


def stage(index: int, model: str, action: str, resident: tuple[str, ...], **extra: Any) -> StagePlan:
    return StagePlan(index, f"s{index}", model, action, resident_after=resident, **extra)


def test_a_load_that_fits_beside_the_previous_stage_runs_during_it() -> None:
    stages = [stage(0, "fast", "load", ("fast",)), stage(1, "reason", "load", ("fast", "reason"))]

    assert preload_during(stages, SIZES, {}, 14, {}) == (None, 0)
    assert preload_during(stages, SIZES, {}, 13, {}) == (None, None)  # 4 + 10 > 13: it waits for its stage


def test_the_pins_and_every_servers_models_count_toward_the_budget() -> None:
    # "pin" is resident on another server all along: 3 + 4 + 10 = 17.
    stages = [stage(0, "fast", "load", ("fast", "pin")), stage(1, "reason", "load", ("fast", "pin", "reason"))]
    groups = {"pin": "other", "fast": "ollama", "reason": "ollama"}

    assert preload_during(stages, SIZES, groups, 17, {}) == (None, 0)
    assert preload_during(stages, SIZES, groups, 16, {}) == (None, None)


def test_a_servers_cap_on_loaded_models_holds_during_the_preload() -> None:
    stages = [stage(0, "fast", "load", ("fast",)), stage(1, "reason", "load", ("fast", "reason"))]
    groups = {"fast": "llama", "reason": "llama"}

    assert preload_during(stages, SIZES, groups, 100, {"llama": 1}) == (None, None)
    assert preload_during(stages, SIZES, groups, 100, {"other": 1}) == (None, 0)
    assert preload_during(stages, SIZES, groups, 100, {}, shared_cap=1) == (None, None)


def test_the_earliest_stage_is_found_across_hits_but_never_past_another_load() -> None:
    stages = [
        stage(0, "fast", "load", ("fast",)),
        stage(1, "reason", "load", ("fast", "reason")),
        stage(2, "fast", "hit", ("fast", "reason")),
        stage(3, "reason", "hit", ("fast", "reason")),
        stage(4, "coder", "load", ("coder", "fast", "reason")),
    ]

    # coder could ride along from stage 1 on (22 <= 22), but stage 1's own load comes first.
    assert preload_during(stages, SIZES, {}, 22, {}) == (None, 0, None, None, 1)


def test_a_load_that_must_evict_or_follows_pins_coming_back_is_not_moved() -> None:
    evicting = [
        stage(0, "reason", "load", ("reason",)),
        stage(1, "coder", "load", ("coder",), evict=("reason",)),
    ]
    assert preload_during(evicting, SIZES, {}, 100, {}) == (None, None)
    restoring = [
        stage(0, "reason", "load", ("reason",), restore_after=("pin",)),
        stage(1, "fast", "load", ("fast", "pin", "reason")),
    ]
    assert preload_during(restoring, SIZES, {}, 100, {}) == (None, None)


def test_it_reads_the_planners_own_plan() -> None:
    models = {key: PipelineModel(key, key, size) for key, size in SIZES.items() if key != "pin"}
    plan = plan_pipeline([("a", "fast"), ("b", "reason"), ("c", "fast"), ("d", "coder")], models, [], 22)
    assert isinstance(plan, PipelinePlan)

    # reason fits beside fast (14); coder fits beside both (22) from stage c on, after reason's own load.
    assert preload_during(plan.stages, SIZES, {}, plan.budget, {}) == (None, 0, None, 1)


def test_the_dry_run_says_where_each_load_happens_and_the_run_does_it(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path]
) -> None:
    size = sizes(cli, write_config, "fast:1b", "reason:14b", "coder:7b")
    # fast + reason fit together; coder needs reason gone, so it loads at its own stage.
    path = str(trace_config(write_config, size["fast:1b"] + size["reason:14b"] + size["coder:7b"] // 2))

    dry = cli("--config", path, "run-pipeline", "trace", "--dry-run", "--json")
    table = cli("--config", path, "run-pipeline", "trace", "--dry-run")

    assert dry.exit_code == 0 and table.exit_code == 0, dry.stderr + table.stderr
    planned = {row["stage"]: row["preload_during"] for row in dry.json()["stages"]}
    assert planned == {"catalogue": None, "group": "catalogue", "catalogue-tests": None, "code": None, "summary": None}
    assert "load (preload during stage catalogue)" in table.stdout
    assert emu.loaded_names() == []

    run = cli("--config", path, "run-pipeline", "trace", "--json")

    assert run.exit_code == 0, run.stderr
    rows = {row["stage"]: row for row in run.json()["stages"]}
    assert [row["action"] for row in rows.values()] == ["load", "preloaded", "hit", "load", "hit"]
    assert rows["group"]["bytes_loaded"] == size["reason:14b"]
    assert run.json()["totals"]["loads"] == 3
    assert emu.load_count == {"fast:1b": 1, "reason:14b": 1, "coder:7b": 1}


def test_no_overlap_keeps_the_old_order(cli: CliFn, emu: Any, write_config: Callable[[str], Path]) -> None:
    size = sizes(cli, write_config, "fast:1b", "reason:14b", "coder:7b")
    path = str(trace_config(write_config, size["fast:1b"] + size["reason:14b"] + size["coder:7b"] // 2))

    dry = cli("--config", path, "run-pipeline", "trace", "--dry-run", "--no-overlap", "--json")
    run = cli("--config", path, "run-pipeline", "trace", "--no-overlap", "--json")

    assert dry.exit_code == 0 and run.exit_code == 0, dry.stderr + run.stderr
    assert all(row["preload_during"] is None for row in dry.json()["stages"])
    assert [row["action"] for row in run.json()["stages"]] == ["load", "load", "hit", "load", "hit"]
    assert all(row["hidden_s"] == 0 for row in run.json()["stages"])


def test_the_run_table_shows_the_preloaded_stage_and_its_hidden_seconds(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path]
) -> None:
    size = sizes(cli, write_config, "fast:1b", "reason:14b", "coder:7b")
    path = str(trace_config(write_config, size["fast:1b"] + size["reason:14b"] + size["coder:7b"] // 2))

    result = cli("--config", path, "run-pipeline", "trace")

    assert result.exit_code == 0, result.stderr
    group = next(line for line in result.stdout.splitlines() if line.startswith("group"))
    assert "preloaded (" in group and "hidden)" in group
    assert "preloaded" not in result.stderr  # the table is data: stdout only
