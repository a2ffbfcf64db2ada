"""Run a pipeline: every stage's model resident when its work starts, with the swaps planned for the
whole run in advance, the next model's weights prefetched, every stage timed, and a run that can
stop anywhere and resume.

The flow (one run):
1. ``expand`` turns the configured stages (repeats, groups) into stage runs with stable ids.
2. ``plan_run`` asks each endpoint what is resident and how big each model will be, and hands the
   whole sequence to the pure lookahead planner (``lookahead.plan_pipeline``), per endpoint: models
   on one server only compete for that server's budget. A stage that can never fit is refused
   before anything is touched (``--dry-run`` exit 6 names it).
3. ``PipelineRun.run`` executes stage by stage: at each boundary the config is re-read (an invalid
   edit pauses the run, resumable; a valid one re-plans the rest), the stage's planned evictions and
   load go through the executor (which restores pins if anything fails), the next planned load's
   weights are warmed in the background while the stage works, and the run state is written
   atomically so that ``--resume`` continues from the first unfinished stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sourceprep_models.config.schema import Config, Endpoint, ModelSpec, Pipeline, Stage, StageGroup
from sourceprep_models.errors import ConfigError, DoesNotFit, ModelNotFound, SourceprepError, UsageError
from sourceprep_models.pipeline.work import PromptClient, WorkResult, model_environment, read_prompts_file, run_command
from sourceprep_models.planning.load import Demand, Plan, Resident
from sourceprep_models.planning.lookahead import PipelineModel, PipelinePlan, PipelineRefusal, StagePlan, plan_pipeline
from sourceprep_models.swap.executor import Executor, Step
from sourceprep_models.swap.session import Session
from sourceprep_models.warming.prefetch import Prefetch, cache_state, warm_paths


@dataclass(frozen=True)
class StageRun:
    """One execution of a stage: ``rerank#3`` is the third repeat, ``query[2]/embed`` a grouped stage."""

    id: str
    stage: Stage


def expand(pipeline: Pipeline) -> list[StageRun]:
    runs: list[StageRun] = []

    def add(stage: Stage, prefix: str) -> None:
        for repeat in range(1, stage.repeat + 1):
            suffix = f"#{repeat}" if stage.repeat > 1 else ""
            runs.append(StageRun(f"{prefix}{stage.name}{suffix}", stage))

    for item in pipeline.stages:
        if isinstance(item, StageGroup):
            for round_ in range(1, item.repeat + 1):
                for stage in item.stages:
                    add(stage, f"{item.name}[{round_}]/" if item.repeat > 1 else f"{item.name}/")
        else:
            add(item, "")
    return runs


@dataclass(frozen=True)
class Target:
    """A stage's model, resolved against the config: the server's name for it and its endpoint."""

    key: str
    name: str
    spec: ModelSpec | None
    endpoint: Endpoint


def resolve_target(config: Config, model: str) -> Target:
    specs = config.find_models(model)
    if len({spec.endpoint for spec in specs}) > 1:
        where = ", ".join(sorted({spec.endpoint for spec in specs}))
        raise UsageError(f"{model!r} is configured on several endpoints ({where}); use its models.<key> in the stage")
    if specs:
        spec = specs[0]
        return Target(spec.key, spec.name, spec, config.endpoints[spec.endpoint])
    return Target(model, model, None, config.endpoints[config.default_endpoint])


# -- planning -----------------------------------------------------------------------------------------


