"""The configured models: on the server, fitting the budget alone and beside the pins, with enough
context; and what is loaded now: on the GPU, at the configured context, pins kept."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from sourceprep_models.doctor.records import Check, Sized, ok, problem, warning
from sourceprep_models.errors import ModelNotFound, SourceprepError
from sourceprep_models.units import format_seconds, human_bytes, percent

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Endpoint, ModelSpec
    from sourceprep_models.memory.sizing import Budget
    from sourceprep_models.providers.base import LoadedModel, ModelInfo, Provider

_SUGGESTION = re.compile(r"did you mean (['\"])(.+?)\1\?")


def check_present(
    key: str, name: str, endpoint: Endpoint, error: SourceprepError | None, *, configured: bool = True
) -> Check:
    """``configured`` False: a raw model name that a pipeline stage uses, with no models.<key> table."""
    from sourceprep_models.providers import server_facts

    check_id = f"model.{key}.present"
    where = f"endpoint {endpoint.name!r}"
    details = {"endpoint": endpoint.name, "name": name}
    if error is None:
        return ok(check_id, f"{name} is on {where}", **details)
    if not isinstance(error, ModelNotFound):
        return problem(
            check_id, f"could not look up {name} on {where}: {error.message}", "fix the endpoint first", **details
        )
    reason = error.message.split("; ", 1)[0]
    get = server_facts(endpoint.kind).get_hint.format(name=name)
    match = _SUGGESTION.search(error.message)
    if match:
        suggestion = match.group(2)
        rename = f"under [models.{key}]" if configured else f"in the pipeline stages that use {name}"
        what = "name" if configured else "model"
        fix = f'did you mean {suggestion!r}? set {what} = "{suggestion}" {rename}; or {get}'
        return problem(check_id, reason, fix, suggestion=suggestion, **details)
    tail = error.message.split("; ", 1)[1] if "; " in error.message else ""
    return problem(check_id, reason, tail or f"{get}, or fix its name in the config", **details)


def _beside_pins(name: str, allow_evict_pinned: bool) -> str:
    """What `load` does with a model that fits only if a pin leaves (planner rule 5)."""
    if allow_evict_pinned:
        return f"loading {name} evicts a pin (reloaded afterwards)"
    return f"`load {name}` is refused (exit 6) while the pins are loaded"


def _unpin_fix(names: str, allow_evict_pinned: bool) -> str:
    tail = "" if allow_evict_pinned else ", or set memory.allow_evict_pinned = true (pins come back afterwards)"
    return f"unpin one of {names}{tail}"


def check_fits(
    key: str,
    model: Sized,
    source: str,
    context: int,
    budget: Budget,
    pins: list[Sized],
    allow_evict_pinned: bool = False,
) -> Check:
    """Predicted size against the budget, alone and beside the endpoint's pins."""
    check_id = f"model.{key}.fits"
    details = {
        "predicted": model.bytes,
        "prediction_source": source,
        "context_length": context,
        "budget": budget.bytes,
    }
    predicted = f"{human_bytes(model.bytes)} ({source}, context {context})"
    if model.bytes > budget.bytes:
        return problem(
            check_id,
            f"{model.name} needs {predicted}, more than the {human_bytes(budget.bytes)} budget: it can never be "
            "fully resident",
            f"give models.{key} a smaller context_length or quantization, or raise memory.budget if the machine "
            "has more",
            **details,
        )
    others = [pin for pin in pins if pin.identity != model.identity]
    pinned = sum(pin.bytes for pin in others)
    if not model.pinned and others and model.bytes + pinned > budget.bytes:
        names = ", ".join(pin.name for pin in others)
        return warning(
            check_id,
            f"{model.name} ({human_bytes(model.bytes)}) does not fit beside the pinned {names} "
            f"({human_bytes(pinned)}) in {human_bytes(budget.bytes)}: {_beside_pins(key, allow_evict_pinned)}",
            f"give models.{key} a smaller context_length, raise memory.budget, or "
            + _unpin_fix(names, allow_evict_pinned),
            pinned=pinned,
            **details,
        )
    return ok(check_id, f"{model.name} needs {predicted} of {human_bytes(budget.bytes)}", **details)


def check_pins(
    endpoint: Endpoint, pins: list[Sized], largest: Sized | None, budget: Budget, allow_evict_pinned: bool = False
) -> Check | None:
    """The pins together, and the pins beside the largest model that is not pinned."""
    if not pins:
        return None
    check_id = f"pins.{endpoint.name}.fit"
    total = sum(pin.bytes for pin in pins)
    names = ", ".join(pin.name for pin in pins)
    details = {"pins": [pin.name for pin in pins], "pinned_bytes": total, "budget": budget.bytes}
    if total > budget.bytes:
        return problem(
            check_id,
            f"the pins on {endpoint.name} ({names}) need {human_bytes(total)} together, more than the "
            f"{human_bytes(budget.bytes)} budget: they evict each other",
            "unpin one (`always_available = false`), or give them smaller context lengths",
            **details,
        )
    if largest is not None and total + largest.bytes > budget.bytes:
        return warning(
            check_id,
            f"the pinned {names} ({human_bytes(total)}) beside {largest.name} ({human_bytes(largest.bytes)}) need "
            f"{human_bytes(total + largest.bytes)}, more than the {human_bytes(budget.bytes)} budget: "
            f"{_beside_pins(largest.name, allow_evict_pinned)}",
            f"use a smaller {largest.name} (or context), raise memory.budget, or "
            + _unpin_fix(names, allow_evict_pinned),
            largest=largest.name,
            largest_bytes=largest.bytes,
            **details,
        )
    room = budget.bytes - total
    return ok(check_id, f"the pins ({names}) take {human_bytes(total)}, leaving {human_bytes(room)}", **details)


