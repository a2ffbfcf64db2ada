"""On a REAL llama-server router: a load ends on the router's own "loaded" event (``/models/sse``),
and the seconds the tool reports for it are the router's, as a separate listener sees them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from sourceprep_models.providers.llamacpp_events import LoadWatch, StatusEvent
from tests.conftest import CliFn
from tests.test_llamacpp_real import StartRouter, binary, config, model_files, models_dir, start_router

pytestmark = pytest.mark.realserver
__all__ = ["binary", "model_files", "models_dir", "start_router"]  # the fixtures, shared with that module


def events_until(watch: LoadWatch, model: str, status: str) -> list[StatusEvent]:
    seen: list[StatusEvent] = []
    while not any((event.model, event.status) == (model, status) for event in seen):
        event = watch.next(60.0)
        assert event is not None, f"the router sent no {status} event for {model}; saw {seen}"
        seen.append(event)
    return seen


def test_a_swap_on_the_real_router_reports_the_routers_own_load_time(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router(models_max=1)
    path = config(write_config, server.url)
    assert cli("--config", path, "load", "tiny-a", "--no-warm").exit_code == 0
    client = httpx.Client(base_url=server.url)
    watch = LoadWatch.open(client, {})  # the test's own listener, beside the tool's
    assert watch is not None, "this llama-server has no /models/sse"
    try:
        asked = time.monotonic()
        result = cli("--config", path, "load", "tiny-b", "--no-warm", "--json")
        answered = time.monotonic()
        events = events_until(watch, "tiny-b", "loaded")
    finally:
        watch.close()
        client.close()

    assert result.exit_code == 0, result.stderr
    assert server.loaded() == {"tiny-b"}  # the swap happened: tiny-a left, tiny-b is ready
    report = result.json()
    [load] = [step for step in report["steps"] if step["step"] == "load"]
    loading = min(event.at for event in events if (event.model, event.status) == ("tiny-b", "loading"))
    loaded = next(event.at for event in events if (event.model, event.status) == ("tiny-b", "loaded"))
    # The tool's account is the router's: it came from the router's events (a poll gives none), and it
    # lies inside the window the outside listener saw the router loading in, within this command's run.
    assert load["server_s"] is not None and 0 < load["server_s"] <= load["wall_s"]
    assert load["server_s"] <= (loaded - asked) and loading <= loaded <= answered
    seconds = report["seconds"]
    assert seconds["server_load_s"] == round(load["server_s"], 4)
    assert seconds["unload_s"] is not None and seconds["released_s"] is not None
    assert seconds["read_from"] in ("disk", "page cache")
