"""vLLM in sleep mode: "unload" puts the served model to sleep, "load" wakes it (servers.md §4).

What this module relies on and the traps it avoids:

- One vLLM process serves one model (§4). ``GET /v1/models`` lists it under its served name(s)
  (``--served-model-name`` may give several) plus any LoRA adapters (cards with a ``parent``). All
  of them live in the same process, so they share one identity, and ``list_loaded`` reports the
  process once, under its first name, with ``max_model_len`` as its context length.
- The sleep routes (``/sleep``, ``/wake_up``, ``/is_sleeping``, ``/collective_rpc``,
  ``/reset_prefix_cache``) are registered only when the server runs with ``VLLM_SERVER_DEV_MODE=1``
  (§4, §7). A 404 from ``/is_sleeping`` (dev mode off, or a vLLM older than sleep mode) means the
  model cannot be put to sleep: it is listed as ``fixed``, ``unload`` raises ``Unsupported`` naming
  the flag and the variable, and ``load`` has nothing to do (it is always awake).
- ``--enable-sleep-mode`` is a second, separate switch, and the v1 engine does not check it:
  ``/sleep`` answers 200 and ``/is_sleeping`` turns true while every byte stays on the GPU (the
  worker frees only memory allocated from its sleep pool, which exists only with the flag). So
  before the first sleep, ``GET /server_info?config_format=json`` (dev mode) is read once and
  ``model_config.enable_sleep_mode`` false is ``Unsupported``; a server that cannot answer in JSON
  (older vLLM) is trusted.
- The sleep level: ``/is_sleeping`` answers only true or false (§4). Newer vLLMs publish the level
  in the ``vllm:engine_sleep_state`` gauge of ``GET /metrics`` (``weights_offloaded`` = level 1,
  ``discard_all`` = level 2); where the gauge is absent the endpoint's ``sleep_level`` is assumed.
  Level 1 is listed as ``parked`` (weights in host RAM, a wake takes about a second), level 2 as
  ``asleep`` (weights dropped). Knowing the real level matters: waking a level-2 sleep the level-1
  way brings back memory without weights, and the model would answer garbage.
- Unload: ``POST /sleep?level=N&mode=wait`` (§4: 200 with an empty body). vLLM's default mode aborts
  the requests in flight; ``wait`` lets other clients' generations finish first, as an Ollama unload
  does, so the call is given the endpoint's unload timeout. An engine running in-process cannot
  wait (400 "'wait' mode can't be used in inproc-engine mode"); it is then sent the plain sleep. A
  model already asleep is left alone (nothing is sent).
- Load: an awake model returns at once, nothing sent. Level 1: ``POST /wake_up``. Level 2:
  ``/wake_up?tags=weights``, ``/collective_rpc {"method": "reload_weights"}``,
  ``/wake_up?tags=kv_cache``, ``/reset_prefix_cache`` (§4). ``/is_sleeping`` must then say false
  before anything else is sent, because a sleeping engine does not serve: newer vLLMs hold the
  request until a wake, older ones crashed (§4, vllm#15483). Then a one-token warm-up
  (``/v1/completions``; ``/v1/embeddings`` for an embedding model), because the first inference
  after a wake is slow otherwise (§4: 0.45-0.93 s warmed vs 2.6-6.6 s). ``server_load_s`` is the
  wake alone; every call is bounded by what is left of the request's deadline.
- Context: fixed at startup by ``--max-model-len``. A larger ``num_ctx`` is ``Unsupported`` naming
  the flag; a smaller one is fine (vLLM serves shorter prompts), so ``sets_context`` is False and
  a different ``--ctx`` never makes the tool sleep and wake the model.
- Errors: a 404 from a sleep route is ``Unsupported`` with the enable hint; an out-of-memory text
  from a wake is ``DoesNotFit`` (exit 6); 503 (e.g. "The model is currently scaling") is
  ``ServerBusy``; replies are checked for their documented shape, since a bare 200 proves nothing.
- Auth: ``--api-key`` guards only the ``/v1/…`` routes (vLLM's authentication middleware); the
  token, read from the environment variable named by ``api_key_env``, is sent on every request and
  never appears in a message.
- Memory: vLLM reports neither weights nor KV sizes over HTTP, so ``reports_memory`` is False.
- The URL may be given as the server root (``http://gpu:8000``) or as the API base (``…/v1``).
"""

