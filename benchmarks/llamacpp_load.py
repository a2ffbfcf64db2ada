"""Real load times on a real llama-server router for generated 50 MB and 500 MB models, with the page
cache cold and warm, through the tool's own llama.cpp provider (load = POST /models/load, then poll
/models until "loaded"; the same path `sourceprep-models load` takes).

cold    = the file's pages dropped (fadvise after sync; plus /proc/sys/vm/drop_caches when permitted)
warm    = the file was just read by the previous load
warmed  = dropped, then the tool's page-cache warm step (timed separately), then the load

The load returns on the router's own "loaded" event (``/models/sse``) where the router has one, so
``server`` (the router's loading-to-loaded span from its events) and ``load`` should differ only by
the request round trips. Warm throughput is the file's size over the warm load, beside a plain read
of the same file from the page cache (issue 13: at least 0.8x).

The router's own settings decide most of a warm load (the warm-up decode; see benchmarks/README.md), and
the tool cannot set them per load: ``--router-arg=--no-warmup`` (repeatable) starts the router as an
operator who turned it off would.

Needs the llama-server binary (scripts/install-llama-server) and the gguf package.
    .venv/bin/python -m benchmarks.llamacpp_load [--rounds 5] [--router-arg=--no-warmup]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchmarks._common import real_server_workdir
from sourceprep_models.config.schema import Endpoint
from sourceprep_models.providers.base import LoadRequest
from sourceprep_models.providers.llamacpp import LlamaCppProvider
from sourceprep_models.warming import pagecache
from tests.realserver.make_gguf import PRESETS, write_model
from tests.realserver.router import llama_server

SERVER: list[float] = []  # the router's own span of each load, from its events


def timed_load(provider: LlamaCppProvider, name: str) -> float:
    started = time.perf_counter()
    outcome = provider.load(LoadRequest(name=name))
    if outcome.server_load_s is not None:
        SERVER.append(outcome.server_load_s)
    return time.perf_counter() - started


def cached_read_s(path: Path) -> float:
    """Seconds to read the whole file once it is in the page cache."""
    with path.open("rb", buffering=0) as handle:
        while handle.read(16 * 1024 * 1024):
            pass
    started = time.perf_counter()
    with path.open("rb", buffering=0) as handle:
        while handle.read(16 * 1024 * 1024):
            pass
    return time.perf_counter() - started


def unload(provider: LlamaCppProvider, name: str) -> None:
    provider.unload(name)
    while any(model.name == name for model in provider.list_loaded()):
        time.sleep(0.01)


def drop(path: Path) -> None:
    pagecache.drop_all_caches()
    pagecache.drop(path)


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s  (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--router-arg", action="append", default=[], help="an extra llama-server argument")
    args = parser.parse_args()
    with real_server_workdir("llamacpp-bench-") as (binary, work):
        models = work / "models"
        files = {}
        for preset in ("50M", "500M"):
            started = time.perf_counter()
            files[preset] = write_model(models / f"m{preset}.gguf", PRESETS[preset])
            size = files[preset].stat().st_size
            print(f"generated m{preset}.gguf: {size:,} bytes in {time.perf_counter() - started:.1f} s")
        with llama_server(
            binary, work, "--models-dir", str(models), "--models-max", "1", "--no-models-autoload", *args.router_arg
        ) as srv:
            provider = LlamaCppProvider(Endpoint(name="bench", kind="llamacpp", url=srv.url))
            print(f"dropping the whole page cache permitted: {pagecache.drop_all_caches()}")
            for path in files.values():
                name = path.stem
                rows: dict[str, list[float]] = {"cold": [], "warm": [], "warm step": [], "warmed load": []}
                for _ in range(args.rounds):
                    drop(path)
                    rows["cold"].append(timed_load(provider, name))
                    unload(provider, name)
                    rows["warm"].append(timed_load(provider, name))
                    unload(provider, name)
                    drop(path)
                    rows["warm step"].append(pagecache.warm(path, min_available_bytes=2 * 1024**3).seconds)
                    rows["warmed load"].append(timed_load(provider, name))
                    unload(provider, name)
                for label, values in rows.items():
                    print(f"{name:>6} {label:>11}: {summary(values)}")
                SERVER.clear()
                for _ in range(args.rounds):
                    rows.setdefault("warm again", []).append(timed_load(provider, name))
                    unload(provider, name)
                if SERVER:
                    print(f"{name:>6} {'server':>11}: {summary(SERVER)}  (the router's own span, same loads)")
                size = path.stat().st_size
                load_rate = size / statistics.median(rows["warm again"]) / 1e9
                read_rate = size / statistics.median([cached_read_s(path) for _ in range(3)]) / 1e9
                print(
                    f"{name:>6} throughput: warm load {load_rate:.2f} GB/s, page-cache read {read_rate:.2f} GB/s "
                    f"({load_rate / read_rate:.2f}x)"
                )
            provider.close()


if __name__ == "__main__":
    main()
