"""The working set of one command on one endpoint: config, provider, hardware, predictions, pins.

Commands build a ``Session``, ask it for requests and plans, and hand those to the executor; the
session itself only reads (the planner decides, the executor acts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sourceprep_models.config.schema import Config, Endpoint, ModelSpec
from sourceprep_models.constants import DEFAULT_LOAD_TIMEOUT_S
from sourceprep_models.errors import ModelNotFound
from sourceprep_models.memory.sizing import Budget, Prediction, SizeBook, memory_budget, predict
from sourceprep_models.planning.load import Demand, Plan, Policy, Refusal, Resident, plan_load
from sourceprep_models.providers.base import LoadedModel, LoadRequest, Provider
from sourceprep_models.units import KeepAlive

FOREVER = KeepAlive(None)


@dataclass
class Session:
    config: Config
    endpoint: Endpoint
    provider: Provider
    hardware: dict[str, Any]
    book: SizeBook
    single_model: bool = False
    _identities: dict[str, str] = field(default_factory=dict)

    # -- what is where ---------------------------------------------------------------------------

    def identity(self, name: str) -> str:
        if name not in self._identities:
            try:
                self._identities[name] = self.provider.describe(name).identity
            except ModelNotFound:
                self._identities[name] = f"name:{name}"
        return self._identities[name]

    def loaded(self) -> list[LoadedModel]:
        """What holds memory now; parked or sleeping models do not (they are woken by a load)."""
        return [model for model in self.provider.list_loaded() if model.occupies_memory]

    def pinned_specs(self) -> list[ModelSpec]:
        return [
            spec
            for spec in self.config.models.values()
            if spec.always_available and spec.endpoint == self.endpoint.name
        ]

    def pinned_identities(self) -> set[str]:
        return {self.identity(spec.name) for spec in self.pinned_specs()}

    def residents(self, loaded: list[LoadedModel], wanted_ctx: int | None = None) -> list[Resident]:
        pins = self.pinned_identities()
        residents = []
        for model in loaded:
            key = self.identity(model.name)
            options = f"ctx={model.context_length}" if wanted_ctx is not None else ""
            residents.append(Resident(key, model.name, model.size or 0, key in pins, options))
        return residents

    # -- requests, predictions, plans ------------------------------------------------------------

    def request(
        self,
        name: str,
        spec: ModelSpec | None,
        *,
        keep_alive: KeepAlive | None = None,
        context_length: int | None = None,
        deadline_s: float | None = None,
    ) -> LoadRequest:
        """The exact request the real traffic will match: the spec's options, a pin re-asserted."""
        alive = keep_alive if keep_alive is not None else (spec.keep_alive if spec else None)
        if spec is not None and spec.always_available:
            alive = FOREVER  # a finite keep_alive from any request would drop the pin (ollama.md §3.2)
        options = spec.runner_options() if spec else {}
        if context_length is not None:
            options["num_ctx"] = context_length
        embedding = None if spec is None or spec.kind is None else spec.kind == "embedding"
        return LoadRequest(
            name=spec.name if spec else name,
            keep_alive=alive,
            options=options,
            embedding=embedding,
            deadline_s=deadline_s or self.endpoint.load_timeout_s or DEFAULT_LOAD_TIMEOUT_S,
        )

    def budget(self) -> Budget:
        return memory_budget(self.config.memory, self.hardware)

    def predict(self, request: LoadRequest) -> Prediction:
        info = self.provider.describe(request.name)
        ctx = request.options.get("num_ctx")
        return predict(
            info.identity,
            info.size,
            info.trained_context,
            ctx if isinstance(ctx, int) else None,
            self.hardware,
            self.book,
            lambda: self.provider.gguf_metadata(request.name),
        )

    def plan(self, request: LoadRequest, loaded: list[LoadedModel]) -> tuple[Plan | Refusal, Prediction, Budget]:
        prediction = self.predict(request)
        wanted_ctx = request.options.get("num_ctx")
        # Where the server fixes the context (llama.cpp), a different --ctx cannot force a reload.
        sets_context = self.provider.capabilities.sets_context
        wanted = wanted_ctx if isinstance(wanted_ctx, int) and sets_context else None
        key = self.identity(request.name)
        demand = Demand(
            key=key,
            name=request.name,
            size=prediction.bytes,
            pinned=key in self.pinned_identities(),
            options_key=f"ctx={wanted}" if wanted is not None else "",
        )
        budget = self.budget()
        policy = Policy(
            budget=budget.bytes,
            single_model=self.single_model or self.config.memory.single_model,
            allow_evict_pinned=self.config.memory.allow_evict_pinned,
            max_models=self.max_loaded(),
        )
        return plan_load(self.residents(loaded, wanted), demand, policy), prediction, budget

    def max_loaded(self) -> int | None:
        """The server's own cap on loaded models (llama.cpp --models-max), if it has and reports one."""
        return self.provider.max_loaded()

    def restore_requests(self) -> dict[str, LoadRequest]:
        """For each configured pin, by the name the server lists it under, the request that reloads it."""
        requests = {}
        for spec in self.pinned_specs():
            requests[spec.name] = self.request(spec.name, spec)
        return requests

    def weight_paths(self, name: str) -> list[Path]:
        """The weight files to warm, when they are on this machine's disk."""
        try:
            return self.provider.weight_paths(name)
        except Exception:  # warming is an optimisation: any trouble finding the files just skips it
            return []

    def remember(self, identity: str, num_ctx: int, size: int | None) -> None:
        if size:
            self.book.put(identity, num_ctx, size)

    # -- pins --------------------------------------------------------------------------------------

    def lost_pins(self, loaded: list[LoadedModel]) -> list[tuple[ModelSpec, str]]:
        """Configured pins the server no longer keeps: (spec, "missing" | "expiring")."""
        by_identity = {self.identity(model.name): model for model in loaded}
        lost = []
        for spec in self.pinned_specs():
            model = by_identity.get(self.identity(spec.name))
            if model is None:
                lost.append((spec, "missing"))
            elif model.expires_at is not None and not model.pinned:
                # Another client sent a finite keep_alive and replaced ours (ollama.md §3.2). Servers
                # that report no expiry at all (LM Studio) cannot lose a pin this way.
                lost.append((spec, "expiring"))
        return lost