from __future__ import annotations

import difflib
import os
import re
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import httpx

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.constants import CONNECT_TIMEOUT_S, DEFAULT_UNLOAD_TIMEOUT_S
from sourceprep_models.errors import (
    DeadlineExceeded,
    DoesNotFit,
    ModelNotFound,
    ServerBusy,
    ServerError,
    Unsupported,
)
from sourceprep_models.providers._http import (
    HTTPEndpoint,
    error_message,
    int_or_none,
    json_body,
    strip_api_base,
)
from sourceprep_models.providers.base import (
    Activity,
    Capabilities,
    LoadedModel,
    LoadOutcome,
    LoadRequest,
    ModelInfo,
    ModelState,
)
from sourceprep_models.providers.diagnostics import EndpointUses, Fetch, Finding, ServerIdentity

MODELS = "/v1/models"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
IS_SLEEPING = "/is_sleeping"
SLEEP = "/sleep"
WAKE_UP = "/wake_up"
COLLECTIVE_RPC = "/collective_rpc"
RESET_PREFIX_CACHE = "/reset_prefix_cache"
SERVER_INFO = "/server_info"
METRICS = "/metrics"

# Routes that exist only with VLLM_SERVER_DEV_MODE=1: a 404 there means "not enabled", not "no such model".
_DEV_ROUTES = (IS_SLEEPING, SLEEP, WAKE_UP, COLLECTIVE_RPC, RESET_PREFIX_CACHE, SERVER_INFO)
# torch's "CUDA out of memory", "HIP out of memory", "CUDA error: out of memory"; ENOMEM for pinned host RAM.
_NO_MEMORY_MARKERS = ("out of memory", "cannot allocate memory", "bad_alloc")
_SLEEP_STATE = re.compile(r'sleep_state="([a-z_]+)"')
ENABLE_HINT = "start it with `vllm serve … --enable-sleep-mode` and the environment variable VLLM_SERVER_DEV_MODE=1"


@dataclass(frozen=True)
class _Served:
    """What ``/v1/models`` says: every name the process answers to, the first being its own."""

    models: tuple[ModelInfo, ...]

    @property
    def base(self) -> ModelInfo:
        return self.models[0]


