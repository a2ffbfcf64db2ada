"""`run-pipeline` end to end against the Ollama emulator: the plan, the run, prompts and commands,
failure and resume, config edits mid-run, Ctrl-C, and prefetch."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sourceprep_models.warming import pagecache
from tests.conftest import CliFn
from tests.emulator import EmulatedModel

MODELS = [
    EmulatedModel("fast:1b", file_mib=4),
    EmulatedModel("reason:14b", file_mib=10),
    EmulatedModel("coder:7b", file_mib=8),
    EmulatedModel("embed:small", file_mib=2, capabilities=["embedding"]),
    EmulatedModel("rerank:small", file_mib=3),
]
PY = sys.executable


@pytest.fixture
def emu(ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    # CPU-only with a generous count limit: every eviction seen here is the plan's (ollama.md §4.3).
    emulator = ollama_emulator(models=MODELS, gpu_vram_mib=None, max_loaded_models=8, unload_delay_s=0.02)
    monkeypatch.setenv("OLLAMA_HOST", emulator.url)
    return emulator


def sizes(cli: CliFn, write_config: Callable[[str], Path], *names: str) -> dict[str, int]:
    """The tool's own predicted size of each model (what its plans budget with)."""
    path = str(write_config('[memory]\nbudget = "100GiB"\nheadroom = "0"\n'))
    found = {}
    for name in names:
        result = cli("--config", path, "load", name, "--dry-run", "--json")
        assert result.exit_code == 0, result.stderr
        found[name] = int(result.json()["predicted_size"])
    return found


TRACE = """
[models.fast]
name = "fast:1b"
[models.reason]
name = "reason:14b"
[models.coder]
name = "coder:7b"

[pipelines.trace]
stages = [
  {{ name = "catalogue", model = "fast", prompts = ["list the files"] }},
  {{ name = "group", model = "reason", prompts = ["group them"] }},
  {{ name = "catalogue-tests", model = "fast", command = "{command}" }},
  {{ name = "code", model = "coder", prompts = ["write it"] }},
  {{ name = "summary", model = "fast", prompts = ["summarise"] }},
]
"""


def trace_config(write_config: Callable[[str], Path], budget: int, command: str = "true", extra: str = "") -> Path:
    return write_config(TRACE.format(command=command) + f'\n[memory]\nbudget = "{budget}"\nheadroom = "0"\n' + extra)


