"""Measure what swapping costs on this machine: per model cold load, warm load and first-token
latency; and for two models called alternately, each call's latency as the server behaves now
("before") and with both kept resident ("after"), with the fix that gets there.

Cold means the model's own weight files were dropped from the page cache first
(``posix_fadvise(DONTNEED)`` on each, ``warming.pagecache.drop``; hardware.md §5.1). That needs the
weight files on this machine (the provider's ``weight_paths``); when the drop is not possible the
result says "warm-cache only" rather than passing a warm load off as cold. The machine-wide
``/proc/sys/vm/drop_caches`` is never written: it would throw away every other model's warm weights
(and every other program's cache) to measure one model.

"Before" sends the calls the way a client that relies on the server does: one request per call,
the server loads what it lacks and evicts by its own rule (Ollama's scheduler, llama.cpp's LRU
``--models-max`` with on-demand loading). "After" first makes both models resident with the
executor, then repeats the same calls.

``run`` is the whole command: it opens the endpoint, takes its lock, benchmarks, and puts back the
pins the benchmark moved out. The advice at the end comes from the provider (what keeps two models
loaded on that server), in the words doctor uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sourceprep_models.errors import UsageError
from sourceprep_models.pipeline.work import PromptClient, PromptResult
from sourceprep_models.planning.load import Plan
from sourceprep_models.swap.executor import Executor
from sourceprep_models.swap.residency import Session

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Config, Endpoint
    from sourceprep_models.providers.base import LoadRequest
    from sourceprep_models.providers.diagnostics import ServerProcess

PROMPT = "Say hello in five words."


@dataclass
class ModelBench:
    model: str
    cold_load_s: float | None = None
    warm_load_s: float | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    cache: str = "cold"  # cold | warm-cache only | direct I/O
    note: str | None = None
    call: str = "generate"  # generate | embedding: the inference timed as the first answer

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "cold_load_s": _round(self.cold_load_s),
            "warm_load_s": _round(self.warm_load_s),
            "ttft_s": _round(self.ttft_s),
            "tokens_per_s": _round(self.tokens_per_s),
            "cache": self.cache,
            "note": self.note,
            "call": self.call,
        }


@dataclass
class Call:
    index: int
    model: str
    before_s: float
    after_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "call": self.index,
            "model": self.model,
            "before_s": _round(self.before_s),
            "after_s": _round(self.after_s),
        }


@dataclass
class Alternation:
    models: tuple[str, str]
    calls: list[Call] = field(default_factory=list)
    after_possible: bool = True
    why_not: str | None = None
    recommendation: str = ""

    @property
    def before_total_s(self) -> float:
        return sum(call.before_s for call in self.calls)

    @property
    def after_total_s(self) -> float | None:
        if not self.after_possible:
            return None
        return sum(call.after_s or 0.0 for call in self.calls)

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "calls": [call.to_dict() for call in self.calls],
            "before_total_s": _round(self.before_total_s),
            "after_total_s": _round(self.after_total_s),
            "after_possible": self.after_possible,
            "why_not": self.why_not,
            "recommendation": self.recommendation,
        }


@dataclass
class BenchReport:
    """What `bench` measured on one endpoint: each model's loads, or the alternation of two."""

    endpoint: str
    models: list[ModelBench] | None = None
    alternation: Alternation | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.alternation is not None:
            return {"endpoint": self.endpoint, "alternation": self.alternation.to_dict()}
        return {"endpoint": self.endpoint, "models": [bench.to_dict() for bench in self.models or []]}


def run(
    config: Config,
    endpoint: Endpoint,
    names: list[str],
    *,
    alternate_calls: int | None,
    environ: Mapping[str, str],
    on_step: Callable[[str], None],
    on_detail: Callable[[str], None],
    processes: Callable[[str], list[ServerProcess]] | None = None,
) -> BenchReport:
    """Benchmark ``names`` on ``endpoint`` (or alternate the two of them ``alternate_calls`` times) under the
    locks of this machine's servers; pins the benchmark moved out (on any of them) are loaded again afterwards."""
    from sourceprep_models.swap.operations import Hooks, open_machine, repair_all

    with open_machine(config, hooks=Hooks(info=on_step, debug=on_detail)) as machine:
        session = machine.session(endpoint)
        provider = session.provider
        if provider.capabilities.always_ready:
            raise UsageError(f"endpoint {endpoint.name!r} is a cloud API: nothing is loaded there to benchmark")
        for name in names:
            provider.describe(name)  # unknown → exit 3 before anything is unloaded
        executor = machine.executor(session)

        def waiting(endpoint_name: str) -> None:
            on_step(f"waiting for another sourceprep-models to finish on {endpoint_name}…")

        report = BenchReport(endpoint.name)
        with machine.locked(600.0, waiting):
            try:
                if alternate_calls is None:
                    report.models = bench_models(session, executor, names, environ=environ, on_step=on_step)
                else:
                    first, second = names
                    report.alternation = alternate(
                        session,
                        executor,
                        first,
                        second,
                        alternate_calls,
                        environ=environ,
                        on_step=on_step,
                        limit_in_effect=lambda: _limit_in_effect(session, processes),
                    )
            finally:
                repair_all(machine)  # pins the benchmark moved out come back
        return report


