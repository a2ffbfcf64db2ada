"""`sourceprep-models status --json` wall time against the emulator, beside `import typer, httpx`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks._common import emulator, ms
from tests.emulator import EmulatedModel

RUNS = 10


def wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    command = str(Path(sys.executable).parent / "sourceprep-models")
    with emulator([EmulatedModel("qwen3:4b"), EmulatedModel("llama3.2:3b")], gpu_vram_mib=256) as emu:
        for name in ("qwen3:4b", "llama3.2:3b"):
            httpx.post(f"{emu.url}/api/generate", json={"model": name, "stream": False}, timeout=30)
        env = {**os.environ, "OLLAMA_HOST": emu.url}
        status = [wall([command, "status", "--json"], env) for _ in range(RUNS)]
        imports = [wall([sys.executable, "-c", "import typer, httpx"], env) for _ in range(RUNS)]
    print(f"status --json (2 models loaded): {ms(status)}")
    print(f"python -c 'import typer, httpx': {ms(imports)}")


if __name__ == "__main__":
    main()