@dataclass
class RunPlan:
    """The whole run's plan: per stage run, its target and (for endpoints that hold models) its step."""

    runs: list[StageRun]
    targets: dict[str, Target]
    identities: dict[str, str]  # stage id -> identity of its model
    steps: dict[str, StagePlan | None]  # None: an always-ready endpoint (cloud), nothing to plan
    plans: dict[str, PipelinePlan]  # per endpoint name
    names: dict[str, str] = field(default_factory=dict)  # identity -> server name (for evictions)
    sizes: dict[str, int] = field(default_factory=dict)  # identity -> predicted bytes

    @property
    def loads(self) -> int:
        return sum(plan.loads for plan in self.plans.values())

    @property
    def bytes_loaded(self) -> int:
        return sum(plan.bytes_loaded for plan in self.plans.values())

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for run in self.runs:
            target = self.targets[run.id]
            step = self.steps.get(run.id)
            rows.append(
                {
                    "stage": run.id,
                    "model": target.name,
                    "endpoint": target.endpoint.name,
                    "action": step.action if step else "ready",
                    "evict": [self.names.get(key, key) for key in step.evict] if step else [],
                    "restore_after": [self.names.get(key, key) for key in step.restore_after] if step else [],
                    "prefetch": self.names.get(step.prefetch, step.prefetch) if step and step.prefetch else None,
                    "resident": [self.names.get(key, key) for key in step.resident_after] if step else [],
                    "predicted_bytes": step.bytes_resident if step else 0,
                }
            )
        return {
            "stages": rows,
            "loads": self.loads,
            "bytes_loaded": self.bytes_loaded,
            "budgets": {name: plan.budget for name, plan in self.plans.items()},
        }


def plan_run(
    config: Config,
    runs: Sequence[StageRun],
    session_for: Callable[[Endpoint], Session],
    *,
    strategy: str = "lookahead",
    missing_pins_resident: bool = True,
) -> RunPlan:
    """Plan every stage run; raises ``ModelNotFound`` / ``DoesNotFit`` naming the stage."""
    targets = {run.id: resolve_target(config, run.stage.model) for run in runs}
    identities: dict[str, str] = {}
    names: dict[str, str] = {}
    sizes: dict[str, int] = {}
    by_endpoint: dict[str, list[StageRun]] = {}
    ready: set[str] = set()
    for run in runs:
        target = targets[run.id]
        session = session_for(target.endpoint)
        try:
            session.provider.describe(target.name)
        except ModelNotFound as exc:
            raise ModelNotFound(f"stage {run.id!r}: {exc.message}") from None
        identity = session.identity(target.name)
        identities[run.id] = identity
        names.setdefault(identity, target.name)
        if session.provider.capabilities.always_ready:
            ready.add(run.id)
            continue
        if identity not in sizes:
            sizes[identity] = session.predict(session.request(target.name, target.spec)).bytes
        by_endpoint.setdefault(target.endpoint.name, []).append(run)

    steps: dict[str, StagePlan | None] = dict.fromkeys(ready)
    plans: dict[str, PipelinePlan] = {}
    for endpoint_name, endpoint_runs in by_endpoint.items():
        session = session_for(config.endpoints[endpoint_name])
        models, resident = _endpoint_state(session, names, sizes, missing_pins_resident)
        for run in endpoint_runs:
            identity = identities[run.id]
            if identity not in models:
                models[identity] = PipelineModel(
                    key=identity, name=names[identity], size=sizes[identity], keep_alive_s=_keep_alive(targets[run.id])
                )
        budget = session.budget()
        result = plan_pipeline(
            [(run.id, identities[run.id]) for run in endpoint_runs],
            models,
            resident,
            budget.bytes,
            strategy=strategy,
            allow_evict_pinned=config.memory.allow_evict_pinned,
            max_models=session.max_loaded(),
        )
        if isinstance(result, PipelineRefusal):
            raise DoesNotFit(f"stage {result.stage!r} on {endpoint_name}: {result.reason}")
        plans[endpoint_name] = result
        for run, step in zip(endpoint_runs, result.stages, strict=True):
            steps[run.id] = step
    return RunPlan(list(runs), targets, identities, steps, plans, names, sizes)


