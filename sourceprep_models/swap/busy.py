"""Never evict a model that is loading or serving a request: wait until it is idle, within the load's deadline.

The executor calls ``wait_until_idle`` once, with the plan's victims, just before it unloads them.

- Where the server reports what a model is doing (``capabilities.reports_activity``: llama.cpp
  router slots, vLLM metrics, llama-swap's in-flight requests, oMLX and production-stack where their
  server-wide counts can only be the victim's), each busy victim is polled, fast at first (a request
  that is about to end is caught within tens of milliseconds) and backing off to once a second,
  until every one is idle. One stderr line per victim says what it waits for. Past the deadline the
  swap stops with ``ServerBusy`` (exit 1, as every other "the server was not ready in time" failure)
  naming the busy model and what to do; nothing has been evicted by then, so there is nothing to
  restore.
- Where the server's own unload waits for running requests (``unload_waits_for_requests``: Ollama
  keeps a busy runner until its last request ends, ollama.md §4.5-4.6), nothing is polled: it
  reports no busy flag, and the executor's wait for the model to be gone covers the requests.
- Elsewhere the server says nothing about requests, and the eviction goes ahead as before.

Before any waiting, ``spare_the_busy`` looks once at the plan's victims: when one is busy and the
planner, told to keep the busy ones (as data, like the models a command loaded earlier), can still
fit the load by evicting idle, unpinned models instead, that plan replaces it and nothing waits.
When no such plan exists (nothing else frees enough, or only a pin would), the plan stands and the
wait above happens as before.

Another client may start a request between the last poll and the unload; no server offers an
"unload if idle", so the window is one HTTP round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sourceprep_models.errors import ModelNotFound, ServerBusy, SourceprepError
from sourceprep_models.planning.load import Plan, Refusal
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


def spare_the_busy(
    plan: Plan,
    providers: Mapping[str, Provider],
    endpoint: str,
    replan: Callable[[frozenset[str]], Plan | Refusal],
    notify: Callable[[str], None],
) -> Plan:
    """``plan``, or a plan that evicts idle models in place of its busy victims where one fits the load.

    ``providers`` by endpoint name (a victim's ``group``, or ``endpoint`` when it has none); ``replan``
    plans the same load again keeping the given machine keys resident. A replacement may evict no pin:
    evicting a pin to spare a busy model trades a short wait for a reload later."""
    spared: dict[str, Activity] = {}
    current = plan
    while True:
        asked = {(victim.group or endpoint, victim.name): victim.key for victim in current.evict}
        pairs = [(providers[where], name) for where, name in asked if where in providers]
        pending = [(provider, name) for provider, name in pairs if provider.capabilities.reports_activity]
        busy = {
            asked[provider.endpoint.name, activity.name]: activity
            for provider, activity in _activities(pending)
            if activity.busy and (provider.endpoint.name, activity.name) in asked
        }
        if not busy:
            break
        spared.update(busy)
        alternative = replan(frozenset(spared))
        if isinstance(alternative, Refusal) or any(victim.pinned for victim in alternative.evict):
            return plan  # nothing idle frees enough: wait for the busy victims as before
        current = alternative
    if current is not plan:
        instead = ", ".join(victim.name for victim in current.evict) or "nothing"
        for activity in spared.values():
            notify(f"{activity.name} is {activity.doing}; evicting {instead} instead")
    return current


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
