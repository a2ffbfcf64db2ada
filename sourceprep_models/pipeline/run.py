"""Run a pipeline: every stage's model resident when its work starts, with the swaps planned for the
whole run in advance, the next model's weights prefetched, every stage timed, and a run that can
stop anywhere and resume.

The flow (one run):
1. ``expand`` turns the configured stages (repeats, groups) into stage runs with stable ids.
2. ``plan_run`` asks every server of this machine what is resident and how big each model will be,
   and hands the whole sequence to the pure lookahead planner (``lookahead.plan_pipeline``) as ONE
   plan: models on different servers compete for the machine's one budget, each server's own cap on
   loaded models still holds, and a stage may evict from another server than its own. A stage that
   can never fit is refused before anything is touched (``--dry-run`` exit 6 names it).
3. ``PipelineRun.run`` executes stage by stage: at each boundary the config is re-read (an invalid
   edit pauses the run, resumable; a valid one re-plans the rest), the stage's planned evictions and
   load go through the executor (which restores pins if anything fails), the next planned load's
   weights are warmed in the background while the stage works, and each finished stage is appended to
   the run state's journal (``pipeline.state``) so that ``--resume`` continues from the first unfinished
   stage. A load that fits beside the models of an earlier stage runs in the background during that stage
   (``overlap``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from sourceprep_models.config.schema import Config
from sourceprep_models.errors import ConfigError, DoesNotFit, ModelNotFound, SourceprepError, UsageError
from sourceprep_models.pipeline.overlap import PrefetchHandle, Preload, start_prefetch, start_preload, stop_preload
from sourceprep_models.pipeline.plan import RunPlan, plan_run
from sourceprep_models.pipeline.report import RunReport, RunStopped, StageReport
from sourceprep_models.pipeline.stages import StageRun, Target, expand
from sourceprep_models.pipeline.state import RunState, begin, load_state, record, save_state, state_path
from sourceprep_models.pipeline.work import PromptClient, WorkResult, model_environment, read_prompts_file, run_command
from sourceprep_models.pipeline.writable import check_writable
from sourceprep_models.planning.load import Demand, Plan
from sourceprep_models.planning.lookahead import StagePlan
from sourceprep_models.swap.executor import Step
from sourceprep_models.swap.pins import bring_back, repair_pins
from sourceprep_models.swap.progress import ProgressFn
from sourceprep_models.swap.residency import Machine, Session
from sourceprep_models.warming.prefetch import cache_state, skip_direct_io, warm_paths

# How long a stage's swap waits for another process's swap on this machine's servers.
LOCK_TIMEOUT_S = 600.0


@dataclass
class RunContext:
    """What a run needs from the outside world, so this module stays free of CLI concerns."""

    reload_config: Callable[[], Config]
    environ: Mapping[str, str]
    info: Callable[[str], None]
    warn: Callable[[str], None]
    prefetch: bool = True  # warm the next planned load's weights while a stage works
    warm: bool = True  # warm a load's weights right before it when they were not prefetched (like `load`)
    overlap: bool = True  # load the next stage's model during the current stage where both fit (plan.preloads)
    progress: ProgressFn | None = None  # each phase of every swap, preload and prefetch (ui/progress.py shows them)
    workdir: str | None = None


def execute(
    context: RunContext,
    config: Config,
    name: str,
    *,
    dry_run: bool = False,
    resume: bool = False,
    outputs: Path | None = None,
    report: Path | None = None,
    strategy: str = "lookahead",
    single_model: bool = False,
) -> RunPlan | RunReport:
    """Plan (``dry_run``) or run pipeline ``name`` on this machine's servers; ``RunStopped`` when a run stops.

    ``report``: where the caller writes the report afterwards; checked, with the outputs and the state
    directory, before anything is loaded, so that a path that cannot be written fails the run at once."""
    from sourceprep_models.pipeline.work import reap_watchers
    from sourceprep_models.planning.lookahead import STRATEGIES
    from sourceprep_models.swap.operations import Hooks, open_machine

    if strategy not in STRATEGIES:
        raise UsageError(f"--strategy must be one of: {', '.join(STRATEGIES)}; got {strategy!r}")
    if dry_run and resume:
        raise UsageError("--dry-run plans a whole run; leave out --resume")
    outputs = outputs or state_path(name).with_suffix(".outputs.jsonl")
    with open_machine(config, hooks=Hooks(info=context.info, warn=context.warn), single_model=single_model) as machine:
        runner = PipelineRun(context, machine, config, name, resume=resume, outputs=outputs, strategy=strategy)
        if dry_run:
            return runner.plan(0)
        check_writable(runner.path, report, runner.state.outputs)
        try:
            return runner.run()
        finally:
            reap_watchers()


class PipelineRun:
    def __init__(
        self,
        context: RunContext,
        machine: Machine,
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
        self.machine = machine
        self._fingerprint = _fingerprint(config)
        self._stamp = _file_stamp(config.path)
        # Pins this run evicted, as (endpoint, name): if the run stops early, they come back at once.
        self._evicted_pins: set[tuple[str, str]] = set()
        self._preload: Preload | None = None  # the background load in flight (at most one)
        self._started = time.monotonic()  # the run's clock: wall_s and each stage's work times count from here

    def plan(self, start: int = 0) -> RunPlan:
        self.machine.reconfigure(self.config)
        plan = plan_run(self.config, self.runs[start:], self.machine, strategy=self.strategy)
        if not self.ctx.overlap:
            plan.preloads.clear()  # --no-overlap: every load at its own stage, as the dry run then shows
        return plan

    def _locked(self, host: str | None = None) -> contextlib.AbstractContextManager[None]:
        def waiting(endpoint: str) -> None:
            self.ctx.info(f"waiting for another sourceprep-models to finish on {endpoint}…")

        return self.machine.locked(LOCK_TIMEOUT_S, waiting, None if host is None else [host])  # its host's only

    # -- the run ---------------------------------------------------------------------------------------

    def run(self) -> RunReport:
        self._started = time.monotonic()
        for saved in self.state.finished.values():
            previous = StageReport.from_dict(saved)
            previous.action = "resumed" if previous.status != "skipped" else previous.action
            previous.work_started_s = previous.work_ended_s = None  # another invocation's clock
            self.report.stages.append(previous)
        pending = [index for index, run in enumerate(self.runs) if run.id not in self.state.finished]
        if not pending:
            self.state.status = "done"
            save_state(self.path, self.state)
            return self.report
        start = pending[0]
        self.state.status = "running"
        plan = self._plan_or_pause(start)
        # Saved before any stage starts: a run killed outright (kill -9) during its first stage is resumable.
        begin(self.path, self.state)
        previous_failed = bool(start and self.state.finished.get(self.runs[start - 1].id, {}).get("status") == "failed")
        prefetch: PrefetchHandle | None = None
        try:
            for index in range(start, len(self.runs)):
                run = self.runs[index]
                if index != start:
                    replanned = self._boundary(index, plan)
                    if replanned is not plan:
                        self._finish_preload()  # the new plan starts from what is resident, the preloaded model too
                    plan = replanned
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
                    pins = self._put_pins_back()
                    self.state.status = "failed"
                    self.state.message = f"stage {run.id!r} failed (exit status {code})"
                    save_state(self.path, self.state)
                    raise RunStopped(
                        f"{self.state.message}{pins}; fix it and continue with `sourceprep-models run-pipeline "
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
            pins = self._put_pins_back()
            self.state.status = "interrupted"
            self.state.message = "interrupted"
            save_state(self.path, self.state)
            raise RunStopped(
                f"interrupted{pins}; continue with `sourceprep-models run-pipeline {self.name} --resume`",
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
            pins = self._put_pins_back()
            self.state.status = "failed"
            self.state.message = f"stage {current!r}: {exc.message}"
            save_state(self.path, self.state)
            raise RunStopped(
                f"{self.state.message}{pins}; fix it and continue with `sourceprep-models run-pipeline {self.name} "
                "--resume`",
                exc.exit_code,
                self._stopped("failed"),
            ) from None
        finally:
            if prefetch is not None:
                prefetch.stop()
            self.report.wall_s = time.monotonic() - self._started

    def _stopped(self, status: str) -> RunReport:
        self.report.status = status
        self.report.message = self.state.message
        return self.report

    def _finish(self, run: StageRun, row: StageReport, *, done: bool = True) -> None:
        self.report.stages.append(row)
        if done:
            record(self.path, self.state, run.id, row.to_dict())

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
        """Between stages: re-read the config if its file changed; a valid change re-plans the rest, an invalid
        one pauses. An unchanged file is not parsed again: a long pipeline's cost per stage stays flat."""
        stamp = _file_stamp(self.config.path)
        if stamp == self._stamp:
            return plan
        self._stamp = stamp
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
        self, run: StageRun, plan: RunPlan, prefetch: PrefetchHandle | None
    ) -> tuple[StageReport, PrefetchHandle | None]:
        target = plan.targets[run.id]
        step = plan.steps.get(run.id)
        row = StageReport(run.id, target.name, target.endpoint.name, "ready" if step is None else step.action)
        session = self.machine.session(target.endpoint)
        key = plan.identities[run.id]
        prefetched = prefetch is not None and prefetch.identity == key
        if prefetch is not None:
            row.prefetched = prefetch.stop() and prefetched
        if self._preload is not None and self._preload.stage == run.id:
            preload, row.action = self._preload, "preloaded"
            row.load_s, row.hidden_s = self._finish_preload()  # a failed load raises here: this stage needed it
            row.bytes_loaded = plan.sizes.get(key, 0)
            if preload.report is not None:  # where the background load's seconds went, hidden ones included
                row.seconds = preload.report.breakdown().to_dict()
        elif step is not None:
            self._swap(run, plan, step, session, row)
        if self.ctx.overlap and self._preload is None:
            self._preload = start_preload(self.machine, self.runs, run, plan, self._locked, self.ctx.progress)
            if self._preload is not None:
                self.ctx.info(f"loading {self._preload.name} for stage {self._preload.stage!r} while {run.id!r} works")
        ahead = self._preload.identity if self._preload is not None else None
        next_prefetch = (
            start_prefetch(self.machine, plan, step, ahead, self.ctx.progress) if self.ctx.prefetch else None
        )
        work = self._work(run, target, session)
        row.work_s = work.seconds
        row.work_started_s, row.work_ended_s = work.started - self._started, work.ended - self._started
        row.ttft_s, row.tokens_per_s = work.ttft_s, work.tokens_per_s
        if work.command is not None:
            row.exit_code = work.command.exit_code
            row.status = "failed" if work.failed else "ok"
        if step is not None and step.restore_after:
            with self._locked(session.host):
                self._pins_back(plan, step, target, row)
        return row, next_prefetch

    def _swap(self, run: StageRun, plan: RunPlan, step: StagePlan, session: Session, row: StageReport) -> None:
        """The stage's swap under the machine's locks, except a planned hit whose model its server still lists:
        nothing changes, so no lock (it would not keep the model there during the work anyway) and one server
        listed. A model gone meanwhile (expired, unloaded) loads again under the locks once a background load
        (which holds them) has ended; a server that is down lists nothing, and the locked swap says why."""
        loaded = self.machine.loaded_on(session, required=False) if step.action == "hit" and not step.evict else []
        if any(resident.key == plan.identities[run.id] for resident in session.residents(loaded)):
            return
        self._finish_preload()  # its failure stops the run here (nothing else can run before its stage)
        with self._locked(session.host):
            self._swap_in(run, plan, step, session, row)

    def _finish_preload(self) -> tuple[float, float]:
        """Wait for the background load: (seconds waited, seconds hidden); its error is raised."""
        preload, self._preload = self._preload, None
        return preload.wait() if preload is not None else (0.0, 0.0)

    def _swap_in(self, run: StageRun, plan: RunPlan, step: StagePlan, session: Session, row: StageReport) -> None:
        """The stage's planned evictions (on any server of the machine) and its load."""
        target = plan.targets[run.id]
        key = plan.identities[run.id]
        current = {resident.key: resident for resident in self.machine.residents()}
        if key in current and step.action == "hit":
            return
        paths = session.weight_paths(target.name)
        warm = None if row.prefetched or not self.ctx.warm else (lambda: warm_paths(paths))
        direct_io = session.direct_io(target.name) if warm is not None and paths else None
        if direct_io is not None:
            warm = lambda: skip_direct_io(direct_io)  # noqa: E731
        row.cache = "warm" if row.prefetched else cache_state(paths)
        load_plan = Plan(
            incoming=Demand(key, target.name, plan.sizes.get(key, 0), group=target.endpoint.name),
            budget=plan.budget_of(session.host),
            # Named as the plan names them (the config's name, e.g. "small" for the server's "small:latest"),
            # so the run's report matches its --dry-run.
            evict=tuple(
                replace(current[key], name=plan.names.get(key, current[key].name))
                for key in step.evict
                if key in current
            ),
        )
        report = self.machine.executor(session).load(
            session.request(target.name, target.spec),
            load_plan,
            warm=warm if paths else None,
            restore=self.machine.restore_requests(),
            unload_timeout_s=target.endpoint.unload_timeout_s or 120.0,
            progress=self.ctx.progress,
            weights=paths,
        )
        self._evicted_pins.update((e.endpoint, e.model) for e in report.evictions if e.pinned)
        row.action = "load" if report.outcome != "already-loaded" else "hit"
        here = target.endpoint.name
        row.evicted = [e.model if e.endpoint == here else f"{e.model}@{e.endpoint}" for e in report.evictions]
        row.evicted += list(report.evicted_by_server)
        row.unload_s, row.load_s, row.warm_s = _step_times(report.steps)
        row.seconds = report.breakdown().to_dict()
        if row.action == "load":
            row.bytes_loaded = plan.sizes.get(key, 0)
        for warning in report.warnings:
            self.ctx.warn(f"stage {run.id}: {warning}")
        for eviction in report.evictions:
            if eviction.pinned:
                self.ctx.warn(
                    f"stage {run.id}: evicted pinned {eviction.model} from {eviction.endpoint} to fit {target.name}; "
                    "it is reloaded as soon as it fits again"
                )

    def _pins_back(self, plan: RunPlan, step: StagePlan, target: Target, row: StageReport) -> None:
        """After a heavy stage: make room (``evict_after``), then reload the pins it pushed out, each on its server."""
        timeout_s = target.endpoint.unload_timeout_s or 120.0
        for group, keys in _by_group(plan, step.evict_after).items():
            leaving = self.machine.executor(self.machine.session(group))
            unloaded = leaving.unload([plan.names.get(key, key) for key in keys], timeout_s=timeout_s)
            row.unload_s += sum(item.wall_s for item in unloaded.steps)
            row.evicted += unloaded.unloaded
        for group, keys in _by_group(plan, step.restore_after).items():
            home = self.machine.session(group)
            requests = home.restore_requests()
            restore = [requests[name] for name in (plan.names.get(key, key) for key in keys) if name in requests]
            steps = self.machine.executor(home).restore(restore, detail="pin back after heavy stage")
            row.restored += [request.name for request in restore]
            row.load_s += sum(item.wall_s for item in steps)

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
        work.started, work.ended = started, time.monotonic()
        work.seconds = work.ended - started
        return work

    def _put_pins_back(self) -> str:
        """The run stops early: the pins it evicted come back now (confirmed listed), then the other lost
        pins are repaired; returns the clause that says so for the run's last message."""
        stopped, self._preload = stop_preload(self.machine, self._preload), None
        restored: list[str] = []
        lost: dict[str, str] = {}
        by_endpoint: dict[str, list[str]] = {}
        for endpoint, name in sorted(self._evicted_pins):
            by_endpoint.setdefault(endpoint, []).append(name)
        for endpoint, names in by_endpoint.items():
            session = self.machine.session(endpoint)
            where = "" if len(self.machine.memory_sessions()) == 1 else f" on {endpoint}"
            try:
                with self._locked(session.host):
                    back = bring_back(
                        session,
                        names,
                        restore=self.machine.restore_requests(),
                        timeout_s=session.endpoint.unload_timeout_s or 120.0,
                    )
            except SourceprepError as exc:
                lost.update({name + where: exc.message for name in names})
                continue
            except KeyboardInterrupt:
                lost.update({name + where: "interrupted again" for name in names})
                continue
            restored += [name + where for name in back.restored]
            lost.update({name + where: why for name, why in back.lost.items()})
        self._restore_pins_at_end()
        text = stopped + (f"; pinned {', '.join(restored)} restored (listed as loaded)" if restored else "")
        for name, why in lost.items():
            text += f"; could not restore pinned {name}: {why}"
        return text

    def _restore_pins_at_end(self) -> None:
        """Pins the plan moved out for heavy stages come back before the run returns, on every server."""
        for session in self.machine.memory_sessions():
            if not session.pinned_specs():
                continue
            try:
                with self._locked(session.host):
                    repair_pins(session, self.machine.executor(session))
            except SourceprepError as exc:
                self.ctx.warn(f"could not restore pins on {session.endpoint.name}: {exc.message}")
            except KeyboardInterrupt:
                self.ctx.warn(f"pins on {session.endpoint.name} not checked: interrupted again")


def _by_group(plan: RunPlan, keys: Sequence[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key in keys:
        grouped.setdefault(plan.groups[key], []).append(key)
    return grouped


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


def _file_stamp(path: Path | None) -> tuple[int, ...] | None:
    """What changes when the file is edited or replaced (an atomic write is a new inode), cheap to read."""
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return (-1,)  # gone or unreadable: re-read, and let the loader say why
    return (info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino)


def _fingerprint(config: Config) -> str:
    """A digest of what the run depends on: models, endpoints, memory policy and pipelines."""
    return hashlib.sha256(
        repr(
            (sorted(config.endpoints.items()), sorted(config.models.items()), config.memory, config.pipelines)
        ).encode()
    ).hexdigest()