def _endpoint_state(
    session: Session, names: dict[str, str], sizes: dict[str, int], missing_pins_resident: bool
) -> tuple[dict[str, PipelineModel], list[str]]:
    """The models resident on one endpoint now (plus configured pins a run would repair first)."""
    pins = session.pinned_identities()
    models: dict[str, PipelineModel] = {}
    resident: list[str] = []
    for loaded in session.loaded():
        identity = session.identity(loaded.name)
        names.setdefault(identity, loaded.name)
        size = loaded.size or sizes.get(identity) or 0
        sizes.setdefault(identity, size)
        models[identity] = PipelineModel(key=identity, name=loaded.name, size=size, pinned=identity in pins)
        resident.append(identity)
    if missing_pins_resident:
        for spec in session.pinned_specs():
            identity = session.identity(spec.name)
            if identity in models:
                continue
            try:
                size = session.predict(session.request(spec.name, spec)).bytes
            except ModelNotFound:
                continue  # status/doctor report a pin the server does not have
            names.setdefault(identity, spec.name)
            sizes.setdefault(identity, size)
            models[identity] = PipelineModel(key=identity, name=spec.name, size=size, pinned=True)
            resident.append(identity)
    return models, resident


def _keep_alive(target: Target) -> float | None:
    alive = target.spec.keep_alive if target.spec else None
    return alive.seconds if alive is not None else None


# -- run state (resume) --------------------------------------------------------------------------------


@dataclass
class RunState:
    """What survives between invocations: which stage runs finished, and why the run stopped."""

    pipeline: str
    status: str = "running"  # running | done | failed | paused | interrupted
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage id -> its report row
    message: str | None = None
    outputs: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    updated_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "status": self.status,
            "finished": self.finished,
            "message": self.message,
            "outputs": self.outputs,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        return cls(
            pipeline=str(data["pipeline"]),
            status=str(data.get("status", "running")),
            finished=dict(data.get("finished") or {}),
            message=data.get("message"),
            outputs=data.get("outputs"),
            started_at=str(data.get("started_at") or ""),
            updated_at=data.get("updated_at"),
        )


def state_path(pipeline: str) -> Path:
    from sourceprep_models.paths import runs_dir

    safe = "".join(char if char.isalnum() or char in "-_." else "_" for char in pipeline)
    return runs_dir() / f"{safe}.json"


def load_state(path: Path) -> RunState | None:
    try:
        return RunState.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceprepError(f"the saved run state {path} is unreadable ({exc}); delete it to start over") from None


def save_state(path: Path, state: RunState) -> None:
    from sourceprep_models.fs import write_atomic

    state.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(state.to_dict(), indent=2) + "\n")


# -- execution --------------------------------------------------------------------------------------


@dataclass
class StageReport:
    """One row of the run's timing table."""

    stage: str
    model: str
    endpoint: str
    action: str  # hit | load | ready | skipped | resumed
    status: str = "ok"  # ok | failed | skipped
    evicted: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    prefetched: bool = False
    cache: str | None = None  # page cache of the weights when the load started: warm | cold | None (unknown)
    warm_s: float = 0.0
    unload_s: float = 0.0
    load_s: float = 0.0
    work_s: float = 0.0
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    exit_code: int | None = None
    bytes_loaded: int = 0

    @property
    def total_s(self) -> float:
        return self.warm_s + self.unload_s + self.load_s + self.work_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "model": self.model,
            "endpoint": self.endpoint,
            "action": self.action,
            "status": self.status,
            "evicted": self.evicted,
            "restored": self.restored,
            "prefetched": self.prefetched,
            "cache": self.cache,
            "warm_s": round(self.warm_s, 4),
            "unload_s": round(self.unload_s, 4),
            "load_s": round(self.load_s, 4),
            "work_s": round(self.work_s, 4),
            "ttft_s": round(self.ttft_s, 4) if self.ttft_s is not None else None,
            "tokens_per_s": round(self.tokens_per_s, 2) if self.tokens_per_s is not None else None,
            "exit_code": self.exit_code,
            "bytes_loaded": self.bytes_loaded,
            "total_s": round(self.total_s, 4),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageReport:
        fields = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**fields)