def bench_models(
    session: Session,
    executor: Executor,
    names: list[str],
    *,
    environ: Mapping[str, str],
    on_step: Callable[[str], None],
) -> list[ModelBench]:
    """Cold load, warm load, first token for each model (evicting others as ``load`` would)."""
    from sourceprep_models.warming import pagecache

    results = []
    client = PromptClient(session.endpoint, environ)
    try:
        for name in names:
            bench = ModelBench(model=name)
            request = session.request(name, session.config.models.get(name))
            paths = session.weight_paths(name)
            _unload(session, executor, name)
            on_step(f"{name}: cold load")
            direct_io = session.direct_io(name)
            dropped = direct_io is None and bool(paths) and all(pagecache.drop(path) for path in paths)
            if direct_io is not None:
                # The page cache plays no part: every load reads the disk, so there is nothing to drop or warm.
                bench.cache = "direct I/O"
                bench.note = f"{direct_io}: the server bypasses the page cache, so every load reads the disk"
            elif not dropped:
                bench.cache = "warm-cache only"
                bench.note = (
                    "the weights are not on this machine's disk (or the cache could not be dropped), so the first "
                    "load may be warm"
                )
            bench.cold_load_s = _load(session, executor, request)
            embedding = _embedding(session, request)
            bench.call = "embedding" if embedding else "generate"
            on_step(f"{name}: first {'embedding' if embedding else 'token'}")
            answer = _ask(client, request, embedding, max_tokens=16)
            bench.ttft_s, bench.tokens_per_s = answer.ttft_s, answer.tokens_per_s
            _unload(session, executor, name)
            on_step(f"{name}: warm load")
            bench.warm_load_s = _load(session, executor, request)
            results.append(bench)
    finally:
        client.close()
    return results


def alternate(
    session: Session,
    executor: Executor,
    first: str,
    second: str,
    calls: int,
    *,
    environ: Mapping[str, str],
    on_step: Callable[[str], None],
    limit_in_effect: Callable[[], tuple[int, str] | None] = lambda: None,
) -> Alternation:
    """A/B calls as the server behaves now, then with both resident."""
    result = Alternation(models=(first, second))
    specs = session.config.models
    requests = {name: session.request(name, specs.get(name)) for name in (first, second)}
    embedding = {name: _embedding(session, request) for name, request in requests.items()}
    client = PromptClient(session.endpoint, environ, autoload=True)
    try:
        on_step(f"before: {calls} calls as the server is configured now")
        for index in range(calls):
            name = (first, second)[index % 2]
            # No keep_alive sent: the server's own default decides, as for an ordinary client.
            started = time.monotonic()
            _ask(client, requests[name], embedding[name], max_tokens=4)
            result.calls.append(Call(index + 1, name, time.monotonic() - started))

        on_step("after: both kept resident")
        why_not = _make_both_resident(session, executor, requests[first], requests[second])
        if why_not is not None:
            result.after_possible, result.why_not = False, why_not
        else:
            for call in result.calls:
                request = requests[call.model]
                keep = request.keep_alive.seconds if request.keep_alive is not None else None
                started = time.monotonic()
                _ask(client, request, embedding[call.model], max_tokens=4, keep_alive=keep)
                call.after_s = time.monotonic() - started
    finally:
        client.close()
    result.recommendation = recommend(session, result, limit_in_effect)
    return result


def _limit_in_effect(
    session: Session, processes: Callable[[str], list[ServerProcess]] | None
) -> tuple[int, str] | None:
    """The server's cap on loaded models as it runs now, read from its process where the OS allows."""
    if processes is None:
        return None
    gpus = len(session.hardware.get("gpus") or [])
    return session.provider.loaded_limit_in_effect(processes(session.endpoint.kind), gpus)


