"""A pipeline's own cost per stage (wall clock minus the stages' work, over the number of stages), for
pipelines of 40, 100, 300 and 600 written-out stages of `command = "true"` on one emulated Ollama model.

The work is what the stage commands take (spawning `true`); everything else is the tool: planning,
the config check between stages, the swap, the run state it writes after each stage, the report.
Also printed: the run state's bytes on disk after the run and what one stage adds to them.

    .venv/bin/python -m benchmarks.pipeline_cost [--sizes 40,100,300,600] [--rounds 3]

With ``--llamacpp``: the gap between one stage's end and the next one's work start (the report's
``work_ended_s``/``work_started_s``) on a REAL llama-server router with every model of the trace pipeline
resident, stages of `sleep 0.01`: the per-stage cost of a planned hit (config check, "is it still loaded",
journal line, stage start).

    .venv/bin/python -m benchmarks.pipeline_cost --llamacpp [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from itertools import pairwise
from pathlib import Path

from benchmarks._common import emulator, ms
from tests.emulator import EmulatedModel


def config_text(stages: int) -> str:
    lines = [f'  {{ name = "s{index}", model = "fast", command = "true" }},' for index in range(stages)]
    return '[models.fast]\nname = "fast:1b"\n[pipelines.long]\nstages = [\n' + "\n".join(lines) + "\n]\n"


def run_once(url: str, stages: int) -> tuple[float, float, int]:
    """(wall - work per stage, work per stage, state bytes) of one run in a fresh state directory."""
    command = str(Path(sys.executable).parent / "sourceprep-models")
    with tempfile.TemporaryDirectory(prefix="spm-cost-") as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(config_text(stages), encoding="utf-8")
        env = {**os.environ, "OLLAMA_HOST": url, "XDG_STATE_HOME": str(Path(tmp) / "state")}
        done = subprocess.run(
            [command, "--config", str(config), "run-pipeline", "long", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        totals = json.loads(done.stdout)["totals"]
        state = sum(path.stat().st_size for path in (Path(tmp) / "state").rglob("*") if path.is_file())
    return (totals["wall_s"] - totals["work_s"]) / stages, totals["work_s"] / stages, state


def llamacpp_gaps(rounds: int) -> None:
    from benchmarks._common import real_server_workdir
    from benchmarks.pipeline_strategies import PIPELINES, WORK
    from tests.realserver.make_gguf import write_model
    from tests.realserver.router import llama_server

    with real_server_workdir("spm-cost-") as (binary, work):
        models = work / "models"
        for seed, name in enumerate(("fast", "reason", "coder")):
            write_model(models / f"m-{name}.gguf", seed=seed)
        flags = ("--models-dir", str(models), "--models-max", "0", "--no-models-autoload")
        with llama_server(binary, work, *flags) as srv:
            config = work / "config.toml"
            config.write_text(
                f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{srv.url}"\n[memory]\nbudget = "100GiB"\n'
                'headroom = "0"\n' + PIPELINES.replace(WORK, "sleep 0.01")
            )
            env = dict(os.environ, SOURCEPREP_MODELS_CONFIG=str(config), XDG_STATE_HOME=str(work / "state"))
            command = [sys.executable, "-m", "sourceprep_models", "run-pipeline", "trace", "--json"]
            subprocess.run(command, env=env, capture_output=True, check=True)  # loads all three
            gaps: list[float] = []
            for _ in range(rounds):
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                rows = json.loads(done.stdout)["stages"]
                assert all(row["action"] == "hit" for row in rows), [row["action"] for row in rows]
                gaps += [after["work_started_s"] - before["work_ended_s"] for before, after in pairwise(rows)]
    print(f"gap between stages (planned hits, real router), {len(gaps)} gaps: {ms(gaps)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="40,100,300,600")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--llamacpp", action="store_true", help="the gap between stages on a real llama-server")
    args = parser.parse_args()
    if args.llamacpp:
        llamacpp_gaps(args.rounds)
        return
    sizes = [int(size) for size in args.sizes.split(",")]
    with emulator([EmulatedModel("fast:1b", file_mib=2)], gpu_vram_mib=64) as emu:
        results: dict[int, list[tuple[float, float, int]]] = {size: [] for size in sizes}
        for _ in range(args.rounds):  # interleaved, so machine load falls on every size alike
            for size in sizes:
                results[size].append(run_once(emu.url, size))
    base = statistics.median(row[0] for row in results[sizes[0]])
    print("| stages | overhead ms/stage (median) | vs first | work ms/stage | state bytes | bytes/stage |")
    for size in sizes:
        overhead = statistics.median(row[0] for row in results[size])
        work = statistics.median(row[1] for row in results[size])
        state = results[size][-1][2]
        print(
            f"| {size} | {overhead * 1000:.2f} | {overhead / base:.2f}x | {work * 1000:.2f} | {state} "
            f"| {state / size:.0f} |"
        )


if __name__ == "__main__":
    main()