@dataclass
class RunReport:
    pipeline: str
    stages: list[StageReport] = field(default_factory=list)
    status: str = "running"
    message: str | None = None
    outputs: str | None = None
    warnings: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def work_s(self) -> float:
        return sum(row.work_s for row in self.stages)

    @property
    def total_s(self) -> float:
        return sum(row.total_s for row in self.stages)

    @property
    def swap_penalty_s(self) -> float:
        """What swapping cost: the run's stage time minus the same stages' work time."""
        return self.total_s - self.work_s

    @property
    def loads(self) -> int:
        return sum(1 for row in self.stages if row.action == "load") + sum(len(row.restored) for row in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "status": self.status,
            "message": self.message,
            "stages": [row.to_dict() for row in self.stages],
            "totals": {
                "stages": len(self.stages),
                "loads": self.loads,
                "bytes_loaded": sum(row.bytes_loaded for row in self.stages),
                "unload_s": round(sum(row.unload_s for row in self.stages), 4),
                "load_s": round(sum(row.load_s for row in self.stages), 4),
                "warm_s": round(sum(row.warm_s for row in self.stages), 4),
                "work_s": round(self.work_s, 4),
                "total_s": round(self.total_s, 4),
                "swap_penalty_s": round(self.swap_penalty_s, 4),
            },
            "outputs": self.outputs,
            "warnings": self.warnings,
        }


class RunStopped(SourceprepError):
    """The run stopped before its end; the state is saved and ``--resume`` continues it."""

    def __init__(self, message: str, exit_code: int, report: RunReport) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.report = report


@dataclass
class RunContext:
    """What a run needs from the outside world, so this module stays free of CLI concerns."""

    reload_config: Callable[[], Config]
    open_session: Callable[[Endpoint], contextlib.AbstractContextManager[Session]]
    make_executor: Callable[[Session], Executor]
    lock: Callable[[Session], contextlib.AbstractContextManager[None]]
    environ: Mapping[str, str]
    info: Callable[[str], None]
    warn: Callable[[str], None]
    prefetch: bool = True  # warm the next planned load's weights while a stage works
    warm: bool = True  # warm a load's weights right before it when they were not prefetched (like `load`)
    workdir: str | None = None