def test_dry_run_plan_is_what_the_run_then_does(cli: CliFn, emu: Any, write_config: Callable[[str], Path]) -> None:
    size = sizes(cli, write_config, "fast:1b", "reason:14b", "coder:7b")
    # Room for fast + one big model at a time: the big ones swap, fast stays.
    path = str(trace_config(write_config, size["fast:1b"] + size["reason:14b"] + size["coder:7b"] // 2))

    dry = cli("--config", path, "run-pipeline", "trace", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    planned = [(row["stage"], row["action"], row["evict"]) for row in dry.json()["stages"]]
    assert planned == [
        ("catalogue", "load", []),
        ("group", "load", []),
        ("catalogue-tests", "hit", []),
        ("code", "load", ["reason:14b"]),
        ("summary", "hit", []),
    ]
    assert emu.loaded_names() == []  # a dry run touches nothing

    run = cli("--config", path, "run-pipeline", "trace", "--no-overlap", "--json", "--no-prefetch")
    assert run.exit_code == 0, run.stderr
    done = [(row["stage"], row["action"], row["evicted"]) for row in run.json()["stages"]]
    assert done == planned
    assert emu.load_count == {"fast:1b": 1, "reason:14b": 1, "coder:7b": 1}
    assert sorted(emu.loaded_names()) == ["coder:7b", "fast:1b"]
    totals = run.json()["totals"]
    assert totals["loads"] == 3 and totals["stages"] == 5
    # Every second of the run counts: the penalty is the wall clock minus the work, the stages' own swap
    # time plus what the tool spent outside them.
    assert totals["swap_penalty_s"] == pytest.approx(totals["wall_s"] - totals["work_s"], abs=2e-3)
    assert totals["overhead_s"] == pytest.approx(totals["wall_s"] - totals["total_s"], abs=2e-3)
    assert totals["wall_s"] >= totals["total_s"]


def test_a_stage_that_cannot_fit_fails_the_dry_run_naming_it(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path]
) -> None:
    size = sizes(cli, write_config, "reason:14b")
    path = str(trace_config(write_config, size["reason:14b"] - 1))

    result = cli("--config", path, "run-pipeline", "trace", "--dry-run")

    assert result.exit_code == 6
    assert "stage 'group'" in result.stderr and "reason:14b" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_prompts_are_sent_with_the_models_options_and_recorded(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    path = str(
        write_config(
            '[models.fast]\nname = "fast:1b"\ncontext_length = 4096\n'
            '[pipelines.one]\nstages = [{ name = "ask", model = "fast", prompts = ["hello there", "and again"], '
            "max_tokens = 8 }]\n"
        )
    )
    outputs = tmp_path / "out.jsonl"

    result = cli("--config", path, "run-pipeline", "one", "--outputs", str(outputs), "--json")

    assert result.exit_code == 0, result.stderr
    [row] = result.json()["stages"]
    assert row["ttft_s"] is not None and row["tokens_per_s"] is not None
    lines = [json.loads(line) for line in outputs.read_text().splitlines()]
    assert [line["prompt"] for line in lines] == ["hello there", "and again"]
    assert all(line["output"] and line["stage"] == "ask" for line in lines)
    prompts = [r.body for r in emu.requests if r.path == "/api/generate" and r.body.get("prompt")]
    # Same num_ctx as the preload, so the server never reloads for the real traffic (ollama.md §4.7).
    assert [p["options"]["num_ctx"] for p in prompts] == [4096, 4096]
    assert emu.load_count == {"fast:1b": 1}


def test_retrieval_group_keeps_both_models_when_they_fit(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path]
) -> None:
    path = str(
        write_config(
            '[models.embed]\nname = "embed:small"\nkind = "embedding"\n[models.rerank]\nname = "rerank:small"\n'
            "[pipelines.retrieval]\nstages = [\n"
            '  { name = "query", repeat = 3, stages = [ { name = "embed", model = "embed", command = "true" },'
            ' { name = "rerank", model = "rerank", command = "true" } ] },\n]\n'
        )
    )

    result = cli("--config", path, "run-pipeline", "retrieval", "--no-overlap", "--json")

    assert result.exit_code == 0, result.stderr
    stages = result.json()["stages"]
    assert [row["stage"] for row in stages] == [
        "query[1]/embed",
        "query[1]/rerank",
        "query[2]/embed",
        "query[2]/rerank",
        "query[3]/embed",
        "query[3]/rerank",
    ]
    assert [row["action"] for row in stages] == ["load", "load", "hit", "hit", "hit", "hit"]
    assert emu.load_count == {"embed:small": 1, "rerank:small": 1}


def test_a_failing_command_stops_the_run_and_resume_continues(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    marker = tmp_path / "fixed"
    command = f"test -f {marker} || exit 7"
    path = str(trace_config(write_config, 10**12, command=command))

    first = cli("--config", path, "run-pipeline", "trace", "--json")

    assert first.exit_code == 7
    assert "stage 'catalogue-tests' failed (exit status 7)" in first.stderr and "--resume" in first.stderr
    assert [row["status"] for row in first.json()["stages"]] == ["ok", "ok", "failed"]
    assert "Traceback" not in first.stderr

    marker.touch()
    again = cli("--config", path, "run-pipeline", "trace", "--resume", "--json")

    assert again.exit_code == 0, again.stderr
    rows = again.json()["stages"]
    assert [row["stage"] for row in rows] == ["catalogue", "group", "catalogue-tests", "code", "summary"]
    assert [row["action"] for row in rows[:2]] == ["resumed", "resumed"]
    assert rows[2]["status"] == "ok"
    generated = [r.body.get("prompt") for r in emu.requests if r.path == "/api/generate" and r.body.get("prompt")]
    assert generated.count("list the files") == 1  # finished stages were not run again

    finished = cli("--config", path, "run-pipeline", "trace", "--resume")
    assert finished.exit_code == 2 and "finished" in finished.stderr


def test_resume_without_a_saved_run_is_a_usage_error(cli: CliFn, emu: Any, write_config: Callable[[str], Path]) -> None:
    path = str(trace_config(write_config, 10**12))
    result = cli("--config", path, "run-pipeline", "trace", "--resume")
    assert result.exit_code == 2 and "no saved run" in result.stderr


@pytest.mark.parametrize(("ran", "other"), [("a/b", "a_b"), ("a_b", "a/b")])
def test_pipelines_whose_names_look_alike_never_share_a_saved_run(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path], tmp_path: Path, ran: str, other: str
) -> None:
    # Both pipelines have a stage "prepare"; only `ran` runs it, then stops at its failing second stage.
    prepared = tmp_path / "prepared"
    stages = (
        f'stages = [{{ name = "prepare", model = "fast", command = "echo {{}} >> {prepared}" }}, '
        '{ name = "check", model = "fast", command = "exit 3" }]\n'
    )
    path = str(
        write_config(
            '[models.fast]\nname = "fast:1b"\n'
            + f'[pipelines."{ran}"]\n'
            + stages.replace("{}", "ran")
            + f'[pipelines."{other}"]\n'
            + stages.replace("{}", "other")
        )
    )
    first = cli("--config", path, "run-pipeline", ran)
    assert first.exit_code == 3 and "--resume" in first.stderr

    resumed = cli("--config", path, "run-pipeline", other, "--resume")

    assert resumed.exit_code == 2, resumed.stderr
    assert resumed.stderr.strip() == f"error: no saved run of {other!r} to resume; run it without --resume"
    assert prepared.read_text().split() == ["ran"]  # `other` skipped nothing and ran nothing
    again = cli("--config", path, "run-pipeline", ran, "--resume", "--json")
    assert again.exit_code == 3
    assert [row["action"] for row in again.json()["stages"]][:1] == ["resumed"]
    assert prepared.read_text().split() == ["ran"]


def test_saved_runs_of_names_that_differ_only_in_case_are_separate_files_on_any_disk() -> None:
    from sourceprep_models.pipeline.state import state_path

    # macOS and Windows disks fold case: Nightly.json and nightly.json would be one file there.
    names = ["nightly", "Nightly", "NIGHTLY", "a/b", "a_b", "a b", "a:b"]
    files = [state_path(name).name.lower() for name in names]
    assert len(set(files)) == len(names), files
    assert all(name.endswith(".json") and "/" not in name for name in files)


def test_an_invalid_config_edit_pauses_the_run_and_resume_continues(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    good = tmp_path / "good.toml"
    path = trace_config(write_config, 10**12)
    good.write_text(path.read_text())
    # The first stage's command breaks the config file the run is using.
    text = path.read_text().replace(
        '{ name = "catalogue", model = "fast", prompts = ["list the files"] }',
        '{ name = "catalogue", model = "fast", command = "echo \'budget = [\' >> ' + str(path) + '" }',
    )
    path.write_text(text)

    paused = cli("--config", str(path), "run-pipeline", "trace", "--no-overlap")

    assert paused.exit_code == 5
    assert "config changed and is now invalid" in paused.stderr and "--resume" in paused.stderr
    assert "Traceback" not in paused.stderr
    assert emu.load_count == {"fast:1b": 1}  # nothing after the first stage ran

    path.write_text(text)  # fixed again (the same stages, without the garbage line)
    resumed = cli("--config", str(path), "run-pipeline", "trace", "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.json()["stages"][0]["action"] == "resumed"


def test_a_model_renamed_mid_run_is_replanned_and_a_removed_one_pauses(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path]
) -> None:
    path = trace_config(write_config, 10**12)
    original = path.read_text()
    renamed = original.replace('[models.coder]\nname = "coder:7b"', '[models.coder]\nname = "rerank:small"')
    script = path.parent / "rename.py"
    script.write_text(f"import pathlib; pathlib.Path({str(path)!r}).write_text({renamed!r})\n")
    path.write_text(original.replace('command = "true"', f'command = "{PY} {script}"'))

    result = cli("--config", str(path), "run-pipeline", "trace", "--no-overlap", "--json")

    assert result.exit_code == 0, result.stderr
    code = next(row for row in result.json()["stages"] if row["stage"] == "code")
    assert code["model"] == "rerank:small" and code["action"] == "load"
    assert "coder:7b" not in emu.load_count and emu.load_count["rerank:small"] == 1
    assert "re-planning" in result.stderr

    removed = original.replace('[models.coder]\nname = "coder:7b"\n', "")
    script.write_text(f"import pathlib; pathlib.Path({str(path)!r}).write_text({removed!r})\n")
    path.write_text(original.replace('command = "true"', f'command = "{PY} {script}"'))
    paused = cli("--config", str(path), "run-pipeline", "trace", "--no-overlap")
    assert paused.exit_code == 3
    assert "stage 'code'" in paused.stderr and "'coder'" in paused.stderr and "paused" in paused.stderr


AGENT = """
[models.fast]
name = "fast:1b"
[models.coder]
name = "coder:7b"
[pipelines.agent]
stages = [
  {{ name = "context", model = "fast", command = "true" }},
  {{ name = "execute", model = "coder", command = "true" }},
  {{ name = "verify", model = "fast", command = "{verify}" }},
  {{ name = "debug", model = "coder", command = "true", when = "previous_failed" }},
]
"""


@pytest.mark.parametrize(("verify", "debug_status"), [("true", "skipped"), ("exit 3", "ok")])
def test_agent_debug_stage_runs_only_after_a_failure(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path], verify: str, debug_status: str
) -> None:
    path = str(write_config(AGENT.format(verify=verify)))
    result = cli("--config", path, "run-pipeline", "agent", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {row["stage"]: row for row in result.json()["stages"]}
    assert rows["debug"]["status"] == debug_status
    assert rows["verify"]["status"] == ("ok" if verify == "true" else "failed")


def interrupted_heavy_stage(write_config: Callable[[str], Path], tmp_path: Path, budget: int, *, sleep_s: int) -> str:
    """A pipeline fast (pinned) -> reason -> fast whose heavy stage sends Ctrl-C to the CLI (the shell's
    parent) the first time it runs; memory.allow_evict_pinned lets the pin leave for it."""
    once = tmp_path / "interrupted-once"
    interrupt = f"test -f {once} || {{ touch {once}; kill -INT $PPID; sleep {sleep_s}; }}"
    text = (
        '[models.fast]\nname = "fast:1b"\nalways_available = true\n[models.reason]\nname = "reason:14b"\n'
        "[pipelines.p]\nstages = [\n"
        '  { name = "one", model = "fast", command = "true" },\n'
        f'  {{ name = "two", model = "reason", command = "{interrupt}" }},\n'
        '  { name = "three", model = "fast", command = "true" },\n]\n'
        f'[memory]\nbudget = "{budget}"\nheadroom = "0"\nallow_evict_pinned = true\n'
    )
    return str(write_config(text))


def test_ctrl_c_in_a_stage_restores_pins_and_can_resume(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    size = sizes(cli, write_config, "fast:1b", "reason:14b")
    # `fast` is pinned but must leave for `reason` (policy allows it); Ctrl-C arrives during `reason`'s stage.
    budget = size["reason:14b"] + size["fast:1b"] // 2
    path = interrupted_heavy_stage(write_config, tmp_path, budget, sleep_s=5)

    result = cli("--config", path, "run-pipeline", "p")

    assert result.exit_code == 130
    assert "interrupted" in result.stderr and "--resume" in result.stderr
    assert "fast:1b" in emu.loaded_names()  # the pin is back

    resumed = cli("--config", path, "run-pipeline", "p", "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    first = resumed.json()["stages"][0]
    assert (first["stage"], first["action"]) == ("one", "resumed")
    assert [row["status"] for row in resumed.json()["stages"]] == ["ok", "ok", "ok"]
    assert "fast:1b" in emu.loaded_names()


def test_the_next_models_weights_are_prefetched_while_a_stage_works(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path]
) -> None:
    blob = emu.blob_path("reason:14b")
    pagecache.drop(blob)
    if pagecache.residency(blob).fraction is None:
        pytest.skip("page-cache residency cannot be measured on this platform (hardware.md §5.2)")
    # The first stage's work lasts until the prefetch has put reason's weights in the page cache.
    wait = (
        f'{PY} -c \\"import time, pathlib; from sourceprep_models.warming import pagecache; '
        f"p = pathlib.Path('{blob}'); "
        "end = time.monotonic() + 20; "
        "exec('while time.monotonic() < end and (pagecache.residency(p).fraction or 0) < 0.9: time.sleep(0.01)')\\\""
    )
    path = str(
        write_config(
            '[models.fast]\nname = "fast:1b"\n[models.reason]\nname = "reason:14b"\n'
            f'[pipelines.p]\nstages = [\n  {{ name = "one", model = "fast", command = "{wait}" }},\n'
            '  { name = "two", model = "reason", command = "true" },\n]\n'
        )
    )

    result = cli("--config", path, "run-pipeline", "p", "--no-overlap", "--json")

    assert result.exit_code == 0, result.stderr
    two = result.json()["stages"][1]
    assert two["prefetched"] is True and two["cache"] == "warm"


def test_a_pin_evicted_for_a_heavy_stage_comes_back_right_after_it(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path]
) -> None:
    size = sizes(cli, write_config, "reason:14b", "coder:7b")
    budget = max(size.values()) + 1  # reason (and coder) fit only with the pinned fast gone
    path = str(
        write_config(
            '[models.fast]\nname = "fast:1b"\nalways_available = true\n[models.reason]\nname = "reason:14b"\n'
            '[models.coder]\nname = "coder:7b"\n'
            "[pipelines.p]\nstages = [\n"
            '  { name = "think", model = "reason", command = "true" },\n'
            '  { name = "write", model = "coder", command = "true" },\n]\n'
            f'[memory]\nbudget = "{budget}"\nheadroom = "0"\nallow_evict_pinned = true\n'
        )
    )
    assert cli("--config", path, "load", "fast:1b").exit_code == 0

    dry = cli("--config", path, "run-pipeline", "p", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    think, write = dry.json()["stages"]
    assert (think["evict"], think["restore_after"]) == (["fast:1b"], [])  # coder needs the room too
    assert (write["evict"], write["restore_after"]) == (["reason:14b"], ["fast:1b"])

    result = cli("--config", path, "run-pipeline", "p", "--json")

    assert result.exit_code == 0, result.stderr
    rows = result.json()["stages"]
    assert rows[0]["evicted"] == ["fast:1b"] and rows[0]["restored"] == []
    assert rows[1]["restored"] == ["fast:1b"] and "coder:7b" in rows[1]["evicted"]
    assert emu.loaded_names() == ["fast:1b"]  # the pin is back, in the room the heavy models left


def test_without_the_policy_a_pin_in_the_way_refuses_the_run_before_it_starts(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path]
) -> None:
    size = sizes(cli, write_config, "fast:1b", "reason:14b")
    path = str(
        write_config(
            '[models.fast]\nname = "fast:1b"\nalways_available = true\n[models.reason]\nname = "reason:14b"\n'
            '[pipelines.p]\nstages = [{ name = "think", model = "reason", command = "true" }]\n'
            f'[memory]\nbudget = "{size["reason:14b"] + 1}"\nheadroom = "0"\n'
        )
    )
    assert cli("--config", path, "load", "fast:1b").exit_code == 0
    loads = dict(emu.load_count)

    result = cli("--config", path, "run-pipeline", "p")

    assert result.exit_code == 6
    assert "stage 'think'" in result.stderr and "allow_evict_pinned" in result.stderr
    assert emu.load_count == loads and emu.loaded_names() == ["fast:1b"]


def test_prompts_file_report_file_and_the_timing_table(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    path = write_config(
        '[models.fast]\nname = "fast:1b"\n[models.reason]\nname = "reason:14b"\n'
        "[pipelines.p]\nstages = [\n"
        '  { name = "ask", model = "fast", prompts_file = "prompts/ask.jsonl", max_tokens = 4 },\n'
        '  { name = "think", model = "reason", prompts = ["why"], max_tokens = 4 },\n]\n'
    )
    (path.parent / "prompts").mkdir()
    (path.parent / "prompts" / "ask.jsonl").write_text('{"prompt": "first"}\n"second"\n')
    report = tmp_path / "reports" / "run.json"

    table = cli("--config", str(path), "run-pipeline", "p", "--report", str(report), "--outputs", str(tmp_path / "o"))

    assert table.exit_code == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == ["STAGE", "MODEL", "ACTION", "UNLOAD", "LOAD", "CACHE", "WORK", "TTFT", "TOK/S", "STATUS"]
    assert "swap penalty" in table.stdout and "2 loads" in table.stdout
    assert "p: 2 stages in" in table.stderr and "swapping cost" in table.stderr
    saved = json.loads(report.read_text())
    assert [row["stage"] for row in saved["stages"]] == ["ask", "think"]
    assert saved["totals"]["loads"] == 2
    prompts = [r.body["prompt"] for r in emu.requests if r.path == "/api/generate" and r.body.get("prompt")]
    assert prompts == ["first", "second", "why"]


def test_unknown_pipeline_and_missing_prompts_file(cli: CliFn, emu: Any, write_config: Callable[[str], Path]) -> None:
    path = str(
        write_config('[pipelines.p]\nstages = [{ name = "ask", model = "fast:1b", prompts_file = "missing.jsonl" }]\n')
    )
    unknown = cli("--config", path, "run-pipeline", "nope")
    assert unknown.exit_code == 2 and "no pipeline named 'nope'" in unknown.stderr and "pipelines: p" in unknown.stderr

    missing = cli("--config", path, "run-pipeline", "p")
    assert missing.exit_code == 1 and "cannot read prompts file" in missing.stderr and "missing.jsonl" in missing.stderr
    assert "stage 'ask'" in missing.stderr and "--resume" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_ctrl_c_in_a_heavy_stage_brings_the_pin_back_before_saying_so(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    size = sizes(cli, write_config, "fast:1b", "reason:14b")
    # reason fits only with the pinned fast gone; Ctrl-C arrives during reason's stage.
    path = interrupted_heavy_stage(write_config, tmp_path, size["reason:14b"] + 1, sleep_s=30)

    result = cli("--config", path, "run-pipeline", "p")

    assert result.exit_code == 130
    assert "interrupted; pinned fast:1b restored (listed as loaded); continue with" in result.stderr
    assert "Traceback" not in result.stderr
    assert emu.loaded_names() == ["fast:1b"]  # the heavy model made room for the pin again


def test_a_failing_heavy_stage_brings_the_pin_back(cli: CliFn, emu: Any, write_config: Callable[[str], Path]) -> None:
    size = sizes(cli, write_config, "fast:1b", "reason:14b")
    text = (
        '[models.fast]\nname = "fast:1b"\nalways_available = true\n[models.reason]\nname = "reason:14b"\n'
        "[pipelines.p]\nstages = [\n"
        '  { name = "one", model = "fast", command = "true" },\n'
        '  { name = "two", model = "reason", command = "exit 4" },\n'
        '  { name = "three", model = "fast", command = "true" },\n]\n'
        f'[memory]\nbudget = "{size["reason:14b"] + 1}"\nheadroom = "0"\nallow_evict_pinned = true\n'
    )
    path = str(write_config(text))

    result = cli("--config", path, "run-pipeline", "p")

    assert result.exit_code == 4
    assert "stage 'two' failed (exit status 4); pinned fast:1b restored (listed as loaded); fix it" in result.stderr
    assert emu.loaded_names() == ["fast:1b"]


@pytest.mark.parametrize("option", ["--report", "--outputs", "state"])
def test_an_output_path_that_cannot_be_written_fails_before_anything_loads(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path], tmp_path: Path, option: str
) -> None:
    path = str(
        write_config(
            '[models.fast]\nname = "fast:1b"\n'
            '[pipelines.p]\nstages = [{ name = "ask", model = "fast", prompts = ["hi"], max_tokens = 2 }]\n'
        )
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    args = ["--config", path, "run-pipeline", "p"]
    env = None
    if option == "state":
        env = {"XDG_STATE_HOME": str(blocker / "state")}  # a directory under a regular file
    else:
        args += [option, str(blocker / "out.json")]

    result = cli(*args, env=env)

    assert result.exit_code == (1 if option == "state" else 2)
    [line] = result.stderr.strip().splitlines()
    assert f"{blocker} is not a directory" in line
    assert ("XDG_STATE_HOME" if option == "state" else "name a file in a writable directory") in line
    assert emu.load_count == {}  # nothing was loaded


def test_a_stage_commands_background_children_end_with_its_stage(
    cli: CliFn, emu: Any, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    command = f"sleep 60 > /dev/null 2>&1 & echo $! > {pid_file}"
    path = str(
        write_config(
            '[models.fast]\nname = "fast:1b"\n'
            f'[pipelines.p]\nstages = [{{ name = "bg", model = "fast", command = "{command}" }}]\n'
        )
    )

    result = cli("--config", path, "run-pipeline", "p")

    assert result.exit_code == 0, result.stderr
    child = int(pid_file.read_text())
    assert wait_gone(child), "the stage's background child outlived the run"


def wait_gone(pid: int, limit_s: float = 20.0) -> bool:
    """True once ``pid`` has exited (a zombie counts: it no longer runs); False after ``limit_s``."""
    import time

    import psutil

    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
