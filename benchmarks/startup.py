"""The command's start-up cost: `status --json`, `--help` and a tab completion beside the floor
`python -c "import typer, httpx"`, measured interleaved (one run of each per round, in turn), so load
from other work on the machine hits every row alike and the ratios stay meaningful on a busy machine.

A minimal Typer app making the same request (one command, one GET) shows what Typer and httpx cost by
themselves. `status --json` asks the test suite's Ollama emulator (two models loaded) and probes the hardware;
`status --json --no-hardware` skips the probe. Each row is the median wall time of a fresh process,
and its CPU time (user + system), which a busy machine disturbs less than the wall time.

    .venv/bin/python -m benchmarks.startup [--rounds 20] [--baseline DIR]

``--baseline DIR`` (a checkout of another revision, e.g. ``git worktree add DIR main``) adds two rows in the
same rounds: ``status --json`` run as ``python -m sourceprep_models`` from DIR and from this tree, so a
change's before and after meet the same load.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks._common import emulator
from tests.emulator import EmulatedModel

# The smallest Typer command doing the same request: one command with a --json flag, one plain-http GET of
# the emulator's /api/ps printed as it came. Typer converts every parameter (its own completion options
# too) through pydantic, which this app pays and `status` does not (cli/plain_values.py).
SMALLEST_TYPER_APP = """
import os, typer, httpx
app = typer.Typer(add_completion=True)
@app.command()
def status(json_output: bool = typer.Option(False, "--json")) -> None:
    with httpx.Client(base_url=os.environ["OLLAMA_HOST"], verify=False) as client:
        print(client.get("/api/ps").text)
app()
"""


def wall(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and the child's CPU seconds (user + system: less sensitive to a busy machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--baseline", type=Path, help="a checkout of another revision to compare status --json with")
    args = parser.parse_args()
    command = str(Path(sys.executable).parent / "sourceprep-models")
    complete = {"_SOURCEPREP_MODELS_COMPLETE": "complete_bash", "COMP_WORDS": "sourceprep-models st", "COMP_CWORD": "1"}
    with emulator([EmulatedModel("qwen3:4b"), EmulatedModel("llama3.2:3b")], gpu_vram_mib=256) as emu:
        for name in ("qwen3:4b", "llama3.2:3b"):
            httpx.post(f"{emu.url}/api/generate", json={"model": name, "stream": False}, timeout=30)
        # Children may write .pyc files, as an installed package has them: with PYTHONDONTWRITEBYTECODE set,
        # every run would compile this package from source (about 2x its import time), while typer and
        # httpx, installed by pip, load compiled.
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("SOURCEPREP_MODELS_") and key != "PYTHONDONTWRITEBYTECODE"
        }
        env["OLLAMA_HOST"] = emu.url
        rows: dict[str, tuple[list[str], dict[str, str]]] = {
            'floor: python -c "import typer, httpx"': ([sys.executable, "-c", "import typer, httpx"], env),
            "smallest Typer app, same GET": ([sys.executable, "-c", SMALLEST_TYPER_APP, "--json"], env),
            "status --json": ([command, "status", "--json"], env),
            "status --json --no-hardware": ([command, "status", "--json", "--no-hardware"], env),
            "--help": ([command, "--help"], env),
            "tab completion (bash)": ([command], {**env, **complete}),
        }
        if args.baseline is not None:
            # -P: without it `-m` puts the working directory first on sys.path, ahead of PYTHONPATH, and run
            # from a checkout both rows would import that checkout's package.
            module = [sys.executable, "-P", "-m", "sourceprep_models", "status", "--json"]
            here = Path(__file__).resolve().parent.parent
            rows["status --json, baseline (-m)"] = (module, {**env, "PYTHONPATH": str(args.baseline.resolve())})
            rows["status --json, this tree (-m)"] = (module, {**env, "PYTHONPATH": str(here)})
        times: dict[str, list[float]] = {name: [] for name in rows}
        cpu: dict[str, list[float]] = {name: [] for name in rows}
        for argv, row_env in rows.values():  # warm the page cache and .pyc files first
            wall(argv, row_env)
        for _ in range(args.rounds):
            for name, (argv, row_env) in rows.items():
                seconds, cpu_seconds = wall(argv, row_env)
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
    floor = statistics.median(next(iter(times.values())))
    floor_cpu = statistics.median(next(iter(cpu.values())))
    print(f"{'command':<45} {'median ms':>10} {'min ms':>8} {'x floor':>8} {'cpu ms':>8} {'x floor':>8}")
    for name, values in times.items():
        median, median_cpu = statistics.median(values), statistics.median(cpu[name])
        print(
            f"{name:<45} {median * 1000:>10.1f} {min(values) * 1000:>8.1f} {median / floor:>8.2f}"
            f" {median_cpu * 1000:>8.1f} {median_cpu / floor_cpu:>8.2f}"
        )
    print(f"({args.rounds} interleaved rounds, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
