"""Never evict a model that is loading or serving a request: wait until it is idle, within the load's deadline.

The executor calls ``wait_until_idle`` once, with the plan's victims, just before it unloads them.

- Where the server reports what a model is doing (``capabilities.reports_activity``: llama.cpp
  router slots, vLLM metrics), each busy victim is polled, fast at first (a request that is about to
  end is caught within tens of milliseconds) and backing off to once a second, until every one is
  idle. One stderr line per victim says what it waits for. Past the deadline the swap stops with
  ``ServerBusy`` (exit 1, as every other "the server was not ready in time" failure) naming the busy
  model and what to do; nothing has been evicted by then, so there is nothing to restore.
- Where the server's own unload waits for running requests (``unload_waits_for_requests``: Ollama
  keeps a busy runner until its last request ends, ollama.md §4.5-4.6), nothing is polled: it
  reports no busy flag, and the executor's wait for the model to be gone covers the requests.
- Elsewhere the server says nothing about requests, and the eviction goes ahead as before.

Another client may start a request between the last poll and the unload; no server offers an
"unload if idle", so the window is one HTTP round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sourceprep_models.errors import ModelNotFound, ServerBusy, SourceprepError
from sourceprep_models.providers.base import Activity, Provider
from sourceprep_models.units import format_seconds

FIRST_POLL_S = 0.02
MAX_POLL_S = 1.0


@dataclass(frozen=True)
class Waited:
    """How long the eviction waited, and for which models (a step of the swap's time breakdown)."""

    seconds: float
    models: tuple[str, ...]


def wait_until_idle(
    victims: Sequence[tuple[Provider, str]],
    *,
    deadline_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    notify: Callable[[str], None],
) -> Waited | None:
    """Return once no victim (provider, name) is loading or serving; None when none was busy at all."""
    started = clock()
    deadline = started + deadline_s
    interval = FIRST_POLL_S
    pending = [(provider, name) for provider, name in victims if provider.capabilities.reports_activity]
    announced: set[tuple[str, str, str]] = set()
    waited_for: list[str] = []
    while pending:
        busy = [(provider, activity) for provider, activity in _activities(pending) if activity.busy]
        if not busy:
            break
        for provider, activity in busy:
            if activity.name not in waited_for:
                waited_for.append(activity.name)
            key = (provider.endpoint.name, activity.name, activity.doing)
            if key not in announced:
                announced.add(key)
                notify(f"waiting for {activity.name}: {activity.doing} (on {provider.endpoint.name})…")
        if clock() >= deadline:
            provider, activity = busy[0]
            raise ServerBusy(
                f"{activity.name} on endpoint {provider.endpoint.name!r} is still {activity.doing} after "
                f"{format_seconds(deadline_s)}, and evicting it would cut that off; retry when it is idle, raise "
                f"--timeout, or unload it yourself (`sourceprep-models unload {activity.name}`)"
            )
        sleep(max(0.0, min(interval, deadline - clock())))
        interval = min(interval * 1.5, MAX_POLL_S)
        pending = [(provider, activity.name) for provider, activity in busy]
    if not waited_for:
        return None
    return Waited(clock() - started, tuple(waited_for))


def _activities(victims: Sequence[tuple[Provider, str]]) -> list[tuple[Provider, Activity]]:
    found = []
    for provider, name in victims:
        try:
            found.append((provider, provider.activity(name)))
        except ModelNotFound:  # gone from the server meanwhile: nothing left to cut off
            continue
        except SourceprepError:
            # Activity is advice: a server that cannot say (dying, restarting) is not waited for, and the unload
            # that follows reports what is wrong with it in its own words (unreachable is exit 4, not 1).
            continue
    return found
