"""A pipeline's own cost per stage (wall clock minus the stages' work, over the number of stages), for
pipelines of 40, 100, 300 and 600 written-out stages of `command = "true"` on one emulated Ollama model.

The work is what the stage commands take (spawning `true`); everything else is the tool: planning,
the config check between stages, the swap, the run state it writes after each stage, the report.
Also printed: the run state's bytes on disk after the run and what one stage adds to them.

    .venv/bin/python -m benchmarks.pipeline_cost [--sizes 40,100,300,600] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import emulator
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="40,100,300,600")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
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
