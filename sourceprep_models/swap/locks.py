"""One swap at a time per endpoint, across processes (two CI jobs, two terminals).

A file lock in the user state directory, named after the server the endpoint's URL reaches (not the
URL as written): ``http://127.0.0.1:11434``, ``http://localhost:11434/`` and ``http://[::1]:11434/v1``
share one lock, so two configs (or two spellings) of one server never interleave their swaps.

A swap on a host with several servers may evict from any of them (they share its memory), so it takes
every one of that host's locks, always in the same order (sorted by lock file): two processes that cross
(one loading on A and evicting from B, the other the reverse) queue instead of deadlocking. A swap never
touches another host's memory (``Machine.plan`` and ``Machine.executor`` stay on one host), so it leaves
that host's locks alone: a preload on one machine never holds up a load on another.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sourceprep_models.errors import ServerBusy

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Endpoint

# Called once with the endpoint's name when its lock is held by another process and the wait begins.
LockWait = Callable[[str], None]


def lock_path(endpoint_url: str) -> Path:
    from sourceprep_models.config.urls import server_address
    from sourceprep_models.paths import locks_dir

    server = server_address(endpoint_url)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", server).strip("-")[:60]
    digest = hashlib.sha256(server.encode()).hexdigest()[:10]
    return locks_dir() / f"{slug}-{digest}.lock"


@contextlib.contextmanager
def endpoint_lock(
    endpoint_name: str, endpoint_url: str, *, timeout_s: float, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    from filelock import FileLock, Timeout

    path = lock_path(endpoint_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout:
            raise ServerBusy(
                f"another sourceprep-models is changing what is loaded on {endpoint_name} and did not finish "
                f"within {timeout_s:g}s; wait for it, or remove {path} if no such process runs"
            ) from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def endpoints_lock(
    endpoints: Sequence[Endpoint], *, timeout_s: float, on_wait: LockWait | None = None
) -> Iterator[None]:
    """The locks of several endpoints, taken in one fixed order (each lock file once)."""
    ordered: dict[Path, Endpoint] = {}
    for endpoint in endpoints:
        ordered.setdefault(lock_path(endpoint.url), endpoint)
    with contextlib.ExitStack() as stack:
        for path in sorted(ordered):
            endpoint = ordered[path]
            wait = (lambda name=endpoint.name: on_wait(name)) if on_wait is not None else None
            stack.enter_context(endpoint_lock(endpoint.name, endpoint.url, timeout_s=timeout_s, on_wait=wait))
        yield
