"""Executor overhead per swap: wall time of an Executor swap minus a bare client doing the same
server calls, median over 30 swaps each (the two interleaved on the real router).

Emulator (Ollama): unload, poll /api/ps until gone, preload.
Real llama-server router (``--real``): POST /models/unload, poll GET /models every 10 ms until the
old model is unloaded, POST /models/load, poll every 10 ms until the new one is loaded. The
executor is built as the CLI builds it (default poll) and swaps through the llama.cpp provider.

    .venv/bin/python -m benchmarks.swap_overhead [--real] [--swaps 30] [--preset tiny|50M]
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from benchmarks._common import emulator, ms
from sourceprep_models.config.schema import Endpoint
from sourceprep_models.planning.load import Demand, Plan, Resident
from sourceprep_models.providers.base import LoadRequest
from sourceprep_models.providers.llamacpp_events import LoadWatch
from sourceprep_models.providers.ollama import OllamaProvider
from sourceprep_models.swap.executor import Executor, Step
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


def status_of(client: httpx.Client, name: str) -> str:
    return str(next(m["status"]["value"] for m in client.get("/models").json()["data"] if m["id"] == name))


def bare_router_swap(client: httpx.Client, old: str, new: str, marks: dict[str, float]) -> float:
    started = time.perf_counter()
    client.post("/models/unload", json={"model": old})
    while status_of(client, old) != "unloaded":
        time.sleep(0.01)
    marks["released"] = time.monotonic()
    client.post("/models/load", json={"model": new})
    while status_of(client, new) != "loaded":
        time.sleep(0.01)
    marks["loaded"] = time.monotonic()
    return time.perf_counter() - started


def lag(watch: LoadWatch, marks: dict[str, float], old: str, new: str) -> tuple[float, float]:
    """How long after the router's own "unloaded" and "loaded" events the swap saw each (seconds)."""
    seen: dict[str, float] = {}
    while "loaded" not in seen:
        event = watch.next(5.0)
        if event is None:
            raise SystemExit("the router's event stream went quiet")
        if (event.model, event.status) == (old, "unloaded"):
            seen["released"] = event.at
        elif (event.model, event.status) == (new, "loaded"):
            seen["loaded"] = event.at
    return marks["released"] - seen["released"], marks["loaded"] - seen["loaded"]


def real(swaps: int, preset: str) -> None:
    from benchmarks._common import real_server_workdir
    from sourceprep_models.providers.llamacpp import LlamaCppProvider
    from tests.realserver.make_gguf import PRESETS, write_model
    from tests.realserver.router import llama_server

    names = ("swap-a", "swap-b")
    with real_server_workdir("swap-overhead-") as (binary, work):
        for seed, name in enumerate(names):
            write_model(work / "models" / f"{name}.gguf", PRESETS[preset], seed=seed)
        args = ("--models-dir", str(work / "models"), "--models-max", "2", "--no-models-autoload")
        with llama_server(binary, work, *args) as srv:
            client = httpx.Client(base_url=srv.url, timeout=60)
            provider = LlamaCppProvider(Endpoint("bench", "llamacpp", srv.url))
            marks: dict[str, float] = {}
            on_step = {"wait-for-free": "released", "load": "loaded"}

            def mark(step: Step) -> None:
                if step.step in on_step:
                    marks[on_step[step.step]] = time.monotonic()

            executor = Executor(provider, on_step=mark)  # as Machine.executor builds it for the CLI
            client.post("/models/load", json={"model": names[0]})
            while status_of(client, names[0]) != "loaded":
                time.sleep(0.01)
            watch = LoadWatch.open(httpx.Client(base_url=srv.url), {})
            assert watch is not None, "this router has no /models/sse"
            bare: list[float] = []
            timed: list[float] = []
            lags: dict[str, list[float]] = {"bare release": [], "bare load": [], "exec release": [], "exec load": []}
            for _ in range(swaps):  # interleaved: both see the same machine load
                bare.append(bare_router_swap(client, names[0], names[1], marks))
                release, load = lag(watch, marks, names[0], names[1])
                lags["bare release"].append(release)
                lags["bare load"].append(load)
                timed.append(executor_swap(executor, names[1], names[0]))
                release, load = lag(watch, marks, names[1], names[0])
                lags["exec release"].append(release)
                lags["exec load"].append(load)
            watch.close()
            provider.close()
            client.close()
    report(f"real llama-server router, {preset} models", bare, timed)
    print("seen after the router's own event (its /models/sse, read by a separate listener):")
    for label, values in lags.items():
        print(f"  {label:>13}: {ms(values)}")


def report(label: str, bare: list[float], timed: list[float]) -> None:
    print(label)
    print(f"bare client swap:   {ms(bare)}")
    print(f"executor swap:      {ms(timed)}")
    overhead = statistics.median(timed) - statistics.median(bare)
    print(f"executor overhead:  {overhead * 1000:.2f} ms per swap (difference of medians, {len(bare)} swaps each)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--real", action="store_true", help="on a real llama-server router instead of the emulator")
    parser.add_argument("--swaps", type=int, default=SWAPS)
    parser.add_argument("--preset", default="tiny", choices=("tiny", "50M", "500M"))
    args = parser.parse_args()
    if args.real:
        real(args.swaps, args.preset)
    else:
        emulated()


def emulated() -> None:
    models = [EmulatedModel(name, file_mib=2) for name in MODELS]
    with emulator(models, gpu_vram_mib=None, unload_delay_s=0.0) as emu:
        client = httpx.Client(base_url=emu.url, timeout=30)
        client.post("/api/generate", json={"model": MODELS[0], "stream": False})
        bare = [bare_swap(client, MODELS[i % 2], MODELS[(i + 1) % 2]) for i in range(SWAPS)]
        provider = OllamaProvider(Endpoint("emu", "ollama", emu.url))
        executor = Executor(provider)  # as Machine.executor builds it for the CLI
        timed = [executor_swap(executor, MODELS[(i + SWAPS) % 2], MODELS[(i + SWAPS + 1) % 2]) for i in range(SWAPS)]
        provider.close()
        client.close()
    report("Ollama emulator", bare, timed)


if __name__ == "__main__":
    main()
