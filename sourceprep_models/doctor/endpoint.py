"""The checks of one endpoint, in order: reachable and the right server, what it supports, its models
(present, fitting, pins), what is loaded now, and the server's own settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sourceprep_models.doctor.checks.direct_io import check_direct_io
from sourceprep_models.doctor.checks.models import (
    check_default_context,
    check_fits,
    check_loaded_context,
    check_offload,
    check_pin_kept,
    check_pins,
    check_present,
)
from sourceprep_models.doctor.checks.server import check_reachable, check_server, check_supports, identify
from sourceprep_models.doctor.checks.settings import check_settings, co_resident_need, reuse_gaps
from sourceprep_models.doctor.records import Check, Sized, problem, skipped
from sourceprep_models.errors import SourceprepError
from sourceprep_models.providers.diagnostics import (
    EndpointUses,
    Need,
    Reuse,
    ServerIdentity,
    SettingsQuestion,
    is_local,
)

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Config, Endpoint, ModelSpec
    from sourceprep_models.doctor.system import DoctorSystem
    from sourceprep_models.hardware import Hardware
    from sourceprep_models.memory.sizing import Budget
    from sourceprep_models.providers.base import LoadedModel, ModelInfo, Provider
    from sourceprep_models.swap.residency import Session


@dataclass(frozen=True)
class Target:
    """A model the config asks for on an endpoint: a models.<key>, or a raw name a pipeline stage uses."""

    key: str
    name: str
    spec: ModelSpec | None


# Per pipeline: (stage run id, target, endpoint name) in run order.
Plans = Mapping[str, list[tuple[str, Target, str]]]


@dataclass
class _ModelFacts:
    target: Target
    error: SourceprepError | None = None
    info: ModelInfo | None = None
    sized: Sized | None = None
    source: str = ""
    context: int = 0
    size_unknown: str | None = None


def _holds_memory(kind: str) -> bool:
    """Whether an endpoint of this kind keeps models in this machine's memory (a cloud API does not)."""
    from sourceprep_models.providers import provider_class, registered_kinds

    return kind not in registered_kinds() or not provider_class(kind).capabilities.always_ready


