"""Executor overhead per swap: wall time of an Executor swap minus a bare client doing the same
server calls (unload, poll /api/ps until gone, preload), median over 30 swaps each."""

from __future__ import annotations

import time

import httpx

from benchmarks._common import emulator, ms
from sourceprep_models.config.schema import Endpoint
from sourceprep_models.planning.load import Demand, Plan, Resident
from sourceprep_models.providers.base import LoadRequest
from sourceprep_models.providers.ollama import OllamaProvider
from sourceprep_models.swap.executor import Executor
from tests.emulator import EmulatedModel

SWAPS = 30
MODELS = ("a:1b", "b:1b")


def bare_swap(client: httpx.Client, old: str, new: str) -> float:
    started = time.perf_counter()
    client.post("/api/generate", json={"model": old, "keep_alive": 0})
    while any(m["name"] == old for m in client.get("/api/ps").json()["models"]):
        time.sleep(0.01)
    client.post("/api/generate", json={"model": new, "prompt": "", "stream": False})
    return time.perf_counter() - started


def executor_swap(executor: Executor, old: str, new: str) -> float:
    plan = Plan(incoming=Demand(new, new, 1), budget=1, evict=(Resident(old, old, 1),))
    started = time.perf_counter()
    executor.load(LoadRequest(new), plan)
    return time.perf_counter() - started


def main() -> None:
    models = [EmulatedModel(name, file_mib=2) for name in MODELS]
    with emulator(models, gpu_vram_mib=None, unload_delay_s=0.0) as emu:
        client = httpx.Client(base_url=emu.url, timeout=30)
        client.post("/api/generate", json={"model": MODELS[0], "stream": False})
        bare = [bare_swap(client, MODELS[i % 2], MODELS[(i + 1) % 2]) for i in range(SWAPS)]
        provider = OllamaProvider(Endpoint("emu", "ollama", emu.url))
        executor = Executor(provider, poll_interval_s=0.01)
        timed = [executor_swap(executor, MODELS[(i + SWAPS) % 2], MODELS[(i + SWAPS + 1) % 2]) for i in range(SWAPS)]
        provider.close()
        client.close()
    import statistics

    print(f"bare client swap:   {ms(bare)}")
    print(f"executor swap:      {ms(timed)}")
    overhead = statistics.median(timed) - statistics.median(bare)
    print(f"executor overhead:  {overhead * 1000:.2f} ms per swap (difference of medians, {SWAPS} swaps each)")


if __name__ == "__main__":
    main()
