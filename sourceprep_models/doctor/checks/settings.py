"""A server's own settings (how many models it keeps, for how long) against what the config keeps
together and the idle gaps of its pipelines. The settings and their fixes are the provider's
knowledge (``Provider.settings_findings``); what the config needs is computed here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sourceprep_models.doctor.records import Check, Sized
from sourceprep_models.providers.diagnostics import Need, Reuse

if TYPE_CHECKING:
    from sourceprep_models.providers.base import Provider
    from sourceprep_models.providers.diagnostics import SettingsQuestion


def co_resident_need(pins: list[Sized], groups: Mapping[str, list[Sized]], budget: int) -> Need | None:
    """The most models any use of the endpoint keeps together, as far as they fit the budget.

    ``groups`` maps a reason ("pipeline 'rag'") to the models that use needs; the pins always stay."""
    best: Need | None = None
    for reason, models in groups.items():
        chosen = list(pins)
        total = sum(pin.bytes for pin in pins)
        seen = {pin.identity for pin in pins}
        for model in sorted(models, key=lambda m: m.bytes):
            if model.identity in seen:
                continue
            seen.add(model.identity)
            if total + model.bytes <= budget:
                chosen.append(model)
                total += model.bytes
        need = Need(len(chosen), tuple(m.name for m in chosen), total, reason)
        if best is None or need.count > best.count:
            best = need
    return best


def reuse_gaps(pipeline: str, runs: list[tuple[str, str, str]], durations: Mapping[str, float]) -> list[Reuse]:
    """Models used again after other stages ran, from (stage id, model name, key) in run order; a gap is
    the time the stages in between took in the pipeline's last run."""
    last: dict[str, int] = {}
    gaps: dict[str, list[float | None]] = {}
    keys: dict[str, str] = {}
    for index, (_stage, model, key) in enumerate(runs):
        keys[model] = key
        if model in last and last[model] < index - 1:
            between = [durations.get(runs[i][0]) for i in range(last[model] + 1, index)]
            known = [value for value in between if value is not None]
            gaps.setdefault(model, []).append(sum(known) if len(known) == len(between) else None)
        last[model] = index
    result = []
    for model, values in gaps.items():
        known = [value for value in values if value is not None]
        result.append(Reuse(pipeline, model, keys[model], max(known) if known else None))
    return result


def check_settings(provider: Provider, question: SettingsQuestion) -> list[Check]:
    """One check per setting the server has an opinion on: ``server.<endpoint>.<setting>``."""
    name = provider.endpoint.name
    return [
        Check.of(f"server.{name}.{setting}", found) for setting, found in provider.settings_findings(question).items()
    ]
