"""`sourceprep-models status --json` wall time: against the emulator beside `import typer, httpx`, and
against servers that never answer (plain sockets: one that accepts and stays silent, one that closes
every connection unanswered, one whose full backlog drops the connection attempt), one and four at a
time, with the default status_timeout (3 s): four hung servers should cost what one does, for `status`
and for `doctor`.

    .venv/bin/python -m benchmarks.status_wall [--runs 10] [--hung-runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks._common import emulator, ms
from tests.emulator import EmulatedModel
from tests.test_status_hung import hung_server


def wall(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started, done.returncode


def hung_rows(command: str, runs: int) -> None:
    shapes = {
        "1 silent": ["silent"],
        "4 silent": ["silent"] * 4,
        "4 mixed (2 silent, 1 closer, 1 full backlog)": ["silent", "silent", "closer", "full"],
    }
    print(f"{'hung servers (status_timeout 3s)':<48} {'wall':>40}  exit")
    for label, modes in shapes.items():
        with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="spm-bench-") as tmp:
            servers = [stack.enter_context(hung_server(mode)) for mode in modes]
            config = Path(tmp) / "config.toml"
            config.write_text(
                "".join(
                    f'[endpoints.h{index}]\nkind = "ollama"\nurl = "{server.url}"\n'
                    for index, server in enumerate(servers)
                ),
                encoding="utf-8",
            )
            env = {**os.environ, "SOURCEPREP_MODELS_CONFIG": str(config)}
            for what in (["status", "--json", "--no-hardware"], ["doctor", "--json"]):
                results = [wall([command, *what], env) for _ in range(runs)]
                codes = sorted({code for _, code in results})
                print(f"{what[0] + ', ' + label:<48} {ms([seconds for seconds, _ in results]):>40}  {codes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--hung-runs", type=int, default=3)
    args = parser.parse_args()
    command = str(Path(sys.executable).parent / "sourceprep-models")
    with emulator([EmulatedModel("qwen3:4b"), EmulatedModel("llama3.2:3b")], gpu_vram_mib=256) as emu:
        for name in ("qwen3:4b", "llama3.2:3b"):
            httpx.post(f"{emu.url}/api/generate", json={"model": name, "stream": False}, timeout=30)
        env = {**os.environ, "OLLAMA_HOST": emu.url}
        status = [wall([command, "status", "--json"], env)[0] for _ in range(args.runs)]
        imports = [wall([sys.executable, "-c", "import typer, httpx"], env)[0] for _ in range(args.runs)]
    print(f"status --json (2 models loaded): {ms(status)}")
    print(f"python -c 'import typer, httpx': {ms(imports)}")
    print("(benchmarks.startup measures the two interleaved, with the ratio)")
    print()
    hung_rows(command, args.hung_runs)


if __name__ == "__main__":
    main()