@dataclass
class EndpointRun:
    """The checks of one endpoint: reachability and identity, its models, what is loaded, its settings."""

    endpoint: Endpoint
    config: Config
    hardware: Hardware
    budget: Budget
    plans: Plans
    system: DoctorSystem
    now: datetime
    out: list[Check]

    def checks(self) -> tuple[str, int] | None:
        """Adds the checks; returns what this endpoint keeps resident together (for the Apple GPU check)."""
        from sourceprep_models.providers import server_facts

        endpoint = self.endpoint
        targets = self._targets()
        provider: Provider | None = None
        try:
            if server_facts(endpoint.kind).accepts_any_server and not is_local(endpoint.url):
                identity = ServerIdentity(endpoint.kind, evidence="a remote API")
                provider = self.system.provider(endpoint)
                provider.list_available()  # reachable, and the key is accepted
            else:
                identity = identify(lambda path: self.system.fetch(endpoint, path), endpoint.kind)
        except SourceprepError as exc:
            if provider is not None:
                provider.close()
            self.out.append(check_reachable(endpoint, exc))
            self.out.append(
                skipped(f"endpoint.{endpoint.name}.models", "model and setting checks skipped: unreachable")
            )
            return None
        self.out.append(check_reachable(endpoint, None))
        self.out.append(check_server(endpoint, identity))
        if identity.kind is not None and identity.kind != endpoint.kind:
            if provider is not None:
                provider.close()
            self.out.append(
                skipped(f"endpoint.{endpoint.name}.models", "model and setting checks skipped: another server answers")
            )
            return None
        provider = provider or self.system.provider(endpoint)
        try:
            return self._with_provider(provider, identity, targets)
        finally:
            provider.close()

    def _targets(self) -> list[Target]:
        """The configured models on the endpoint, then the raw model names its pipeline stages use."""
        name = self.endpoint.name
        targets = [Target(spec.key, spec.name, spec) for spec in self.config.models.values() if spec.endpoint == name]
        keys = {target.key for target in targets}
        for rows in self.plans.values():
            for _stage, target, where in rows:
                if where == name and target.key not in keys:
                    keys.add(target.key)
                    targets.append(target)
        return targets

    def _shared_pipeline(self) -> str | None:
        """A pipeline that uses this endpoint and another one that holds memory (a swap between servers)."""
        holding = {name for name, ep in self.config.endpoints.items() if _holds_memory(ep.kind)}
        for pipeline, rows in self.plans.items():
            used = {where for _stage, _target, where in rows}
            if self.endpoint.name in used and len(used & holding) > 1:
                return pipeline
        return None

    def _with_provider(
        self, provider: Provider, identity: ServerIdentity, targets: list[Target]
    ) -> tuple[str, int] | None:
        from sourceprep_models.swap.residency import session_for

        endpoint = self.endpoint
        session = session_for(self.config, provider, self.hardware.to_dict(), self.system.size_book())
        uses = EndpointUses(tuple(dict.fromkeys(t.name for t in targets)), self._shared_pipeline())
        supports = check_supports(provider, identity, uses)
        if supports is not None:
            self.out.append(supports)

        names = [target.name for target in targets] or _available(provider)
        direct_io = check_direct_io(endpoint, {name: session.direct_io(name) for name in names})
        if direct_io is not None:
            self.out.append(direct_io)

        plan_memory = not provider.capabilities.always_ready and self.budget.total is not None
        pinned_keys = {spec.key for spec in session.pinned_specs()}
        facts = [self._facts(session, target, plan_memory, pinned_keys) for target in targets]
        sized = {fact.target.key: fact.sized for fact in facts if fact.sized is not None}
        pins = [model for key, model in sized.items() if key in pinned_keys]
        # A model too big on its own has its own problem; the pins are judged beside the largest that fits.
        unpinned = [
            model for key, model in sized.items() if key not in pinned_keys and model.bytes <= self.budget.bytes
        ]
        largest = max(unpinned, key=lambda model: model.bytes) if unpinned else None
        for fact in facts:
            self._model_checks(provider, fact, pins)
        if plan_memory:
            pins_check = check_pins(endpoint, pins, largest, self.budget, self.config.memory.allow_evict_pinned)
            if pins_check is not None:
                self.out.append(pins_check)

        try:
            loaded = provider.list_loaded()
        except SourceprepError as exc:
            self.out.append(
                problem(f"endpoint.{endpoint.name}.loaded", exc.message, "fix the endpoint's problem first")
            )
            return None
        resident = [model for model in loaded if model.occupies_memory]
        self._loaded_checks(session, resident, targets, {fact.target.key for fact in facts if fact.info})

        need = co_resident_need(pins, self._groups(sized, pins, unpinned), self.budget.bytes) if plan_memory else None
        self.out.extend(check_settings(provider, self._question(session, identity, resident, need, sized, pinned_keys)))
        pinned_total = sum(pin.bytes for pin in pins)
        together = pinned_total + (largest.bytes if largest else 0)
        if need is not None and need.bytes >= together:
            return f"{need.reason} on {endpoint.name}", need.bytes
        if together == 0:
            return None
        what = f"the pins and {largest.name}" if pins and largest else (largest.name if largest else "the pins")
        return f"{what} on {endpoint.name}", together

    def _facts(self, session: Session, target: Target, plan_memory: bool, pinned_keys: set[str]) -> _ModelFacts:
        from sourceprep_models.providers import server_label

        fact = _ModelFacts(target)
        try:
            fact.info = session.provider.describe(target.name)
        except SourceprepError as exc:
            fact.error = exc
            return fact
        if not plan_memory:
            return fact
        try:
            prediction = session.predict(session.request(target.name, target.spec))
        except SourceprepError as exc:
            fact.size_unknown = exc.message
            return fact
        if prediction.bytes <= 0:
            fact.size_unknown = f"{server_label(self.endpoint.kind)} does not report it"
            return fact
        identity = session.identity(target.name)
        fact.sized = Sized(target.name, identity, prediction.bytes, pinned=target.key in pinned_keys)
        fact.source, fact.context = prediction.source, prediction.num_ctx
        return fact

    def _model_checks(self, provider: Provider, fact: _ModelFacts, pins: list[Sized]) -> None:
        target = fact.target
        present = check_present(target.key, target.name, self.endpoint, fact.error, configured=target.spec is not None)
        self.out.append(present)
        if fact.error is not None:
            return
        context = check_default_context(provider, target.key, target.spec, target.name, fact.info)
        if context is not None:
            self.out.append(context)
        if fact.size_unknown is not None:
            self.out.append(skipped(f"model.{target.key}.fits", f"size unknown: {fact.size_unknown}"))
        elif fact.sized is not None:
            allow = self.config.memory.allow_evict_pinned
            self.out.append(check_fits(target.key, fact.sized, fact.source, fact.context, self.budget, pins, allow))

    def _loaded_checks(
        self, session: Session, resident: list[LoadedModel], targets: list[Target], present: set[str]
    ) -> None:
        endpoint = self.endpoint
        specs = {target.name: target.spec for target in targets if target.spec is not None}
        # A server on this machine without a GPU can only run models on the CPU: that is expected.
        no_gpu_here = not self.hardware.gpus and is_local(endpoint.url)
        for model in resident:
            spec = specs.get(model.name) or _spec_for(session, self.config, endpoint, model.name)
            offload = check_offload(endpoint, model, spec, no_gpu_here=no_gpu_here)
            for check in (offload, check_loaded_context(session.provider, model, spec)):
                if check is not None:
                    self.out.append(check)
        lost = {spec.key: state for spec, state in session.lost_pins(resident)}
        by_identity = {session.identity(model.name): model for model in resident}
        for spec in session.pinned_specs():
            if spec.key in present:  # a pin the server does not have: model.<key>.present says so
                holder = by_identity.get(session.identity(spec.name))
                self.out.append(check_pin_kept(spec, lost.get(spec.key, "kept"), holder, self.now))

    def _groups(self, sized: Mapping[str, Sized], pins: list[Sized], unpinned: list[Sized]) -> dict[str, list[Sized]]:
        """What each use of the endpoint keeps together: each pipeline's models, the pins plus one more."""
        groups: dict[str, list[Sized]] = {}
        for name, rows in self.plans.items():
            models = [sized[t.key] for _s, t, where in rows if where == self.endpoint.name and t.key in sized]
            if models:
                groups[f"pipeline {name!r}"] = models
        if pins and unpinned:
            groups.setdefault("the pins plus one more model", [min(unpinned, key=lambda model: model.bytes)])
        elif len(pins) > 1:
            groups.setdefault("the pins", [])
        return groups

    def _question(
        self,
        session: Session,
        identity: ServerIdentity,
        resident: list[LoadedModel],
        need: Need | None,
        sized: Mapping[str, Sized],
        pinned_keys: set[str],
    ) -> SettingsQuestion:
        """What the server's settings are judged against; the costly parts are read only when asked."""
        endpoint = self.endpoint
        relying = tuple(
            (spec.key, spec.name)
            for spec in self.config.models.values()
            if spec.endpoint == endpoint.name and spec.key not in pinned_keys and spec.keep_alive is None
        )

        def limit_seen() -> tuple[int, str] | None:
            # A pin that would fit beside what is loaded, yet is gone: a count limit is the likely cause.
            if not resident:
                return None
            loaded_bytes = sum(model.size or 0 for model in resident)
            for spec, state in session.lost_pins(resident):
                pin = sized.get(spec.key)
                if state == "missing" and pin is not None and loaded_bytes + pin.bytes <= self.budget.bytes:
                    return len(resident), pin.name
            return None

        return SettingsQuestion(
            os_name=self.hardware.os,
            gpu_count=len(self.hardware.gpus),
            identity=identity,
            need=need,
            relying=relying,
            processes=lambda: self.system.server_processes(endpoint.kind),
            reuses=lambda: self._reuses({key for key, _name in relying}),
            limit_seen=limit_seen,
        )

    def _reuses(self, relying_keys: set[str]) -> list[Reuse]:
        """Models on this endpoint that rely on the server's idle timeout and that a pipeline uses again."""
        endpoint = self.endpoint
        relying_keys = relying_keys | {
            t.key for rows in self.plans.values() for _s, t, where in rows if where == endpoint.name and t.spec is None
        }
        reuses: list[Reuse] = []
        for name, rows in self.plans.items():
            mine = {t.name for _s, t, where in rows if where == endpoint.name and t.key in relying_keys}
            if not mine:
                continue
            runs = [(stage, target.name, target.key) for stage, target, _where in rows]
            reuses += [
                reuse for reuse in reuse_gaps(name, runs, self.system.stage_durations(name)) if reuse.model in mine
            ]
        return reuses


def _available(provider: Provider) -> list[str]:
    """The server's models, for the checks that speak of all of them when the config names none."""
    try:
        return [info.name for info in provider.list_available()]
    except SourceprepError:
        return []


def _spec_for(session: Session, config: Config, endpoint: Endpoint, name: str) -> ModelSpec | None:
    """The configured model a loaded one is, matched by identity (aliases share one runner, ollama.md §4.1)."""
    identity = session.identity(name)
    for spec in config.models.values():
        if spec.endpoint == endpoint.name and session.identity(spec.name) == identity:
            return spec
    return None