class PipelineRun:
    def __init__(
        self,
        context: RunContext,
        config: Config,
        name: str,
        *,
        resume: bool,
        outputs: Path,
        strategy: str = "lookahead",
    ) -> None:
        if name not in config.pipelines:
            known = ", ".join(sorted(config.pipelines)) or "none (add [pipelines.NAME] to the config)"
            raise UsageError(f"no pipeline named {name!r} in the config; pipelines: {known}")
        self.ctx = context
        self.strategy = strategy
        self.config = config
        self.name = name
        self.runs = expand(config.pipelines[name])
        self.path = state_path(name)
        saved = load_state(self.path) if resume else None
        if resume and saved is None:
            raise UsageError(f"no saved run of {name!r} to resume; run it without --resume")
        if saved is not None and saved.status == "done":
            raise UsageError(f"the last run of {name!r} finished; run it without --resume to start again")
        self.state = saved or RunState(pipeline=name, outputs=str(outputs))
        self.state.outputs = self.state.outputs or str(outputs)
        self.report = RunReport(pipeline=name, outputs=self.state.outputs)
        self._sessions: dict[str, Session] = {}
        self._stack = contextlib.ExitStack()
        self._fingerprint = _fingerprint(config)

    # -- sessions, one per endpoint for the whole run -----------------------------------------------

    def _session(self, endpoint: Endpoint) -> Session:
        if endpoint.name not in self._sessions:
            self._sessions[endpoint.name] = self._stack.enter_context(self.ctx.open_session(endpoint))
        session = self._sessions[endpoint.name]
        session.config = self.config
        return session

    def plan(self, start: int = 0) -> RunPlan:
        return plan_run(self.config, self.runs[start:], self._session, strategy=self.strategy)

    def close(self) -> None:
        self._stack.close()

    # -- the run ---------------------------------------------------------------------------------------

    def run(self) -> RunReport:
        started = time.monotonic()
        for saved in self.state.finished.values():
            previous = StageReport.from_dict(saved)
            previous.action = "resumed" if previous.status != "skipped" else previous.action
            self.report.stages.append(previous)
        pending = [index for index, run in enumerate(self.runs) if run.id not in self.state.finished]
        if not pending:
            self.state.status = "done"
            save_state(self.path, self.state)
            return self.report
        start = pending[0]
        self.state.status = "running"
        plan = self._plan_or_pause(start)
        previous_failed = bool(start and self.state.finished.get(self.runs[start - 1].id, {}).get("status") == "failed")
        prefetch: _PrefetchHandle | None = None
        try:
            for index in range(start, len(self.runs)):
                run = self.runs[index]
                if index != start:
                    plan = self._boundary(index, plan)
                if run.stage.when == "previous_failed" and not previous_failed:
                    row = StageReport(run.id, plan.targets[run.id].name, plan.targets[run.id].endpoint.name, "skipped")
                    row.status = "skipped"
                    self._finish(run, row)
                    continue
                row, prefetch = self._stage(run, plan, prefetch)
                previous_failed = row.status == "failed"
                following = self.runs[index + 1] if index + 1 < len(self.runs) else None
                handled = following is not None and following.stage.when == "previous_failed"
                # A failure that stops the run leaves its stage unfinished: --resume runs it again.
                self._finish(run, row, done=not previous_failed or handled)
                if previous_failed and not handled:
                    code = row.exit_code or 1
                    self.state.status = "failed"
                    self.state.message = f"stage {run.id!r} failed (exit status {code})"
                    save_state(self.path, self.state)
                    raise RunStopped(
                        f"{self.state.message}; fix it and continue with `sourceprep-models run-pipeline "
                        f"{self.name} --resume`",
                        code,
                        self._stopped("failed"),
                    )
            self.state.status = "done"
            self.state.message = None
            save_state(self.path, self.state)
            self.report.status = "done"
            self._restore_pins_at_end()
            return self.report
        except KeyboardInterrupt:
            if prefetch is not None:
                prefetch.stop()
            self._restore_pins_at_end()
            self.state.status = "interrupted"
            self.state.message = "interrupted"
            save_state(self.path, self.state)
            raise RunStopped(
                f"interrupted; pins restored; continue with `sourceprep-models run-pipeline {self.name} --resume`",
                130,
                self._stopped("interrupted"),
            ) from None
        except RunStopped:
            raise
        except SourceprepError as exc:
            # A server, model or file problem mid-run: the run stops resumable, pins put back.
            if prefetch is not None:
                prefetch.stop()
            current = next((run.id for run in self.runs if run.id not in self.state.finished), "?")
            self._restore_pins_at_end()
            self.state.status = "failed"
            self.state.message = f"stage {current!r}: {exc.message}"
            save_state(self.path, self.state)
            raise RunStopped(
                f"{self.state.message}; fix it and continue with `sourceprep-models run-pipeline {self.name} --resume`",
                exc.exit_code,
                self._stopped("failed"),
            ) from None
        finally:
            if prefetch is not None:
                prefetch.stop()
            self.report.wall_s = time.monotonic() - started

    def _stopped(self, status: str) -> RunReport:
        self.report.status = status
        self.report.message = self.state.message
        return self.report

    def _finish(self, run: StageRun, row: StageReport, *, done: bool = True) -> None:
        self.report.stages.append(row)
        if done:
            self.state.finished[run.id] = row.to_dict()
        save_state(self.path, self.state)

    def _plan_or_pause(self, index: int) -> RunPlan:
        try:
            return self.plan(index)
        except (ModelNotFound, DoesNotFit) as exc:
            self._pause(exc.message, exc.exit_code)
            raise AssertionError("unreachable") from None

    def _pause(self, message: str, exit_code: int) -> None:
        self.state.status = "paused"
        self.state.message = message
        save_state(self.path, self.state)
        raise RunStopped(
            f"{message}; the run is paused: fix it and continue with `sourceprep-models run-pipeline {self.name} "
            "--resume`",
            exit_code,
            self._stopped("paused"),
        )

    def _boundary(self, index: int, plan: RunPlan) -> RunPlan:
        """Between stages: re-read the config; a valid change re-plans the rest, an invalid one pauses."""
        try:
            config = self.ctx.reload_config()
        except ConfigError as exc:
            self._pause(f"the config changed and is now invalid: {exc.message}", exc.exit_code)
        if self.name not in config.pipelines:
            self._pause(f"the config no longer has pipeline {self.name!r}", ConfigError.exit_code)
        fingerprint = _fingerprint(config)
        if fingerprint == self._fingerprint:
            return plan
        self.ctx.info(f"config changed before stage {self.runs[index].id!r}: re-planning the remaining stages")
        runs = expand(config.pipelines[self.name])
        finished = set(self.state.finished)
        if [run.id for run in runs[:index]] != [run.id for run in self.runs[:index]] and not all(
            run.id in finished for run in runs[:index]
        ):
            self._pause(
                f"the config changed the stages already run in pipeline {self.name!r}; start a new run (without "
                "--resume) or restore them",
                ConfigError.exit_code,
            )
        self.config, self.runs, self._fingerprint = config, runs, fingerprint
        return self._plan_or_pause(index)

    def _stage(
        self, run: StageRun, plan: RunPlan, prefetch: _PrefetchHandle | None
    ) -> tuple[StageReport, _PrefetchHandle | None]:
        target = plan.targets[run.id]
        step = plan.steps.get(run.id)
        row = StageReport(run.id, target.name, target.endpoint.name, "ready" if step is None else step.action)
        session = self._session(target.endpoint)
        identity = plan.identities[run.id]
        prefetched = prefetch is not None and prefetch.identity == identity
        if prefetch is not None:
            row.prefetched = prefetch.stop() and prefetched
        if step is not None:
            executor = self.ctx.make_executor(session)
            request = session.request(target.name, target.spec)
            with self.ctx.lock(session):
                resident = {session.identity(model.name): model for model in session.loaded()}
                if identity in resident and step.action == "hit":
                    pass
                else:
                    paths = session.weight_paths(target.name)
                    warm = None if row.prefetched or not self.ctx.warm else (lambda: warm_paths(paths))
                    row.cache = "warm" if row.prefetched else cache_state(paths)
                    victims = tuple(
                        Resident(
                            key, plan.names.get(key, key), plan.sizes.get(key, 0), key in session.pinned_identities()
                        )
                        for key in step.evict
                        if key in resident
                    )
                    load_plan = Plan(
                        incoming=Demand(identity, target.name, plan.sizes.get(identity, 0)),
                        budget=plan.plans[target.endpoint.name].budget,
                        evict=victims,
                    )
                    report = executor.load(
                        request,
                        load_plan,
                        warm=warm if paths else None,
                        restore=session.restore_requests(),
                        unload_timeout_s=target.endpoint.unload_timeout_s or 120.0,
                    )
                    row.action = "load" if report.outcome != "already-loaded" else "hit"
                    row.evicted = list(report.evicted) + list(report.evicted_by_server)
                    row.unload_s, row.load_s, row.warm_s = _step_times(report.steps)
                    if row.action == "load":
                        row.bytes_loaded = plan.sizes.get(identity, 0)
                    for warning in report.warnings:
                        self.ctx.warn(f"stage {run.id}: {warning}")
        next_prefetch = self._start_prefetch(plan, step, session) if self.ctx.prefetch else None
        work = self._work(run, target, session)
        row.work_s = work.seconds
        row.ttft_s, row.tokens_per_s = work.ttft_s, work.tokens_per_s
        if work.command is not None:
            row.exit_code = work.command.exit_code
            row.status = "failed" if work.failed else "ok"
        if step is not None and step.restore_after:
            requests = session.restore_requests()
            names = [plan.names.get(key, key) for key in step.restore_after]
            restore = [requests[name] for name in names if name in requests]
            executor = self.ctx.make_executor(session)
            with self.ctx.lock(session):
                if step.evict_after:  # make room first: the pin left because it did not fit beside them
                    leaving = [plan.names.get(key, key) for key in step.evict_after]
                    unloaded = executor.unload(leaving, timeout_s=target.endpoint.unload_timeout_s or 120.0)
                    row.unload_s += sum(item.wall_s for item in unloaded.steps)
                    row.evicted += unloaded.unloaded
                steps = executor.restore(restore, detail="pin back after heavy stage")
            row.restored = [request.name for request in restore]
            row.load_s += sum(item.wall_s for item in steps)
        return row, next_prefetch

    def _start_prefetch(self, plan: RunPlan, step: StagePlan | None, session: Session) -> _PrefetchHandle | None:
        """Warm the weights of the next model this endpoint's plan loads, while the stage works."""
        if step is None or step.prefetch is None:
            return None
        name = plan.names.get(step.prefetch, step.prefetch)
        paths = session.weight_paths(name)
        if not paths:
            return None
        return _PrefetchHandle(step.prefetch, Prefetch.start(name, paths))

    def _work(self, run: StageRun, target: Target, session: Session) -> WorkResult:
        stage = run.stage
        work = WorkResult()
        started = time.monotonic()
        prompts = list(stage.prompts)
        base = str(self.config.path.parent) if self.config.path else self.ctx.workdir
        if stage.prompts_file:
            prompts += read_prompts_file(stage.prompts_file, base)
        if prompts:
            request = session.request(target.name, target.spec)
            keep = request.keep_alive.seconds if request.keep_alive is not None else None
            client = PromptClient(target.endpoint, self.ctx.environ)
            try:
                with _open_outputs(self.state.outputs) as sink:
                    for prompt in prompts:
                        result = client.send(
                            target.name, prompt, max_tokens=stage.max_tokens, options=request.options, keep_alive=keep
                        )
                        work.prompts.append(result)
                        if sink is not None:
                            sink.write(json.dumps({"stage": run.id, "model": target.name, **result.to_dict()}) + "\n")
            finally:
                client.close()
        if stage.command:
            env = model_environment(target.endpoint, target.name, target.key, self.ctx.environ)
            env["SOURCEPREP_STAGE"] = run.id
            env["SOURCEPREP_PIPELINE"] = self.name
            env["SOURCEPREP_OUTPUTS"] = self.state.outputs or ""
            work.command = run_command(stage.command, env, cwd=base)
        work.seconds = time.monotonic() - started
        return work

    def _restore_pins_at_end(self) -> None:
        """Pins the plan moved out for heavy stages come back before the run returns."""
        from sourceprep_models.swap.pins import repair_pins

        for session in self._sessions.values():
            if session.provider.capabilities.always_ready or not session.pinned_specs():
                continue
            try:
                with self.ctx.lock(session):
                    repair_pins(session, self.ctx.make_executor(session))
            except SourceprepError as exc:
                self.ctx.warn(f"could not restore pins on {session.endpoint.name}: {exc.message}")


@dataclass
class _PrefetchHandle:
    identity: str
    prefetch: Prefetch

    def stop(self) -> bool:
        """Stop reading (if still at it); True when the model's weights were read in full."""
        return self.prefetch.finish()


def _step_times(steps: Sequence[Step]) -> tuple[float, float, float]:
    unload = sum(step.wall_s for step in steps if step.step in ("unload", "wait-for-free"))
    load = sum(step.wall_s for step in steps if step.step in ("load", "verify", "restore"))
    warm = sum(step.wall_s for step in steps if step.step == "warm")
    return unload, load, warm


@contextlib.contextmanager
def _open_outputs(path: str | None) -> Iterator[TextIO | None]:
    if not path:
        yield None
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as sink:
        yield sink


def _fingerprint(config: Config) -> str:
    """A digest of what the run depends on: models, endpoints, memory policy and pipelines."""
    return hashlib.sha256(
        repr(
            (sorted(config.endpoints.items()), sorted(config.models.items()), config.memory, config.pipelines)
        ).encode()
    ).hexdigest()
