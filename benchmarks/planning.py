"""The planner's own cost: seconds and memory to plan pipelines of 100 to 10,000 stages over 12 models
(``--models 14 16``: more, where the exact search gives way to the beam).

Pure planning, no server. Pipelines are random but seeded, in two shapes:

  groups  built like the reference pipelines (benchmarks/pipeline_strategies.py): blocks of a trace
          (fast, reason, fast, coder, fast, reason, coder, fast), a retrieval (embed, rerank) x N or an
          agent loop (context, execute, verify, debug, execute-again, verify-again, report), each block's
          roles played by 3 models drawn from the 12 and the block repeated up to stages / 250 times;
  random  every stage's model drawn uniformly from the 12 (no structure to exploit).

The 12 models (1-16 GB, seeded) sit on two servers, "router" capped at 3 loaded models and "ollama"
uncapped, under one 40 GB budget, from an empty machine. Each row is planned in a fresh child process,
--rounds times: seconds (wall) and cpu s are the best plan_pipeline call; peak MB is the child's peak
resident set size (ru_maxrss: interpreter and input included; "base MB" is the same figure just before
planning). On a busy machine, read cpu s.

    .venv/bin/python -m benchmarks.planning [--stages 100 1000 10000] [--shapes groups random]
                                            [--strategies lookahead lru unload-all] [--rounds 3] [--models 12]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import subprocess
import sys
import time

from sourceprep_models.planning.lookahead import PipelineModel, PipelinePlan, plan_pipeline

MODELS = 12
GB = 1000**3
BUDGET = 40 * GB
CAPS = {"router": 3}
SEED = 13

# The reference pipelines' shapes: roles in run order (one letter a role).
TRACE = "ABACABCA"
RETRIEVAL = "AB"
AGENT = "ABCBBCA"


def table(seed: int = SEED, models: int = MODELS) -> dict[str, PipelineModel]:
    rng = random.Random(seed)
    return {
        f"m{i:02}": PipelineModel(f"m{i:02}", f"model-{i}", rng.randint(1, 16) * GB, group=("router", "ollama")[i % 2])
        for i in range(models)
    }


def pipeline(shape: str, count: int, seed: int = SEED, models: int = MODELS) -> list[tuple[str, str]]:
    rng = random.Random(seed * 1_000_003 + count)
    keys = sorted(table(seed, models))
    if shape == "random":
        return [(f"s{i}", rng.choice(keys)) for i in range(count)]
    out: list[str] = []
    most = max(1, count // 250)  # block repeats: up to 40 at 10,000 stages, none at 100
    while len(out) < count:
        template = rng.choice((TRACE, RETRIEVAL * rng.randint(2, 10), AGENT))
        roles = dict(zip("ABC", rng.sample(keys, 3), strict=True))
        out += [roles[role] for role in template] * rng.randint(1, most)
    return [(f"s{i}", key) for i, key in enumerate(out[:count])]


def measure(shape: str, count: int, strategy: str, rounds: int, size: int = MODELS) -> dict[str, object]:
    """Plan one pipeline ``rounds`` times in this process; the best wall and CPU seconds, the peak RSS."""
    models, stages = table(models=size), pipeline(shape, count, models=size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    walls, cpus = [], []
    for _ in range(rounds):
        started, cpu = time.perf_counter(), time.process_time()
        plan = plan_pipeline(stages, models, [], BUDGET, strategy=strategy, max_models=CAPS)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    assert isinstance(plan, PipelinePlan), plan
    return {
        "seconds": min(walls),
        "cpu": min(cpus),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "base_mb": base,
        "loads": plan.loads,
        "bytes": plan.bytes_loaded,
        "exact": plan.exact,
        "models": len({key for _, key in stages}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--shapes", nargs="+", default=["groups", "random"])
    parser.add_argument("--strategies", nargs="+", default=["lookahead", "lru", "unload-all"])
    parser.add_argument("--rounds", type=int, default=3, help="plans per row; the best seconds are shown")
    parser.add_argument("--models", type=int, nargs="+", default=[MODELS], help="models in the table (>12: beam)")
    parser.add_argument("--one", nargs=3, metavar=("SHAPE", "STAGES", "STRATEGY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        shape, count, strategy = args.one
        print(json.dumps(measure(shape, int(count), strategy, args.rounds, args.models[0])))
        return
    columns = "stages models shape   strategy     seconds   cpu s  peak MB  base MB  loads bytes (GB) exact"
    print(columns)
    print("-" * len(columns))
    for size, count, shape, strategy in itertools.product(args.models, args.stages, args.shapes, args.strategies):
        command = [sys.executable, "-m", "benchmarks.planning", "--one", shape, str(count), strategy]
        command += ["--rounds", str(args.rounds), "--models", str(size)]
        row = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        figures = f"{row['seconds']:>7.3f} {row['cpu']:>7.3f} {row['peak_mb']:>8.1f} {row['base_mb']:>8.1f}"
        plan = f"{row['loads']:>6} {row['bytes'] / GB:>10.0f} {row['exact']}"
        print(f"{count:>6} {row['models']:>6} {shape:<7} {strategy:<11} {figures} {plan}", flush=True)


if __name__ == "__main__":
    main()
