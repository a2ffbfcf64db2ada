"""Effect of page-cache warming on a cold load of a 1 GiB model file (the emulator really reads it).

cold      = cache dropped, then load
warmed    = cache dropped, warm (timed separately), then load
warm      = file already in the page cache, load
The cache is dropped for the one file with posix_fadvise(DONTNEED) after a sync (no root needed), and
additionally with /proc/sys/vm/drop_caches when permitted.

Then, with the file resident, warm()'s own read throughput beside a plain read loop over the same file
(readinto a reused buffer of 256 KiB, 1 MiB, 4 MiB), rounds interleaved so that machine load falls on
both alike; the target is warm >= 0.8x the best plain read.

    .venv/bin/python -m benchmarks.warming [--rounds 3] [--resident-rounds 9]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

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


def plain_read(path: Path, buffer_bytes: int) -> float:
    """Seconds to read ``path`` start to end with readinto into one reused buffer: the page cache's speed."""
    view = memoryview(bytearray(buffer_bytes))
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(view):
            pass
    return time.perf_counter() - started


def resident_throughput(path: Path, rounds: int) -> None:
    size = path.stat().st_size
    plain_read(path, 1 << 20)  # resident from here on
    rows: dict[str, list[float]] = {"plain 256K": [], "plain 1M": [], "plain 4M": [], "warm()": [], "warm() read": []}
    for _ in range(rounds):
        for label, buffer_bytes in (("plain 256K", 1 << 18), ("plain 1M", 1 << 20), ("plain 4M", 1 << 22)):
            rows[label].append(size / plain_read(path, buffer_bytes) / 1e9)
        started = time.perf_counter()
        result = pagecache.warm(path, min_available_bytes=0)
        rows["warm()"].append(size / (time.perf_counter() - started) / 1e9)  # its two residency checks included
        rows["warm() read"].append(size / result.seconds / 1e9)  # its read loop alone
    best_plain = max(statistics.median(values) for label, values in rows.items() if label.startswith("plain"))
    print(f"resident read of the same {size / 2**30:.1f} GiB file, GB/s (median, max over {rounds} rounds):")
    for label, values in rows.items():
        print(f"{label:>11}: median {statistics.median(values):.2f}  max {max(values):.2f}")
    for label in ("warm()", "warm() read"):
        print(f"{label} / best plain (medians): {statistics.median(rows[label]) / best_plain:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--resident-rounds", type=int, default=9)
    args = parser.parse_args()
    with emulator([EmulatedModel(NAME, file_mib=1024)], gpu_vram_mib=None, unload_delay_s=0.0) as emu:
        path = emu.blob_path(NAME)
        client = httpx.Client(base_url=emu.url, timeout=600)
        rows: dict[str, list[float]] = {"cold": [], "warm step": [], "warmed load": [], "already warm": []}
        dropped_all = False
        for _ in range(args.rounds):
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
        resident_throughput(path, args.resident_rounds)
    print(f"file: 1 GiB; cache before cold load: {before.fraction}; drop_caches permitted: {dropped_all}")
    for label, values in rows.items():
        values.sort()
        print(f"{label:>13}: median {values[len(values) // 2]:.3f} s  ({', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()