class VLLMProvider(HTTPEndpoint):
    server_label: ClassVar[str] = "vLLM"
    server_noun: ClassVar[str] = "a vLLM server"
    unreachable_fix: ClassVar[str] = ENABLE_HINT
    after_deadline: ClassVar[str] = "it may still finish waking (check `sourceprep-models status`)"
    kind: ClassVar[str] = "vllm"
    # What holds for every vLLM endpoint; whether an unload parks the weights in RAM depends on the
    # endpoint's sleep_level and is set per endpoint in __init__.
    capabilities = Capabilities(
        can_load=True,
        can_unload=True,
        can_pin=True,  # a pin is kept by never putting the model to sleep
        reports_memory=False,
        sets_context=False,
        reports_activity=True,  # vllm:num_requests_running / _waiting on GET /metrics
    )
    start_hint: ClassVar[str] = "start `vllm serve MODEL --enable-sleep-mode` with VLLM_SERVER_DEV_MODE=1"
    default_port: ClassVar[int | None] = 8000
    get_hint: ClassVar[str] = "serve it with its own vLLM endpoint"

    def __init__(self, endpoint: Endpoint, client: httpx.Client | None = None) -> None:
        self.capabilities = replace(type(self).capabilities, parks_in_ram=endpoint.sleep_level == 1)
        self._connect(endpoint, client, server_root(endpoint.url))
        self._sleep_mode_read = False
        self._sleep_mode: bool | None = None  # --enable-sleep-mode, once /server_info has said

    # -- facts about vLLM servers --------------------------------------------------------------

    @classmethod
    def detect(cls, fetch: Fetch) -> ServerIdentity | None:
        """Model cards ``owned_by: "vllm"``; the version from ``GET /version``, the sleep routes from
        ``/is_sleeping`` and the ``--enable-sleep-mode`` flag from ``/server_info`` (servers.md §4)."""
        models = fetch(MODELS).json
        cards = models.get("data") if models else None
        if not isinstance(cards, list) or not any(isinstance(c, dict) and c.get("owned_by") == "vllm" for c in cards):
            return None
        body = fetch("/version").json
        version = body.get("version") if body else None
        sleeping = fetch(IS_SLEEPING)
        dev_mode = isinstance(sleeping.json, dict) and isinstance(sleeping.json.get("is_sleeping"), bool)
        sleep_mode: bool | None = None
        if dev_mode:
            info = fetch(f"{SERVER_INFO}?config_format=json").json
            config = info.get("vllm_config") if info else None
            model_config = config.get("model_config") if isinstance(config, dict) else None
            flag = model_config.get("enable_sleep_mode") if isinstance(model_config, dict) else None
            sleep_mode = flag if isinstance(flag, bool) else None
        facts = {"dev_mode": dev_mode, "sleep_mode": sleep_mode}
        return ServerIdentity(
            cls.kind, version if isinstance(version, str) else None, facts, "model cards owned by vllm"
        )

    def support(self, identity: ServerIdentity, uses: EndpointUses) -> Finding:
        facts = identity.facts
        if facts.get("dev_mode") and facts.get("sleep_mode") is not False:
            return Finding.ok("sleep mode: unload parks the model, load wakes it")
        missing = (
            "its sleep routes are off (VLLM_SERVER_DEV_MODE=1 is not set)"
            if not facts.get("dev_mode")
            else "it was started without --enable-sleep-mode, so a sleep frees nothing"
        )
        summary = f"vLLM cannot put its model to sleep: {missing}"
        fix = (
            'restart it as `VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --enable-sleep-mode`, or set kind = "openai" '
            f"under [endpoints.{self.endpoint.name}] if it should never be unloaded"
        )
        if uses.shares_pipeline:
            return Finding.problem(
                f"{summary}; pipeline {uses.shares_pipeline!r} swaps between it and other servers", fix
            )
        return Finding.warning(summary, fix)

    def context_fix(self, wanted: int) -> str | None:
        return f"restart vLLM with --max-model-len {wanted}"

    # -- queries -------------------------------------------------------------------------------

    def list_available(self) -> list[ModelInfo]:
        return list(self._served().models)

    def describe(self, name: str) -> ModelInfo:
        return self._find(name, self._served())

    def list_loaded(self) -> list[LoadedModel]:
        base = self._served().base
        return [LoadedModel(name=base.name, context_length=base.trained_context, state=self._state())]

    # -- actions -------------------------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadOutcome:
        started = time.monotonic()
        deadline = started + request.deadline_s
        info = self._find(request.name, self._served())
        wanted = int_or_none(request.options.get("num_ctx"))
        served_ctx = info.trained_context
        if wanted is not None and served_ctx is not None and wanted > served_ctx:
            raise Unsupported(
                f"{self._where()} serves {info.name} with at most {served_ctx} tokens of context "
                f"(--max-model-len), not the {wanted} asked for, and cannot change it without a restart; "
                f"restart `vllm serve` with `--max-model-len {wanted}`, or ask for --ctx {served_ctx} or less"
            )
        if not self._is_sleeping():  # awake, or without sleep routes (then it is always awake)
            return LoadOutcome(name=request.name, wall_s=time.monotonic() - started)
        level = self._sleep_level()
        waking = time.monotonic()
        self._wake(level, info.name, deadline)
        wake_s = time.monotonic() - waking
        if self._is_sleeping():
            raise ServerError(
                f"{self._where()} still says it is sleeping after {WAKE_UP}; check vLLM's log, then retry "
                f"`sourceprep-models load {info.name}`"
            )
        self._warm_up(info.name, request.embedding, deadline)
        return LoadOutcome(name=request.name, wall_s=time.monotonic() - started, server_load_s=wake_s)

    def unload(self, name: str) -> None:
        info = self._find(name, self._served())
        sleeping = self._is_sleeping()
        if sleeping is None:
            raise Unsupported(self._no_sleep_routes(f"put {info.name} to sleep"))
        if sleeping:
            return  # already asleep: a second /sleep would change nothing
        if self._sleep_mode_enabled() is False:
            raise Unsupported(
                f"{self._where()} was started without --enable-sleep-mode, so a sleep would free no memory; "
                f"{ENABLE_HINT}, or stop that vLLM process to free its memory"
            )
        level = self.endpoint.sleep_level
        seconds = self.endpoint.unload_timeout_s or DEFAULT_UNLOAD_TIMEOUT_S
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=seconds)
        try:
            response = self._send("POST", f"{SLEEP}?level={level}&mode=wait", model=info.name, timeout=timeout)
            if response.status_code == 400 and "inproc" in (self._message(response) or "").lower():
                # An in-process engine cannot wait for requests in flight; the plain sleep aborts them.
                response = self._send("POST", f"{SLEEP}?level={level}", model=info.name, timeout=timeout)
        except DeadlineExceeded:
            raise DeadlineExceeded(
                f"{self._where()} did not finish putting {info.name} to sleep within {seconds:g}s; it first lets "
                "the requests in flight finish, so it may still sleep (check `sourceprep-models status`); "
                "raise the endpoint's unload_timeout"
            ) from None
        self._expect_no_body(response, SLEEP, model=info.name, action="sleep")

    def activity(self, name: str) -> Activity:
        """The requests the engine runs or queues, from the ``vllm:num_requests_running`` and
        ``vllm:num_requests_waiting`` gauges of ``GET /metrics`` (vllm ``v1/metrics/loggers.py``). A
        sleep waits for them (``mode=wait``) except on an in-process engine, where it aborts them."""
        info = self.describe(name)
        response = self._send("GET", METRICS, model=info.name)
        if not response.is_success:
            return Activity(info.name)
        return Activity(info.name, requests=requests_in_metrics(response.text))

    # -- sleep state ------------------------------------------------------------------------------

    def _state(self) -> ModelState:
        sleeping = self._is_sleeping()
        if sleeping is None:
            return "fixed"
        if not sleeping:
            return "loaded"
        return "parked" if self._sleep_level() == 1 else "asleep"

    def _is_sleeping(self) -> bool | None:
        """True/False, or None when the server has no sleep routes (dev mode off, or too old)."""
        response = self._send("GET", IS_SLEEPING)
        if response.status_code == 404:
            return None
        body = json_body(response)
        self._raise_for(response, body)
        value = body.get("is_sleeping") if isinstance(body, dict) else None
        if not isinstance(value, bool):
            raise self._unexpected(IS_SLEEPING, body if body is not None else response.text)
        return value

    def _sleep_level(self) -> int:
        """The level the model sleeps at: the server's own gauge where it has one, else the config's."""
        reported = self._reported_level()
        return reported if reported is not None else self.endpoint.sleep_level

    def _reported_level(self) -> int | None:
        try:
            response = self._send("GET", METRICS)
        except ServerError:  # metrics are a refinement; the endpoint's sleep_level stands in for them
            return None
        if not response.is_success:
            return None
        states: dict[str, float] = {}
        for line in response.text.splitlines():
            if not line.startswith("vllm:engine_sleep_state{"):
                continue
            match = _SLEEP_STATE.search(line)
            try:
                value = float(line.rsplit(None, 1)[-1])
            except ValueError:
                continue
            if match:
                states[match.group(1)] = max(states.get(match.group(1), 0.0), value)
        if states.get("discard_all", 0.0) >= 1:
            return 2
        if states.get("weights_offloaded", 0.0) >= 1:
            return 1
        return None

    def _sleep_mode_enabled(self) -> bool | None:
        """``--enable-sleep-mode`` as the server reports it, or None when it does not say."""
        if not self._sleep_mode_read:
            self._sleep_mode = self._read_sleep_mode()
            self._sleep_mode_read = True
        return self._sleep_mode

    def _read_sleep_mode(self) -> bool | None:
        try:
            response = self._send("GET", f"{SERVER_INFO}?config_format=json")
        except ServerError:
            return None
        body = json_body(response)
        if not response.is_success or not isinstance(body, dict):
            return None
        config = body.get("vllm_config")  # older servers give a text dump without the flag
        model_config = config.get("model_config") if isinstance(config, dict) else None
        flag = model_config.get("enable_sleep_mode") if isinstance(model_config, dict) else None
        return flag if isinstance(flag, bool) else None

    def _wake(self, level: int, model: str, deadline: float) -> None:
        steps: list[tuple[str, dict[str, Any] | None]] = [(WAKE_UP, None)]
        if level == 2:
            # Level 2 dropped the weights: wake their memory, reload them, then the KV cache (servers.md §4).
            steps = [
                (f"{WAKE_UP}?tags=weights", None),
                (COLLECTIVE_RPC, {"method": "reload_weights"}),
                (f"{WAKE_UP}?tags=kv_cache", None),
                (RESET_PREFIX_CACHE, None),
            ]
        for path, payload in steps:
            response = self._send("POST", path, json=payload, model=model, timeout=self._until(deadline), action="load")
            if response.status_code == 404 and path == COLLECTIVE_RPC:
                raise Unsupported(
                    f"{self._where()} has no {COLLECTIVE_RPC} route (an older vLLM), so it cannot reload {model}'s "
                    f"weights after a level-2 sleep and the model stays asleep; restart that vLLM process, and set "
                    f"sleep_level = 1 for endpoint {self.endpoint.name!r} (or upgrade vLLM)"
                )
            if response.status_code == 404 and path == RESET_PREFIX_CACHE:
                continue  # a sleep of level 1 or more already emptied the prefix cache
            self._expect_no_body(response, path.partition("?")[0], model=model, action="wake")

    def _warm_up(self, model: str, embedding: bool | None, deadline: float) -> None:
        """One token through the model, so the caller's first real request is not the slow one."""
        if embedding:
            self._embed(model, deadline)
            return
        body_in = {"model": model, "prompt": "hi", "max_tokens": 1}
        response = self._send(
            "POST", COMPLETIONS, json=body_in, model=model, timeout=self._until(deadline), action="load"
        )
        body = json_body(response)
        if embedding is None and _not_generative(response, self._message(response)):
            self._embed(model, deadline)  # a pooling model has no completions route
            return
        self._raise_for(response, body, model=model, action="warm up")
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            raise self._unexpected(COMPLETIONS, body if body is not None else response.text)

    def _embed(self, model: str, deadline: float) -> None:
        body_in = {"model": model, "input": "hi"}
        response = self._send(
            "POST", EMBEDDINGS, json=body_in, model=model, timeout=self._until(deadline), action="load"
        )
        body = json_body(response)
        self._raise_for(response, body, model=model, action="warm up")
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise self._unexpected(EMBEDDINGS, body if body is not None else response.text)

    def _until(self, deadline: float) -> httpx.Timeout:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(
                f"ran out of time waking the model on {self._where()}; it may still finish (check "
                "`sourceprep-models status`); raise --timeout (or the endpoint's load_timeout)"
            )
        return httpx.Timeout(CONNECT_TIMEOUT_S, read=remaining)

    # -- the listing ------------------------------------------------------------------------------

    def _served(self) -> _Served:
        response = self._send("GET", MODELS)
        body = json_body(response)
        self._raise_for(response, body)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise self._unexpected(MODELS, body if body is not None else response.text)
        cards = []
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise self._unexpected(MODELS, item)
            cards.append(item)
        # Base names first (LoRA cards carry a parent): the first is the process's own name.
        cards.sort(key=lambda card: bool(card.get("parent")))
        if not cards or cards[0].get("parent"):
            raise self._unexpected(MODELS, body)
        base = cards[0]["id"]
        context = int_or_none(cards[0].get("max_model_len"))
        # One process, one set of weights: aliases and adapters are the same resident model.
        identity = f"vllm:{self._root}:{base}"
        return _Served(
            tuple(
                ModelInfo(
                    name=card["id"],
                    identity=identity,
                    trained_context=int_or_none(card.get("max_model_len")) or context,
                )
                for card in cards
            )
        )

    def _find(self, name: str, served: _Served) -> ModelInfo:
        for info in served.models:
            if info.name == name:
                return info
        names = [info.name for info in served.models]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = (
            f"did you mean {close[0]!r}?"
            if close
            else "one vLLM process serves one model: start another `vllm serve` for it and add it as its own endpoint"
        )
        only = ", ".join(repr(other) for other in names)
        raise ModelNotFound(
            f"model {name!r} not found on endpoint {self.endpoint.name!r}: this vLLM serves only {only}; {hint}"
        )

    # -- one choke point for HTTP and its errors ----------------------------------------------

    def _expect_no_body(self, response: httpx.Response, path: str, *, model: str, action: str) -> None:
        """Sleep and wake answer 200 with an empty body (servers.md §4); a JSON object is tolerated."""
        body = json_body(response)
        self._raise_for(response, body, model=model, action=action)
        if response.content.strip() and not isinstance(body, dict):
            raise self._unexpected(path, response.text)

    def _raise_for(self, response: httpx.Response, body: object, *, model: str | None = None, action: str = "") -> None:
        """Raise the error a reply stands for; return when it is a success without an error field."""
        message = _message_of(body)
        if response.is_success and message is None:
            return
        where = self._where()
        status = response.status_code
        request = response.request
        path = request.url.path
        if message is None:
            message = response.text.strip()[:200] or response.reason_phrase
        message = self._scrub(message)
        if response.is_success:
            raise ServerError(f"{where} answered {path} with an error: {message}", status)
        if status in (401, 403):
            name = self.endpoint.api_key_env
            if not name:
                fix = "set api_key_env in the endpoint's config to the name of an env var holding vLLM's --api-key"
            elif not os.environ.get(name):
                fix = f"the environment variable {name} (the endpoint's api_key_env) is not set; set it to the key"
            else:
                fix = f"check the key in the environment variable {name} against vLLM's --api-key"
            raise ServerError(f"{where} refused {request.method} {path} (HTTP {status}: {message}); {fix}", status)
        if status == 404 and path in _DEV_ROUTES:
            raise Unsupported(self._no_sleep_routes(f"answer {request.method} {path}"))
        lowered = message.lower()
        if any(marker in lowered for marker in _NO_MEMORY_MARKERS):
            if action == "sleep":
                raise DoesNotFit(
                    f"not enough host RAM to park {model} on {where} ({message}); free host RAM, or set "
                    f"sleep_level = 2 for endpoint {self.endpoint.name!r} (the weights are then dropped, not parked)"
                )
            raise DoesNotFit(
                f"not enough host/GPU memory to wake {model or 'the model'} on {where} ({message}); free the GPU "
                "memory other processes hold (unload models on other servers), then retry"
            )
        if status == 503:
            raise ServerBusy(f"{where} is busy ({message}); retry in a moment", status)
        if status == 404 and model is not None and "does not exist" in lowered:
            raise ModelNotFound(f"{where} does not serve {model!r} ({message}); see `sourceprep-models status`")
        raise ServerError(
            f"{where} answered {status} to {request.method} {path} ({message}); check vLLM's log and retry", status
        )

    def _message(self, response: httpx.Response) -> str | None:
        return _message_of(json_body(response))

    def _no_sleep_routes(self, doing: str) -> str:
        return (
            f"{self._where()} has no sleep routes, so it cannot {doing}; {ENABLE_HINT} (the routes exist only "
            "then), or stop that vLLM process to free its memory"
        )


