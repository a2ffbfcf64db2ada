"""The whole doctor run: gather the config (or why it cannot be read), then every check in order —
config, hardware, then each endpoint with its models and settings — into one ``DoctorReport``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sourceprep_models.config.schema import LOCAL_HOST
from sourceprep_models.doctor.checks.config import check_config_found, check_config_valid, check_endpoint_source
from sourceprep_models.doctor.checks.hardware import check_apple_gpu, check_budget, check_gpu, check_memory
from sourceprep_models.doctor.endpoint import EndpointRun, Target
from sourceprep_models.doctor.records import Check, DoctorInputs, DoctorReport, problem, skipped
from sourceprep_models.errors import SourceprepError

if TYPE_CHECKING:
    from sourceprep_models.config.schema import Config, Endpoint
    from sourceprep_models.doctor.system import DoctorSystem

# Endpoints checked at once; more than this wait for a free worker.
_MAX_PARALLEL = 16


def diagnose(
    config_path: str | None,
    environ: Mapping[str, str],
    load: Callable[[], Config],
    system: DoctorSystem,
    *,
    only_endpoint: str | None = None,
    endpoint_named: Callable[[str], object] | None = None,
) -> DoctorReport:
    """Read the config and run every check against ``system``, which is closed afterwards.

    ``endpoint_named`` validates ``only_endpoint`` once the config is readable (an unknown name is a
    usage error, as in every command)."""
    try:
        inputs = gather_inputs(config_path, environ, load, only_endpoint)
        if only_endpoint is not None and inputs.config is not None and endpoint_named is not None:
            endpoint_named(only_endpoint)
        return run_doctor(inputs, system)
    finally:
        system.close()


def gather_inputs(
    config_path: str | None, environ: Mapping[str, str], load: Callable[[], Config], only_endpoint: str | None
) -> DoctorInputs:
    """Where the config is and what it says (or why it cannot be read); never raises for a bad config."""
    from sourceprep_models.config.locate import locate_config
    from sourceprep_models.errors import ConfigError

    location = locate_config(config_path, environ)
    exists = location.path is None or location.path.is_file()
    config: Config | None = None
    error = None
    try:
        config = load()
    except ConfigError as exc:
        error = exc.message
    return DoctorInputs(location, exists, config, error, environ, only_endpoint)


def run_doctor(inputs: DoctorInputs, system: DoctorSystem, *, now: datetime | None = None) -> DoctorReport:
    """Every check, in order: config, hardware, then each endpoint with its models and settings."""
    from sourceprep_models.doctor.checks.hosts import check_hosts, remote_budgets
    from sourceprep_models.memory.sizing import host_budget, memory_budget

    report = DoctorReport()
    checks = report.checks
    checks.append(check_config_found(inputs.location, inputs.config_exists))
    checks.append(check_config_valid(inputs.config, inputs.config_error))
    hardware = system.hardware()
    checks.append(check_memory(hardware))
    checks.append(check_gpu(hardware))
    config = inputs.config
    if config is None:
        checks.append(skipped("endpoints", "endpoint and model checks need a valid config"))
        return report
    budget = memory_budget(config.memory, hardware.to_dict())
    checks.append(check_budget(budget, config.memory.headroom_bytes))
    apple_at = len(checks)
    names = [inputs.only_endpoint] if inputs.only_endpoint else list(config.endpoints)
    targets = [config.endpoints[name] for name in names]
    host_budgets = remote_budgets(config, targets, system)
    checks.extend(check_hosts(config, targets, host_budgets))
    for endpoint in targets:
        checks.append(check_endpoint_source(endpoint, config, inputs.environ))
    plans = _pipeline_targets(config, checks)
    demand: tuple[str, int] | None = None
    when = now or datetime.now(UTC)

    def one(endpoint: Endpoint) -> tuple[list[Check], tuple[str, int] | None]:
        out: list[Check] = []
        # A server on another machine is checked against that machine's budget, not this one's.
        spec = config.hosts.get(endpoint.host)
        budget_there = budget
        if endpoint.host != LOCAL_HOST and spec is not None:
            budget_there = host_budgets.get(endpoint.host) or host_budget(spec)
        run = EndpointRun(endpoint, config, hardware, budget_there, plans, system, when, out)
        return out, _endpoint_checks(run)

    # The endpoints are looked at all at once (a hung one costs its status_timeout, not added to the
    # others'); their checks are reported in config order.
    with ThreadPoolExecutor(max_workers=max(1, min(len(targets), _MAX_PARALLEL))) as pool:
        for out, found in pool.map(one, targets):
            checks.extend(out)
            if found is not None and (demand is None or found[1] > demand[1]):
                demand = found
    apple = check_apple_gpu(hardware, demand, config.memory.headroom_bytes)
    if apple is not None:
        checks.insert(apple_at, apple)
    return report


def _endpoint_checks(run: EndpointRun) -> tuple[str, int] | None:
    """One endpoint's checks, as a look: every request gives up after its status_timeout (a hung server
    is a problem check naming it, not a hang)."""
    from sourceprep_models.providers._http import looking

    endpoint = run.endpoint
    try:
        with looking(endpoint.status_timeout_s):
            return run.checks()
    except Exception as exc:  # a bug in one check must not hide the other endpoints
        run.out.append(
            problem(
                f"endpoint.{endpoint.name}.doctor",
                f"doctor could not finish the checks of endpoint {endpoint.name!r}: {type(exc).__name__}: {exc}",
                "report this as a bug; the other endpoints were checked",
            )
        )
        return None


def _pipeline_targets(config: Config, checks: list[Check]) -> dict[str, list[tuple[str, Target, str]]]:
    """Per pipeline, (stage run id, target, endpoint name) in run order; a stage whose model cannot be
    resolved makes that pipeline a problem instead."""
    from sourceprep_models.pipeline.stages import expand, resolve_target

    plans: dict[str, list[tuple[str, Target, str]]] = {}
    for name, pipeline in config.pipelines.items():
        rows = []
        try:
            for run in expand(pipeline):
                target = resolve_target(config, run.stage.model)
                key = target.spec.key if target.spec else target.name
                rows.append((run.id, Target(key, target.name, target.spec), target.endpoint.name))
        except SourceprepError as exc:
            checks.append(
                problem(f"pipeline.{name}.models", exc.message, "name each stage's model by its models.<key>")
            )
            continue
        plans[name] = rows
    return plans
