"""Overlapped preload on a REAL llama-server router: the next stage's model loads while a stage works.

Part 1, two models that fit side by side: stage 1 works 3 s on a 54 MB model, stage 2's model is about
900 MB and cold (dropped from the page cache before every run). Stage 2's swap time (unload + warm + load
in its row) and the run's wall clock, with --overlap beside --no-overlap (with and without the page-cache
prefetch that --no-overlap otherwise gives). Done when stage 2's swap with overlap is at most 0.25x
--no-overlap's, and the wall clock drops by at least half of the load time.

Part 2, the reference pipelines (trace, retrieval, agent from models.example.toml) on tiny models with
every stage working 2 s and a budget where all three models fit together: wall clock from the first stage's
work to the last stage's end (the report's ``stages_wall_s``: planning and the first model's load, before any
work, are left out) over the sum of stage work, with --overlap, --no-overlap and the four strategies.

    .venv/bin/python -m benchmarks.overlap [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import real_server_workdir
from benchmarks.pipeline_strategies import PIPELINES
from sourceprep_models.warming import pagecache
from tests.realserver.make_gguf import PRESETS, write_model
from tests.realserver.router import llama_server

BIG = replace(PRESETS["500M"], n_layer=35)  # about 900 MB
TWO = """
[models.small]
name = "small"
endpoint = "llama"
[models.big]
name = "big"
endpoint = "llama"
[pipelines.two]
stages = [
  { name = "one", model = "small", command = "sleep 3" },
  { name = "two", model = "big", command = "true" },
]
"""
PART1 = [
    ("--overlap", ["--overlap"]),
    ("--no-overlap", ["--no-overlap", "--no-prefetch", "--no-warm"]),
    ("--no-overlap + prefetch", ["--no-overlap"]),
]
PART2 = [
    ("lookahead --overlap", ["--overlap"]),
    ("lookahead --no-overlap", ["--no-overlap"]),
    *((f"{name} --no-overlap", ["--no-overlap", "--strategy", name]) for name in ("lru", "ollama", "unload-all")),
    ("unload-all --overlap", ["--strategy", "unload-all"]),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with real_server_workdir("overlap-") as (binary, work):
        models = work / "models"
        files = [write_model(models / "small.gguf", PRESETS["50M"], seed=1), write_model(models / "big.gguf", BIG)]
        files += [write_model(models / f"m-{name}.gguf", seed=i) for i, name in enumerate(("fast", "reason", "coder"))]
        print(f"big model: {files[1].stat().st_size / 1e6:.0f} MB; dropping page cache permitted: ", end="")
        print(pagecache.drop_all_caches())
        flags = ("--models-dir", str(models), "--models-max", "0", "--no-models-autoload")
        with llama_server(binary, work, *flags) as srv:
            config = work / "config.toml"
            config.write_text(
                f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{srv.url}"\n[memory]\nbudget = "100GiB"\n'
                'headroom = "0"\n' + TWO + PIPELINES.replace("sleep 0.3", "sleep 2")
            )
            env = dict(os.environ, SOURCEPREP_MODELS_CONFIG=str(config), XDG_STATE_HOME=str(work / "state"))
            part1(srv.url, files, env, args.rounds)
            part2(srv.url, files, env, args.rounds)


def part1(url: str, files: list[Path], env: dict[str, str], rounds: int) -> None:
    print("\nPart 1: stage 1 works 3 s, stage 2's ~900 MB model cold (medians of", rounds, "rounds, interleaved)")
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in PART1}
    for _ in range(rounds):
        for label, flags in PART1:
            results[label].append(run_once(url, files, env, "two", flags))
    print(f"{'run':<24} {'stage 2 swap s':>14} {'hidden s':>9} {'wall s':>7} {'action':>10}")
    for label, runs in results.items():
        swap = statistics.median(swap_s(r["stages"][1]) for r in runs)
        hidden = statistics.median(r["stages"][1]["hidden_s"] for r in runs)
        wall = statistics.median(r["totals"]["wall_s"] for r in runs)
        print(f"{label:<24} {swap:>14.3f} {hidden:>9.3f} {wall:>7.2f} {runs[0]['stages'][1]['action']:>10}")
    overlap, plain = results["--overlap"], results["--no-overlap"]
    load = statistics.median(swap_s(r["stages"][1]) for r in plain)
    ratio = statistics.median(swap_s(r["stages"][1]) for r in overlap) / load
    saved = statistics.median(r["totals"]["wall_s"] for r in plain) - statistics.median(
        r["totals"]["wall_s"] for r in overlap
    )
    print(f"stage 2 swap, overlap / no-overlap: {ratio:.3f} (target <= 0.25)")
    print(f"wall clock saved: {saved:.2f} s of a {load:.2f} s load ({saved / load:.2f}; target >= 0.5)")


def part2(url: str, files: list[Path], env: dict[str, str], rounds: int) -> None:
    print(f"\nPart 2: reference pipelines, every stage working 2 s, all models fit (medians of {rounds} rounds)")
    print(f"{'pipeline':<10} {'run':<24} {'loads':>5} {'swap s':>7} {'work s':>7} {'wall s':>7} {'wall/work':>9}")
    for pipeline in ("trace", "retrieval", "agent"):
        for label, flags in PART2:
            runs = [run_once(url, files, env, pipeline, flags) for _ in range(rounds)]
            swap = statistics.median(sum(swap_s(row) for row in r["stages"]) for r in runs)
            work = statistics.median(r["totals"]["work_s"] for r in runs)
            wall = statistics.median(r["totals"]["wall_s"] for r in runs)
            ratio = statistics.median(r["totals"]["stages_wall_s"] / r["totals"]["work_s"] for r in runs)
            loads = runs[0]["totals"]["loads"]
            print(f"{pipeline:<10} {label:<24} {loads:>5} {swap:>7.2f} {work:>7.2f} {wall:>7.2f} {ratio:>9.3f}")


def swap_s(row: dict[str, Any]) -> float:
    return float(row["unload_s"] + row["load_s"] + row["warm_s"])


def run_once(url: str, files: list[Path], env: dict[str, str], pipeline: str, flags: list[str]) -> dict[str, Any]:
    """From nothing loaded and a cold page cache."""
    for item in httpx.get(f"{url}/models", timeout=10).json()["data"]:
        if item["status"]["value"] == "loaded":
            httpx.post(f"{url}/models/unload", json={"model": item["id"]}, timeout=30)
    while any(i["status"]["value"] != "unloaded" for i in httpx.get(f"{url}/models", timeout=10).json()["data"]):
        time.sleep(0.02)
    pagecache.drop_all_caches()
    for path in files:
        pagecache.drop(path)
    command = [sys.executable, "-m", "sourceprep_models", "run-pipeline", pipeline, "--json", *flags]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    report: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
    # The agent pipeline's verify stage fails on purpose (its debug stage runs): exit 0 at the end.
    if done.returncode != 0:
        raise SystemExit(f"{pipeline} {flags} failed ({done.returncode}): {done.stderr.strip()}")
    return report


if __name__ == "__main__":
    main()