def recommend(
    session: Session, result: Alternation, limit_in_effect: Callable[[], tuple[int, str] | None] = lambda: None
) -> str:
    """What to change so the two models stay resident together, in the words doctor uses; what keeps two
    models loaded on a server is its provider's knowledge. Advice never sets a cap on loaded models below
    the one in effect: when the cap read from the server already allows both, the eviction was the
    server's own memory estimate, and a count is not the fix."""
    first, second = result.models
    provider = session.provider
    pins = f"`sourceprep-models pin {first}` and `sourceprep-models pin {second}`"
    saved = result.before_total_s - (result.after_total_s or 0.0)
    # Below this the difference is noise, not swapping.
    if result.after_possible and saved <= max(0.1, 0.1 * result.before_total_s):
        return f"nothing to change: {first} and {second} already stay resident together on {session.endpoint.name}"
    limit = session.max_loaded()
    if limit is not None and limit < 2 and (raise_limit := provider.loaded_limit_fix(2)) is not None:
        return f"{raise_limit} (now {limit}) so {first} and {second} stay loaded together"
    if not result.after_possible and result.why_not and "evicted" in result.why_not:
        in_effect = limit_in_effect()
        if in_effect is not None and in_effect[0] >= 2:
            return (
                f"{provider.server_label} already keeps up to {in_effect[0]} models ({in_effect[1]}) but did not keep "
                f"{first} and {second} together: its own memory estimate does not fit both; give them a smaller "
                f"context or quantization, or free memory; then {pins}"
            )
        # The same fix `doctor` gives for a model limit below what fits, written for this OS.
        hidden = provider.hidden_limit_fix(2, str(session.hardware.get("os") or ""))
        if hidden is not None:
            return f"let {provider.server_label} keep both: {hidden}; then {pins}"
    if not result.after_possible:
        return result.why_not or "free memory for both models"
    gain = f"saves {saved:.2f}s over {len(result.calls)} calls"
    hint = provider.keep_loaded_hint(2)
    if hint is not None:
        return f"keep both loaded ({gain}): {hint}, or pin them: {pins}"
    return f"keep both loaded ({gain}): {pins}"


def _make_both_resident(session: Session, executor: Executor, *requests: Any) -> str | None:
    from sourceprep_models.planning.load import Refusal

    for index, request in enumerate(requests):
        loaded = session.loaded()
        plan, _, _ = session.plan(request, loaded)
        if isinstance(plan, Refusal):
            return plan.reason
        earlier = {session.identity(other.name) for other in requests[:index]}
        if any(victim.key in earlier for victim in plan.evict):
            return (
                f"{requests[0].name} and {requests[1].name} do not fit together in the budget "
                f"({plan.budget:,} bytes); a smaller context or quantization would let them"
            )
        limit = session.max_loaded()
        if limit is not None and limit < 2:
            return f"the server keeps at most {limit} model loaded (llama-server --models-max {limit})"
        executor.load(request, plan, restore=session.machine.restore_requests())
    resident = {session.identity(model.name) for model in session.loaded()}
    gone = [request.name for request in requests if session.identity(request.name) not in resident]
    if gone:
        return (
            f"the server evicted {', '.join(gone)} when the other loaded although both fit the budget: it keeps "
            "fewer models loaded than fit"
        )
    return None


def _load(session: Session, executor: Executor, request: Any) -> float:
    from sourceprep_models.planning.load import Refusal

    plan, _, _ = session.plan(request, session.loaded())
    if isinstance(plan, Refusal):
        from sourceprep_models.errors import DoesNotFit

        raise DoesNotFit(plan.reason)
    started = time.monotonic()
    report = executor.load(
        request, plan if isinstance(plan, Plan) else None, restore=session.machine.restore_requests()
    )
    load = next((step.wall_s for step in report.steps if step.step == "load"), None)
    return load if load is not None else time.monotonic() - started


def _unload(session: Session, executor: Executor, name: str) -> None:
    executor.unload([name], timeout_s=session.endpoint.unload_timeout_s or 120.0)


def _embedding(session: Session, request: LoadRequest) -> bool:
    """Whether the model answers only the embedding call: the config's ``kind`` says, else the server."""
    if request.embedding is not None:
        return bool(request.embedding)
    return session.provider.describe(request.name).embedding_only


def _ask(
    client: PromptClient, request: LoadRequest, embedding: bool, *, max_tokens: int, keep_alive: float | None = None
) -> PromptResult:
    """One inference as a client of this model would make it: an embedding model has no generate route."""
    if embedding:
        return client.embed(request.name, PROMPT, options=request.options, keep_alive=keep_alive)
    return client.send(request.name, PROMPT, max_tokens=max_tokens, options=request.options, keep_alive=keep_alive)


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None
