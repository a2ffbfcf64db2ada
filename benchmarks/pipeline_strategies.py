"""The reference pipelines under one memory budget, with four eviction strategies, on a REAL
llama-server router and generated models of about 500 MB each.

Strategies (all executed by the same runner, so only the eviction order differs):
  unload-all  unload everything before every stage (the usual hand-written pipeline)
  ollama      Ollama's own order: evict the model whose keep_alive expires first (ollama.md §4)
  lru         least recently used first (llama.cpp router, oMLX)
  lookahead   ours: the plan over the whole run; run like the others (no page-cache warming), then with
              prefetch of the next model during each stage and warm-before-load

Each run starts with nothing loaded and the page cache dropped (when permitted). Each stage's work
is a fixed 0.3 s command, so prefetch has something to overlap with. Reported per run: loads, bytes
loaded, swap seconds (unload + warm + load), the run's total and its swap penalty.

    .venv/bin/python -m benchmarks.pipeline_strategies [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks._common import real_server_workdir
from sourceprep_models.warming import pagecache
from tests.realserver.make_gguf import PRESETS, write_model
from tests.realserver.router import llama_server

WORK = "sleep 0.3"
PIPELINES = f"""
[models.fast]
name = "m-fast"
endpoint = "llama"
keep_alive = "30m"
[models.reason]
name = "m-reason"
endpoint = "llama"
keep_alive = "5m"
[models.coder]
name = "m-coder"
endpoint = "llama"
keep_alive = "10m"

[pipelines.trace]
stages = [
  {{ name = "catalogue", model = "fast", command = "{WORK}" }},
  {{ name = "group", model = "reason", command = "{WORK}" }},
  {{ name = "catalogue-tests", model = "fast", command = "{WORK}" }},
  {{ name = "code", model = "coder", command = "{WORK}" }},
  {{ name = "summarise", model = "fast", command = "{WORK}" }},
  {{ name = "review", model = "reason", command = "{WORK}" }},
  {{ name = "fix", model = "coder", command = "{WORK}" }},
  {{ name = "final", model = "fast", command = "{WORK}" }},
]

[pipelines.retrieval]
stages = [
  {{ name = "query", repeat = 5, stages = [
    {{ name = "embed", model = "fast", command = "{WORK}" }},
    {{ name = "rerank", model = "reason", command = "{WORK}" }},
  ] }},
]

[pipelines.agent]
stages = [
  {{ name = "context", model = "fast", command = "{WORK}" }},
  {{ name = "execute", model = "coder", command = "{WORK}" }},
  {{ name = "verify", model = "reason", command = "{WORK}; exit 1" }},
  {{ name = "debug", model = "coder", command = "{WORK}", when = "previous_failed" }},
  {{ name = "execute-again", model = "coder", command = "{WORK}" }},
  {{ name = "verify-again", model = "reason", command = "{WORK}" }},
  {{ name = "report", model = "fast", command = "{WORK}" }},
]
"""
# (strategy, tool warming on): the baselines run as the servers would, with no page-cache warming;
# ours runs that way too (the eviction order alone), then with prefetch and warm-before-load.
RUNS = [
    ("unload-all", False),
    ("ollama", False),
    ("lru", False),
    ("lookahead", False),
    ("lookahead", True),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with real_server_workdir("strategies-") as (binary, work):
        models = work / "models"
        files = [
            write_model(models / f"m-{name}.gguf", PRESETS["500M"], seed=i)
            for i, name in enumerate(("fast", "reason", "coder"))
        ]
        size = files[0].stat().st_size
        # Room for two of the three models (plus a little for their KV caches), not three.
        budget = int(size * 2.3)
        print(f"models: 3 x {size:,} bytes; budget {budget:,} bytes (two fit, three do not)")
        with llama_server(
            binary, work, "--models-dir", str(models), "--models-max", "0", "--no-models-autoload"
        ) as server:
            config = work / "config.toml"
            config.write_text(
                f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{server.url}"\n'
                f'[memory]\nbudget = "{budget}"\nheadroom = "0"\n' + PIPELINES
            )
            env = dict(os.environ, SOURCEPREP_MODELS_CONFIG=str(config), XDG_STATE_HOME=str(work / "state"))
            print(f"dropping the page cache permitted: {pagecache.drop_all_caches()}")
            columns = ("loads", "GB loaded", "swap s", "total s", "penalty s")
            print(f"{'pipeline':<10} {'strategy':<22} " + " ".join(f"{c:>9}" for c in columns))
            for pipeline in ("trace", "retrieval", "agent"):
                for strategy, prefetch in RUNS:
                    results = [
                        run_once(server.url, files, env, pipeline, strategy, prefetch) for _ in range(args.rounds)
                    ]
                    label = strategy + (" + prefetch" if prefetch else "")
                    loads = results[0]["loads"]
                    gb = results[0]["bytes_loaded"] / 1e9
                    swap = statistics.median(r["unload_s"] + r["load_s"] + r["warm_s"] for r in results)
                    total = statistics.median(r["total_s"] for r in results)
                    penalty = statistics.median(r["swap_penalty_s"] for r in results)
                    print(
                        f"{pipeline:<10} {label:<22} {loads:>5} {gb:>9.2f} {swap:>7.2f} {total:>8.2f} {penalty:>9.2f}"
                    )


def run_once(
    url: str, files: list[Path], env: dict[str, str], pipeline: str, strategy: str, prefetch: bool
) -> dict[str, float]:
    for item in httpx.get(f"{url}/models", timeout=10).json()["data"]:
        if item["status"]["value"] == "loaded":
            httpx.post(f"{url}/models/unload", json={"model": item["id"]}, timeout=30)
    while any(i["status"]["value"] != "unloaded" for i in httpx.get(f"{url}/models", timeout=10).json()["data"]):
        time.sleep(0.02)
    pagecache.drop_all_caches()
    for path in files:
        pagecache.drop(path)
    command = [sys.executable, "-m", "sourceprep_models", "run-pipeline", pipeline, "--json", "--strategy", strategy]
    if not prefetch:
        command += ["--no-prefetch", "--no-warm"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{pipeline}/{strategy} failed ({done.returncode}): {done.stderr.strip()}")
    totals: dict[str, float] = json.loads(done.stdout)["totals"]
    return totals


if __name__ == "__main__":
    main()