def check_default_context(
    provider: Provider, key: str, spec: ModelSpec | None, name: str, info: ModelInfo | None
) -> Check | None:
    """A server with a small default context (LM Studio: 4096 unless changed, servers.md §1.3) loads at it
    when no context is asked for."""
    default = provider.default_context
    if default is None or (spec is not None and spec.runner_options().get("num_ctx") is not None):
        return None
    trained = info.trained_context if info else None
    suggestion = min(trained, 32768) if trained else 32768
    where = f"under [models.{key}]" if spec is not None else f"in a [models.{key}] table for it"
    return warning(
        f"model.{key}.context",
        f"no context_length for {name}: {provider.server_label} loads it at its default ({default} unless changed), "
        "too short for long prompts",
        f"set context_length = {suggestion} {where} (what your prompts need, up to {trained or 'its maximum'})",
        trained_context=trained,
    )


def check_offload(
    endpoint: Endpoint, model: LoadedModel, spec: ModelSpec | None, *, no_gpu_here: bool = False
) -> Check | None:
    """``size_vram < size``: part of the model runs on the CPU (ollama.md §2.4), several times slower.

    ``no_gpu_here``: the server runs on this machine and it has no GPU, so the CPU is the only place."""
    if not model.size or model.size_vram is None:
        return None
    check_id = f"loaded.{endpoint.name}.{model.name}.offload"
    gpu = percent(model.size_vram, model.size)
    details = {"size": model.size, "size_vram": model.size_vram, "gpu_percent": gpu}
    if model.size_vram >= model.size:
        return ok(check_id, f"{model.name} runs 100% on the GPU", **details)
    if model.size_vram == 0 and no_gpu_here:
        return ok(check_id, f"{model.name} runs on the CPU (this machine has no GPU)", **details)
    if model.size_vram == 0:
        where = f"{model.name} runs 100% on the CPU"
    else:
        where = f"{model.name} runs {100 - gpu}% on the CPU ({gpu}% GPU): partly offloaded"
    if spec is not None and "num_gpu" in spec.options and spec.options.get("num_gpu") != -1:
        return warning(check_id, f"{where}, as its num_gpu option asks", "remove num_gpu from its options", **details)
    name = spec.key if spec is not None else model.name
    return problem(
        check_id,
        f"{where}, much slower than fully on the GPU",
        f"free GPU memory (unload other models) or give {name} a smaller context_length, then reload it: "
        f"`sourceprep-models unload {name}` and `sourceprep-models load {name}`",
        **details,
    )


def check_loaded_context(provider: Provider, model: LoadedModel, spec: ModelSpec | None) -> Check | None:
    """The context the server really loaded against the one the config asks for."""
    endpoint = provider.endpoint
    wanted = spec.runner_options().get("num_ctx") if spec is not None else None
    if model.context_length is None:
        return None
    check_id = f"loaded.{endpoint.name}.{model.name}.context"
    details = {"loaded": model.context_length, "wanted": wanted}
    if spec is None or not isinstance(wanted, int):
        default = provider.default_context
        if default is not None and model.context_length <= default:
            return warning(
                check_id,
                f"{model.name} is loaded with a {model.context_length}-token context ({provider.server_label}'s "
                "default), too short for long prompts",
                f"configure it with a context_length and reload it (`sourceprep-models load {model.name}`)",
                **details,
            )
        return ok(check_id, f"{model.name} loaded with a {model.context_length}-token context", **details)
    key = spec.key
    if model.context_length < wanted:
        return problem(
            check_id,
            f"{model.name} is loaded with a {model.context_length}-token context, less than the {wanted} models.{key} "
            "asks for",
            provider.context_fix(wanted) or f"reload it with the configured context: `sourceprep-models load {key}`",
            **details,
        )
    if model.context_length > wanted and provider.capabilities.reloads_for_context:
        # A different context is a reload on the first request from this config (ollama.md §4.7).
        return warning(
            check_id,
            f"{model.name} is loaded with a {model.context_length}-token context, not the {wanted} models.{key} "
            "asks for: the next request from this config reloads it",
            f"reload it with the configured context now: `sourceprep-models load {key}`",
            **details,
        )
    return ok(check_id, f"{model.name} loaded with a {model.context_length}-token context", **details)


def check_pin_kept(spec: ModelSpec, state: str, model: LoadedModel | None, now: datetime) -> Check:
    check_id = f"pin.{spec.key}.kept"
    if state == "missing":
        return problem(
            check_id,
            f"pinned {spec.name} is not loaded on {spec.endpoint}",
            f"`sourceprep-models status` reloads lost pins (or `sourceprep-models load {spec.key}`); if it keeps "
            "disappearing, check the server's model limit and memory",
            state=state,
        )
    if state == "expiring" and model is not None and model.expires_at is not None:
        left = format_seconds(max(0.0, (model.expires_at - now).total_seconds()))
        return problem(
            check_id,
            f"pinned {spec.name} lost its keep_alive: it unloads in {left} (another client sent a finite keep_alive)",
            "find the client that sends keep_alive for it (e.g. a UI's per-model setting) and remove it; "
            "`sourceprep-models status` pins it again",
            state=state,
            expires_at=model.expires_at.isoformat(),
        )
    return ok(check_id, f"pinned {spec.name} is loaded and kept", state="kept")
