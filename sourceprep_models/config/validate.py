"""Validate unwrapped TOML data into ``schema`` records; every failure names the file, line and key path.

The provider registry's kinds and per-kind rules come in as an ``EndpointKinds`` record: the config
sits below the providers in the layers, so it holds no list of server kinds of its own.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sourceprep_models.config.hosts import assign_hosts, host_key, model_endpoints, parse_hosts
from sourceprep_models.config.keylines import KeyPath, dotted
from sourceprep_models.config.schema import (
    MODEL_KINDS,
    STAGE_WHEN,
    STATUS_TIMEOUT_RANGE_S,
    Config,
    Endpoint,
    EndpointKinds,
    MemoryPolicy,
    ModelSpec,
    Pipeline,
    Stage,
    StageGroup,
)
from sourceprep_models.config.urls import http_url, server_address
from sourceprep_models.constants import DEFAULT_ENDPOINT_NAME, ENV_OLLAMA_HOST
from sourceprep_models.errors import ConfigError
from sourceprep_models.units import (
    DurationOutOfRange,
    KeepAlive,
    parse_duration,
    parse_keep_alive,
    parse_size,
    shorten,
)

T = TypeVar("T")

_TOP_KEYS = ("endpoints", "models", "memory", "pipelines", "default_endpoint", "hosts")
_ENDPOINT_KEYS = (
    "kind", "url", "api_key_env", "load_timeout", "unload_timeout", "status_timeout", "sleep_level", "host"
)  # fmt: skip
_MODEL_KEYS = ("name", "endpoint", "endpoints", "keep_alive", "context_length", "options", "always_available", "kind")
_MEMORY_KEYS = ("budget", "headroom", "single_model", "allow_evict_pinned")
_PIPELINE_KEYS = ("stages", "description")
_STAGE_KEYS = ("name", "model", "repeat", "prompts", "prompts_file", "command", "max_tokens", "when")
_GROUP_KEYS = ("name", "repeat", "stages")
# Keys that would put a secret into the file; secrets are referenced by env var name only.
_SECRET_KEYS = ("api_key", "apikey", "token", "password", "secret", "authorization")
# Ollama runner/sampling options and their JSON types (ollama.md §4.7: a wrong type is a 500 at load).
_INT_OPTIONS = (
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
    "num_keep",
    "num_predict",
    "top_k",
    "seed",
    "repeat_last_n",
    "draft_num_predict",
)
_FLOAT_OPTIONS = ("temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty")
_BOOL_OPTIONS = ("use_mmap", "numa", "low_vram", "penalize_newline")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Servers read whole numbers as 64-bit integers (Go's int for Ollama's options); a larger one is a
# 400 at load time, so it is refused here.
_INT64_MAX = 2**63 - 1
# Stage runs per pipeline, repeats expanded. Every run is planned before the first stage starts and
# the whole-run planner looks ahead over all of them: 10,000 runs of a repeated group plan in under a
# second end to end (planning/exact.py skips repeated blocks), `repeat = 1e9` would never finish.
# Longer work loops `run-pipeline` in a script.
MAX_STAGE_RUNS = 10_000
_REPEAT_WHY = f" (a pipeline runs at most {MAX_STAGE_RUNS:,} stages, each planned before the first starts)"


class Validator:
    """Walks the unwrapped TOML data; every failure names the file, line and key path."""

    def __init__(self, label: str, lines: dict[KeyPath, int], environ: Mapping[str, str], kinds: EndpointKinds) -> None:
        self.label = label
        self.lines = lines
        self.environ = environ
        self.kinds = kinds
        self.host_names: dict[str, str] = {}  # endpoint -> the host it names (resolved with the hosts)

    # -- reporting ---------------------------------------------------------------------------

    def fail(self, keypath: KeyPath, problem: str) -> ConfigError:
        line = self._line_of(keypath)
        where = f"{self.label}:{line}" if line else self.label
        key = dotted(keypath)
        return ConfigError(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")

    def _line_of(self, keypath: KeyPath) -> int | None:
        for end in range(len(keypath), 0, -1):
            if keypath[:end] in self.lines:
                return self.lines[keypath[:end]]
        # A table only ever named through a deeper header ([a.b] names a, too).
        deeper = [line for path, line in self.lines.items() if path[: len(keypath)] == keypath]
        return min(deeper) if deeper else None

    # -- typed getters -----------------------------------------------------------------------

    def table(self, value: object, keypath: KeyPath) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(keypath, f"expected a table, got {_describe(value)}")
        return value

    def known_keys(self, table: Mapping[str, object], allowed: Iterable[str], keypath: KeyPath) -> None:
        allowed = tuple(allowed)
        for key in table:
            if key.lower() in _SECRET_KEYS:
                raise self.fail(
                    (*keypath, key),
                    "secrets are never stored in the config; put the key in an environment variable "
                    'and name it with api_key_env = "VAR_NAME"',
                )
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
                raise self.fail((*keypath, key), f"unknown key; {hint}")

    def string(self, value: object, keypath: KeyPath, *, nonempty: bool = True) -> str:
        if not isinstance(value, str):
            raise self.fail(keypath, f"expected a string, got {_describe(value)}")
        if nonempty and not value.strip():
            raise self.fail(keypath, "must not be empty")
        return value

    def boolean(self, value: object, keypath: KeyPath) -> bool:
        if not isinstance(value, bool):
            raise self.fail(keypath, f"expected true or false, got {_describe(value)}")
        return value

    def integer(
        self, value: object, keypath: KeyPath, *, minimum: int, maximum: int = _INT64_MAX, why: str = ""
    ) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(keypath, f"expected a whole number, got {_describe(value)}")
        if value < minimum:
            raise self.fail(keypath, f"must be at least {minimum}, got {shorten(value)}")
        if value > maximum:
            raise self.fail(keypath, f"must be at most {maximum:,}{why}, got {shorten(value)}")
        return value

    def json_number(self, value: object, keypath: KeyPath) -> None:
        """Every number in ``value`` fits the JSON request it goes into: finite, a 64-bit integer."""
        if isinstance(value, list):
            for position, item in enumerate(value):
                self.json_number(item, (*keypath, position))
        elif isinstance(value, dict):
            for key, item in value.items():
                self.json_number(item, (*keypath, key))
        elif isinstance(value, float) and not math.isfinite(value):
            raise self.fail(keypath, f"must be a finite number (JSON has no {value}), got {value}")
        elif isinstance(value, int) and not isinstance(value, bool):
            self.integer(value, keypath, minimum=-_INT64_MAX - 1)

    def parsed(self, value: object, keypath: KeyPath, parse: Callable[[Any], T]) -> T:
        try:
            return parse(value)
        except (ValueError, TypeError) as exc:
            raise self.fail(keypath, str(exc)) from None

    # -- sections ----------------------------------------------------------------------------

    def config(self, data: dict[str, Any], path: Path | None) -> Config:
        self.known_keys(data, _TOP_KEYS, ())
        hosts = parse_hosts(self, data.get("hosts", {}))
        endpoints = assign_hosts(self, self.endpoints(data.get("endpoints", {})), hosts, self.host_names)
        default_endpoint = self.default_endpoint(data, endpoints)
        models = self.models(data.get("models", {}), endpoints, default_endpoint)
        memory = self.memory(data.get("memory", {}))
        pipelines = self.pipelines(data.get("pipelines", {}))
        return Config(
            path=path,
            endpoints=endpoints,
            models=models,
            memory=memory,
            pipelines=pipelines,
            default_endpoint=default_endpoint,
            hosts=hosts,
        )

    def endpoints(self, raw: object) -> dict[str, Endpoint]:
        section = self.table(raw, ("endpoints",))
        endpoints: dict[str, Endpoint] = {}
        servers: dict[str, Endpoint] = {}
        for name, value in section.items():
            endpoints[name] = self.endpoint(name, self.table(value, ("endpoints", name)))
            self.one_endpoint_per_server(endpoints[name], servers)
        if not endpoints:
            # No endpoint configured: talk to Ollama where its own client would (ollama.md §1).
            endpoints[DEFAULT_ENDPOINT_NAME] = self._ollama_host_endpoint(DEFAULT_ENDPOINT_NAME)
        return endpoints

    def one_endpoint_per_server(self, endpoint: Endpoint, servers: dict[str, Endpoint]) -> None:
        """Refuse a second endpoint for a server already configured (``servers``: address -> first).

        Two endpoints for one server would each see its models: the memory view would count them
        twice, and the per-endpoint lock would let two swaps run on that server at once.
        """
        first = servers.setdefault(server_address(endpoint.url), endpoint)
        if first is endpoint:
            return
        keypath: KeyPath = ("endpoints", endpoint.name)
        if endpoint.source == "config":
            keypath = (*keypath, "url")
        first_key = dotted(("endpoints", first.name))
        first_line = self._line_of(("endpoints", first.name))
        at = f" (line {first_line})" if first_line else ""
        raise self.fail(
            keypath,
            f"{_url_origin(endpoint)} is the same server as {first_key}{at} at {_url_origin(first)}; "
            "keep one endpoint per server: remove one of the two, or correct the url that is wrong",
        )

    def _ollama_host_endpoint(self, name: str, **extra: Any) -> Endpoint:
        from sourceprep_models.config.ollama_host import ollama_base_url

        host = self.environ.get(ENV_OLLAMA_HOST)
        source = ENV_OLLAMA_HOST if host else "default"
        kind = self.kinds.ollama_host_kind
        try:
            url = ollama_base_url(host)
        except ValueError as exc:
            raise ConfigError(
                f"{ENV_OLLAMA_HOST}={host!r}: {exc}; write it as host, host:port or http://host:port "
                "(e.g. 127.0.0.1:11434)"
            ) from None
        return Endpoint(name=name, kind=kind, url=url, source=source, **extra)

    def endpoint(self, name: str, table: dict[str, Any]) -> Endpoint:
        keypath: KeyPath = ("endpoints", name)
        self.known_keys(table, _ENDPOINT_KEYS, keypath)
        host = host_key(self, table, keypath)
        if host is not None:
            self.host_names[name] = host
        if "kind" not in table:
            raise self.fail(keypath, f"missing key 'kind'; set it to one of: {', '.join(self.kinds.names)}")
        kind = self.string(table["kind"], (*keypath, "kind"))
        if kind not in self.kinds.names:
            close = difflib.get_close_matches(kind, self.kinds.names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(self.kinds.names)}"
            raise self.fail((*keypath, "kind"), f"unknown provider kind {kind!r}; {hint}")
        api_key_env = None
        if "api_key_env" in table:
            api_key_env = self.string(table["api_key_env"], (*keypath, "api_key_env"))
            if not _ENV_NAME.match(api_key_env):
                raise self.fail(
                    (*keypath, "api_key_env"),
                    "must be the NAME of an environment variable (letters, digits, _), not the key itself",
                )
        timeouts: dict[str, Any] = {
            f"{which}_timeout_s": self.parsed(table[f"{which}_timeout"], (*keypath, f"{which}_timeout"), _timeout)
            for which in ("load", "unload")
            if f"{which}_timeout" in table
        }
        if "status_timeout" in table:
            keypath_s = (*keypath, "status_timeout")
            timeouts["status_timeout_s"] = self.parsed(table["status_timeout"], keypath_s, _status_timeout)
        if "sleep_level" in table:
            level = table["sleep_level"]
            if kind not in self.kinds.sleep_level_kinds:
                takers = " and ".join(sorted(self.kinds.sleep_level_kinds))
                raise self.fail((*keypath, "sleep_level"), f"applies only to {takers} endpoints, not {kind}; remove it")
            if isinstance(level, bool) or level not in (1, 2):
                raise self.fail(
                    (*keypath, "sleep_level"),
                    f"must be 1 (park weights in RAM) or 2 (discard them); got {level!r}",
                )
            timeouts["sleep_level"] = int(level)
        if "url" not in table:
            if kind == self.kinds.ollama_host_kind:
                return self._ollama_host_endpoint(name, api_key_env=api_key_env, **timeouts)
            raise self.fail(keypath, f"missing key 'url' (the base URL of the {kind} server)")
        url = self.parsed(self.string(table["url"], (*keypath, "url")), (*keypath, "url"), http_url)
        return Endpoint(name=name, kind=kind, url=url, api_key_env=api_key_env, **timeouts)

    def default_endpoint(self, data: dict[str, Any], endpoints: Mapping[str, Endpoint]) -> str:
        if "default_endpoint" in data:
            name = self.string(data["default_endpoint"], ("default_endpoint",))
            if name not in endpoints:
                raise self.fail(("default_endpoint",), _unknown_name("endpoint", name, endpoints))
            return name
        return next(iter(endpoints))

    def models(self, raw: object, endpoints: Mapping[str, Endpoint], default: str) -> dict[str, ModelSpec]:
        section = self.table(raw, ("models",))
        models: dict[str, ModelSpec] = {}
        seen: dict[tuple[str, str], str] = {}
        for key, value in section.items():
            spec = self.model(key, self.table(value, ("models", key)), endpoints, default)
            for where in spec.candidates:
                other = seen.get((where, spec.name))
                if other is not None:
                    raise self.fail(
                        ("models", key, "name"),
                        f"{spec.name!r} on endpoint {where!r} is already configured as models.{other}; keep one entry",
                    )
                seen[(where, spec.name)] = key
            models[key] = spec
        return models

    def model(self, key: str, table: dict[str, Any], endpoints: Mapping[str, Endpoint], default: str) -> ModelSpec:
        keypath: KeyPath = ("models", key)
        self.known_keys(table, _MODEL_KEYS, keypath)
        name = self.string(table["name"], (*keypath, "name")) if "name" in table else key
        endpoint = default
        if "endpoint" in table:
            endpoint = self.string(table["endpoint"], (*keypath, "endpoint"))
            if endpoint not in endpoints:
                raise self.fail((*keypath, "endpoint"), _unknown_name("endpoint", endpoint, endpoints))
        placed = model_endpoints(self, table, keypath, endpoints)
        endpoint = placed[0] if placed else endpoint
        keep_alive: KeepAlive | None = None
        if "keep_alive" in table:
            keep_alive = self.parsed(table["keep_alive"], (*keypath, "keep_alive"), _keep_alive)
        context_length = None
        if "context_length" in table:
            context_length = self.integer(table["context_length"], (*keypath, "context_length"), minimum=256)
        options = self.options(table.get("options", {}), (*keypath, "options"))
        if context_length is not None and "num_ctx" in options and options["num_ctx"] != context_length:
            raise self.fail(
                (*keypath, "options", "num_ctx"),
                f"disagrees with context_length = {context_length}; set the context in one place",
            )
        if context_length is None and "num_ctx" in options:
            context_length = int(str(options.pop("num_ctx")))
        always = (
            self.boolean(table["always_available"], (*keypath, "always_available"))
            if ("always_available" in table)
            else False
        )
        kind = None
        if "kind" in table:
            kind = self.string(table["kind"], (*keypath, "kind"))
            if kind not in MODEL_KINDS:
                raise self.fail((*keypath, "kind"), f"must be one of: {', '.join(MODEL_KINDS)}; got {kind!r}")
        return ModelSpec(
            key=key,
            name=name,
            endpoint=endpoint,
            keep_alive=keep_alive,
            context_length=context_length,
            options=options,
            always_available=always,
            kind=kind,
            endpoints=placed,
        )

    def options(self, raw: object, keypath: KeyPath) -> dict[str, object]:
        table = self.table(raw, keypath)
        for option, value in table.items():
            where = (*keypath, option)
            if option in _INT_OPTIONS and (isinstance(value, bool) or not isinstance(value, int)):
                raise self.fail(where, f"must be a whole number (the server rejects {_describe(value)})")
            if option in _FLOAT_OPTIONS and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise self.fail(where, f"must be a number, got {_describe(value)}")
            if option in _BOOL_OPTIONS and not isinstance(value, bool):
                raise self.fail(where, f"must be true or false, got {_describe(value)}")
            self.json_number(value, where)
        if "num_ctx" in table:
            self.integer(table["num_ctx"], (*keypath, "num_ctx"), minimum=256)
        return dict(table)

    def memory(self, raw: object) -> MemoryPolicy:
        keypath: KeyPath = ("memory",)
        table = self.table(raw, keypath)
        self.known_keys(table, _MEMORY_KEYS, keypath)
        budget = None
        if "budget" in table and table["budget"] != "auto":
            budget = self.parsed(table["budget"], (*keypath, "budget"), _positive_size)
        headroom = MemoryPolicy.headroom_bytes
        if "headroom" in table:
            headroom = self.parsed(table["headroom"], (*keypath, "headroom"), parse_size)
        if budget is not None and headroom >= budget:
            raise self.fail((*keypath, "headroom"), "is as large as the whole budget; nothing would ever fit")
        return MemoryPolicy(
            budget_bytes=budget,
            headroom_bytes=headroom,
            single_model=self.boolean(table.get("single_model", False), (*keypath, "single_model")),
            allow_evict_pinned=self.boolean(table.get("allow_evict_pinned", False), (*keypath, "allow_evict_pinned")),
        )

    def pipelines(self, raw: object) -> dict[str, Pipeline]:
        section = self.table(raw, ("pipelines",))
        pipelines: dict[str, Pipeline] = {}
        for name, value in section.items():
            keypath: KeyPath = ("pipelines", name)
            table = self.table(value, keypath)
            self.known_keys(table, _PIPELINE_KEYS, keypath)
            stages_raw = table.get("stages")
            if not isinstance(stages_raw, list) or not stages_raw:
                raise self.fail(
                    (*keypath, "stages") if "stages" in table else keypath,
                    'needs at least one stage, e.g. [[pipelines.NAME.stages]] with model = "..."',
                )
            stages = tuple(
                self.stage_or_group(item, (*keypath, "stages", index)) for index, item in enumerate(stages_raw)
            )
            seen: dict[str, KeyPath] = {}
            for index, item in enumerate(stages):
                inner = item.stages if isinstance(item, StageGroup) else (item,)
                for position, stage in enumerate(inner):
                    where: KeyPath = (*keypath, "stages", index)
                    if isinstance(item, StageGroup):
                        where = (*where, "stages", position)
                    if stage.name in seen or (isinstance(item, StageGroup) and item.name == stage.name):
                        raise self.fail((*where, "name"), f"stage name {stage.name!r} is used twice; rename one")
                    seen[stage.name] = where
                if isinstance(item, StageGroup):
                    if item.name in seen:
                        raise self.fail((*keypath, "stages", index, "name"), f"name {item.name!r} is used twice")
                    seen[item.name] = (*keypath, "stages", index)
            self.stage_runs_within_cap(stages, keypath)
            first = stages[0].stages[0] if isinstance(stages[0], StageGroup) else stages[0]
            if first.when != "always":
                raise self.fail(
                    (*keypath, "stages", 0, "when"), "the first stage has no stage before it; remove `when`"
                )
            description = (
                self.string(table["description"], (*keypath, "description")) if "description" in table else None
            )
            pipelines[name] = Pipeline(name=name, stages=stages, description=description)
        return pipelines

    def stage_runs_within_cap(self, stages: tuple[Stage | StageGroup, ...], keypath: KeyPath) -> None:
        """Refuse a pipeline whose repeats expand past ``MAX_STAGE_RUNS``, naming the repeat that does."""
        total = 0
        for index, item in enumerate(stages):
            inner = item.stages if isinstance(item, StageGroup) else (item,)
            rounds = item.repeat if isinstance(item, StageGroup) else 1
            total += rounds * sum(stage.repeat for stage in inner)
            if total > MAX_STAGE_RUNS:
                where: KeyPath = (*keypath, "stages", index)
                if isinstance(item, StageGroup) and item.repeat == 1:
                    largest = max(range(len(inner)), key=lambda position: inner[position].repeat)
                    where = (*where, "stages", largest)
                where = (*where, "repeat")
                raise self.fail(
                    where,
                    f"the pipeline would run {total:,}+ stages in all, repeats expanded; a pipeline runs at most "
                    f"{MAX_STAGE_RUNS:,} (every one is planned before the first starts): lower the repeat, "
                    "or run the pipeline several times",
                )

    def stage_or_group(self, raw: object, keypath: KeyPath) -> Stage | StageGroup:
        table = self.table(raw, keypath)
        if "stages" not in table:
            return self.stage(table, keypath)
        self.known_keys(table, _GROUP_KEYS, keypath)
        inner_raw = table["stages"]
        if not isinstance(inner_raw, list) or not inner_raw:
            raise self.fail((*keypath, "stages"), 'a group needs a list of stages, e.g. stages = [{ model = "embed" }]')
        inner = []
        for position, item in enumerate(inner_raw):
            item_path: KeyPath = (*keypath, "stages", position)
            if isinstance(item, dict) and "stages" in item:
                raise self.fail(item_path, "groups cannot be nested; list the stages in one group")
            inner.append(self.stage(item, item_path))
        index = keypath[-1]
        name = (
            self.string(table["name"], (*keypath, "name"))
            if "name" in table
            else f"group{index + 1 if isinstance(index, int) else index}"
        )
        repeat = self.integer(
            table.get("repeat", 1), (*keypath, "repeat"), minimum=1, maximum=MAX_STAGE_RUNS, why=_REPEAT_WHY
        )
        return StageGroup(name=name, stages=tuple(inner), repeat=repeat)

    def stage(self, raw: object, keypath: KeyPath) -> Stage:
        table = self.table(raw, keypath)
        self.known_keys(table, _STAGE_KEYS, keypath)
        if "model" not in table:
            raise self.fail(keypath, "missing key 'model' (a models.<key> or a server model name)")
        model = self.string(table["model"], (*keypath, "model"))
        index = keypath[-1]
        name = (
            self.string(table["name"], (*keypath, "name"))
            if "name" in table
            else f"{index + 1 if isinstance(index, int) else index}-{model}"
        )
        prompts: tuple[str, ...] = ()
        if "prompts" in table:
            value = table["prompts"]
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise self.fail((*keypath, "prompts"), "expected a string or a list of strings")
            prompts = tuple(value)
        when = self.string(table["when"], (*keypath, "when")) if "when" in table else "always"
        if when not in STAGE_WHEN:
            raise self.fail((*keypath, "when"), f"must be one of: {', '.join(STAGE_WHEN)}; got {when!r}")
        return Stage(
            name=name,
            model=model,
            when=when,
            max_tokens=self.integer(table.get("max_tokens", 128), (*keypath, "max_tokens"), minimum=1),
            repeat=self.integer(
                table.get("repeat", 1), (*keypath, "repeat"), minimum=1, maximum=MAX_STAGE_RUNS, why=_REPEAT_WHY
            ),
            prompts=prompts,
            prompts_file=self.string(table["prompts_file"], (*keypath, "prompts_file"))
            if "prompts_file" in table
            else None,
            command=self.string(table["command"], (*keypath, "command")) if "command" in table else None,
        )


# -- value parsers (raise ValueError with the fix) ---------------------------------------------


def _keep_alive(value: object) -> KeepAlive:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f'expected a duration such as "30m", "1h", "forever" or -1, got {_describe(value)}')
    try:
        return parse_keep_alive(value)
    except DurationOutOfRange as exc:
        raise ValueError(f'{exc}; write "forever" (or -1) to keep it loaded') from None
    except ValueError:
        raise ValueError(f'{shorten(value)!r} is not a keep-alive; write "30m", "1h", "0" or "forever"') from None


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f'expected a duration such as "10m" or a number of seconds, got {_describe(value)}')
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError('must be a positive duration such as "10m"')
    return seconds


def _status_timeout(value: object) -> float:
    low, high = STATUS_TIMEOUT_RANGE_S
    wanted = f'a duration between {low:g}s and {high:g}s such as "3s" (a status only looks)'
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected {wanted}, got {_describe(value)}")
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(f"expected {wanted}, got {shorten(value)!r}") from None
    if not low <= seconds <= high:
        raise ValueError(f"expected {wanted}, got {shorten(value)!r}")
    return seconds


def _positive_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'expected "auto" or a size such as "12GiB", got {_describe(value)}')
    size = parse_size(value)
    if size == 0:
        raise ValueError('must be larger than zero, or "auto"')
    return size


def _url_origin(endpoint: Endpoint) -> str:
    """An endpoint's URL, and where it came from when the config did not write it."""
    if endpoint.source == ENV_OLLAMA_HOST:
        return f"{endpoint.url} (from {ENV_OLLAMA_HOST})"
    if endpoint.source == "default":
        return f"{endpoint.url} (the default address)"
    return endpoint.url


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {shorten(value)!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, int | float):
        return f"{type(value).__name__} {shorten(value)}"
    return f"{type(value).__name__} {shorten(repr(value))}"


def _unknown_name(what: str, name: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known) or 'none'}"
    return f"no {what} named {name!r}; {hint}"
