"""Effect of page-cache warming on a cold load of a 1 GiB model file (the emulator really reads it).

cold      = cache dropped, then load
warmed    = cache dropped, warm (timed separately), then load
warm      = file already in the page cache, load
The cache is dropped for the one file with posix_fadvise(DONTNEED) after a sync (no root needed), and
additionally with /proc/sys/vm/drop_caches when permitted.
"""

from __future__ import annotations

import time

import httpx

from benchmarks._common import emulator
from sourceprep_models.warming import pagecache
from tests.emulator import EmulatedModel

ROUNDS = 3
NAME = "big:8b"


def load(client: httpx.Client) -> float:
    started = time.perf_counter()
    client.post("/api/generate", json={"model": NAME, "prompt": "", "stream": False}).raise_for_status()
    return time.perf_counter() - started


def unload(client: httpx.Client) -> None:
    client.post("/api/generate", json={"model": NAME, "keep_alive": 0})
    while client.get("/api/ps").json()["models"]:
        time.sleep(0.01)


def main() -> None:
    with emulator([EmulatedModel(NAME, file_mib=1024)], gpu_vram_mib=None, unload_delay_s=0.0) as emu:
        path = emu.blob_path(NAME)
        client = httpx.Client(base_url=emu.url, timeout=600)
        rows: dict[str, list[float]] = {"cold": [], "warm step": [], "warmed load": [], "already warm": []}
        dropped_all = False
        for _ in range(ROUNDS):
            dropped_all = pagecache.drop_all_caches() or dropped_all
            pagecache.drop(path)
            before = pagecache.residency(path)
            rows["cold"].append(load(client))
            unload(client)
            pagecache.drop_all_caches()
            pagecache.drop(path)
            result = pagecache.warm(path, min_available_bytes=2 * 1024**3)
            rows["warm step"].append(result.seconds)
            rows["warmed load"].append(load(client))
            unload(client)
            rows["already warm"].append(load(client))
            unload(client)
        client.close()
    print(f"file: 1 GiB; cache before cold load: {before.fraction}; drop_caches permitted: {dropped_all}")
    for label, values in rows.items():
        values.sort()
        print(f"{label:>13}: median {values[len(values) // 2]:.3f} s  ({', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()