def requests_in_metrics(text: str) -> int | None:
    """The ``vllm:num_requests_running`` and ``_waiting`` samples of a Prometheus text, summed over every
    label set; 0 when the gauges are declared without samples; None when the text has neither."""
    found = False
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("vllm:num_requests_running{", "vllm:num_requests_waiting{")):
            try:
                total += float(line.rsplit(None, 1)[-1])
            except ValueError:
                continue
            found = True
    if found:
        return round(total)
    return 0 if "# TYPE vllm:num_requests_running gauge" in text else None


def server_root(url: str) -> str:
    """The server's root URL, whether the config gave the root or the ``/v1`` API base."""
    return strip_api_base(url)


def _message_of(body: object) -> str | None:
    """vLLM's error texts: OpenAI's ``{"error": …}``, its older ``{"object": "error", "message"}``
    and FastAPI's ``{"detail": "Not Found"}``."""
    message = error_message(body)
    if message is not None or not isinstance(body, dict):
        return message
    if body.get("object") == "error" and isinstance(body.get("message"), str):
        return str(body["message"])
    detail = body.get("detail")
    return detail if isinstance(detail, str) else None


def _not_generative(response: httpx.Response, message: str | None) -> bool:
    """The answer of a pooling (embedding) model to a completion: no such route, or "does not support"."""
    if response.status_code == 404:
        return message == "Not Found"
    return response.status_code == 400 and message is not None and "support" in message.lower()
