"""Ollama, through its native API (section numbers refer to the project's ollama.md notes).

The traps this module exists to avoid:
- a preload must not time out on the client: a disconnect cancels the load (§4.2, §4.9), so a
  preload has no read timeout of its own, only the caller's overall deadline;
- unload answers 200 at once and finishes later (§2.5 step 5, §4.6): the executor polls ``/api/ps``;
- embedding-only models cannot be preloaded through generate, only through ``/api/embed`` (§2.7);
- keep_alive strings need a unit (§3.1): we always send a number of seconds;
- aliases share one runner (§4.1): a model's identity is its GGUF blob, read from ``/api/show``;
- a runner whose unload is pending still serves requests and unloads after them (sched.go
  processCompleted, useLoadedRunner): a preload waits for such a runner to go, and a load is
  confirmed in ``/api/ps`` afterwards and sent again (three tries in all) if the model left;
- every out-of-memory text of llm/status.go (outOfMemorySubstrings) in an error is does-not-fit.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.constants import CONNECT_TIMEOUT_S, READ_TIMEOUT_S
from sourceprep_models.errors import (
    DeadlineExceeded,
    DoesNotFit,
    ModelNotFound,
    ServerBusy,
    ServerError,
    Unsupported,
)
from sourceprep_models.providers import secrets
from sourceprep_models.providers._http import new_client, send
from sourceprep_models.providers.base import Capabilities, LoadedModel, LoadOutcome, LoadRequest, ModelInfo, Provider

if TYPE_CHECKING:
    from sourceprep_models.memory.gguf import GGUFMetadata

    # Only `doctor` uses these; imported where it does, so a `status` does not load them.
    from sourceprep_models.providers.diagnostics import (
        EndpointUses,
        Fetch,
        Finding,
        ServerIdentity,
        ServerProcess,
        SettingsQuestion,
    )
    from sourceprep_models.providers.prompts import PromptProtocol

# Texts that mean "not enough memory" (§4.9): Ollama's own fit errors, and every needle of
# llm/status.go outOfMemorySubstrings (IsOutOfMemoryMessage, matched case-insensitively), which the
# runner's dying words carry inside "llama-server process has terminated: ...".
_OOM_MARKERS = (
    "out-of-memory",
    "requires more system memory",
    "out of memory",
    "out of device memory",
    "cudamalloc failed",
    "hipmalloc failed",
    "failed to allocate",
    "allocation failed",
    "not enough memory",
    "insufficient memory",
    "vk_error_out_of_device_memory",
    "erroroutofmemory",
)


# Loads sent before giving up on one that a dying runner keeps taking away; how often to look
# whether a pending unload is done (ps answers once the process has exited).
_LOAD_TRIES = 3
_DYING_POLL_S = 0.05

# The process that holds the server's settings; the menu-bar / tray app is another one (ollama.md §4.10).
_PROCESS_NAMES = ("ollama", "ollama.exe")


class OllamaProvider(Provider):
    kind: ClassVar[str] = "ollama"
    # No busy flag over HTTP, and none needed: an unload of a busy runner waits for its last request
    # (ollama.md §4.5-4.6, server/sched.go), so the eviction itself never cuts a request off.
    capabilities = Capabilities(
        can_load=True,
        can_unload=True,
        can_pin=True,
        reports_memory=True,
        reloads_for_context=True,
        unload_waits_for_requests=True,
    )
    server_label: ClassVar[str] = "Ollama"
    start_hint: ClassVar[str] = "start it with `ollama serve` (or open the Ollama app)"
    default_port: ClassVar[int | None] = 11434
    get_hint: ClassVar[str] = "pull it with `ollama pull {name}`"
    client_host_variable: ClassVar[str | None] = "OLLAMA_HOST"
    client_command: ClassVar[str | None] = "ollama"
    # Each part of a name is matched case-insensitively against the manifests (ollama.md §5;
    # types/model/name.go, Name.EqualFold).
    names_fold_case: ClassVar[bool] = True

    def __init__(self, endpoint: Endpoint, client: httpx.Client | None = None) -> None:
        self.endpoint = endpoint
        # The key goes on each request (``_request``), checked there, never onto the client.
        self._client = client or new_client(endpoint.url, httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        self._described: dict[str, ModelInfo] = {}

    def close(self) -> None:
        self._client.close()

    # -- facts about Ollama servers ------------------------------------------------------------

    @classmethod
    def client_url(cls, value: str) -> str:
        from sourceprep_models.config.ollama_host import ollama_base_url

        return ollama_base_url(value)

    @classmethod
    def detect(cls, fetch: Fetch) -> ServerIdentity | None:
        """``GET /`` says "Ollama is running" (ollama.md §1); ``/api/version`` alone is not proof, since
        llama-swap's Ollama compatibility layer answers it too."""
        from sourceprep_models.providers.diagnostics import ServerIdentity

        root = fetch("/")
        if root.status != 200 or not isinstance(root.body, str) or "Ollama is running" not in root.body:
            return None
        body = fetch("/api/version").json
        version = body.get("version") if body else None
        return ServerIdentity(
            cls.kind, version if isinstance(version, str) else None, {}, "GET / says 'Ollama is running'"
        )

    @classmethod
    def is_server_process(cls, name: str, cmdline: tuple[str, ...]) -> bool:
        return name.lower() in _PROCESS_NAMES and "serve" in cmdline[1:]

    @classmethod
    def prompt_protocol(cls, endpoint: Endpoint, *, autoload: bool = False) -> PromptProtocol:
        from sourceprep_models.providers.ollama.prompts import OllamaGenerate

        return OllamaGenerate(endpoint.url.rstrip("/"))

    def support(self, identity: ServerIdentity, uses: EndpointUses) -> Finding:
        from sourceprep_models.providers.diagnostics import Finding

        parsed = _version_tuple(identity.version)
        if parsed is not None and (0, 0, 0) < parsed < (0, 10, 0):  # 0.0.0 is a build from source
            return Finding.warning(
                f"Ollama {identity.version} does not report loaded context lengths (added in 0.10.0), so context "
                "problems go unseen",
                "upgrade Ollama",
                version=identity.version,
            )
        return Finding.ok("loads, unloads and pins over HTTP; reports memory and context", version=identity.version)

    def settings_findings(self, question: SettingsQuestion) -> dict[str, Finding]:
        from sourceprep_models.providers.ollama.settings import settings_findings

        return settings_findings(self.endpoint, question)

    def loaded_limit_in_effect(self, processes: list[ServerProcess], gpu_count: int) -> tuple[int, str] | None:
        from sourceprep_models.providers.ollama.settings import loaded_limit_in_effect

        return loaded_limit_in_effect(self.endpoint, processes, gpu_count)

    def hidden_limit_fix(self, count: int, os_name: str) -> str | None:
        from sourceprep_models.providers.ollama.settings import env_fix

        return f"OLLAMA_MAX_LOADED_MODELS={count} — {env_fix(os_name, 'OLLAMA_MAX_LOADED_MODELS', str(count))}"

    def keep_loaded_hint(self, count: int) -> str | None:
        return (
            f"set OLLAMA_MAX_LOADED_MODELS to at least {count} and OLLAMA_KEEP_ALIVE long enough for your pipeline "
            "on the Ollama server (see `sourceprep-models doctor` for the fix on this OS)"
        )

    # -- queries -------------------------------------------------------------------------------

    def version(self) -> str | None:
        body = self._request("GET", "/api/version")
        version = body.get("version") if isinstance(body, dict) else None
        return version if isinstance(version, str) else None

    def list_available(self) -> list[ModelInfo]:
        body = self._request("GET", "/api/tags")
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise self._unexpected("/api/tags", body)
        return [_model_info(entry, identity=f"digest:{entry.get('digest', '')}") for entry in models]

    def describe(self, name: str) -> ModelInfo:
        cached = self._described.get(name)
        if cached is not None:
            return cached
        body = self._request("POST", "/api/show", json={"model": name}, model=name)
        if not isinstance(body, dict):
            raise self._unexpected("/api/show", body)
        info = _model_info({"name": name, **body}, identity=_blob_identity(body) or f"name:{name}")
        self._described[name] = info
        return info

    def weight_paths(self, name: str) -> list[Path]:
        """The model's GGUF file(s) when the server shares this machine's disk (ollama.md §6)."""
        identity = self.describe(name).identity
        if identity.startswith("blob:"):
            path = Path(identity[5:])
            if path.is_file():
                return [path]
        from sourceprep_models.providers.ollama.store import StoreError, find_weight_files

        try:
            return [weight.path for weight in find_weight_files(name, os.environ)]
        except (StoreError, OSError):
            return []

    def direct_io(self, name: str, hardware: Mapping[str, Any]) -> str | None:
        from sourceprep_models.providers.diagnostics import is_local
        from sourceprep_models.providers.ollama.direct_io import direct_io_reason

        # The probe describes this machine, not a server elsewhere (the rule: providers/ollama/direct_io.py).
        return direct_io_reason(self.version(), hardware) if is_local(self.endpoint.url) else None

    def gguf_metadata(self, name: str) -> GGUFMetadata | None:
        """Architecture numbers for the memory estimate: from the local blob's header, else /api/show."""
        from sourceprep_models.memory.gguf import metadata_from_show, read_gguf
        from sourceprep_models.memory.metadata import MetadataCache
        from sourceprep_models.paths import gguf_metadata_cache_dir

        # Blobs are content-addressed, so metadata read once is valid forever (hardware.md §4.2).
        identity = self.describe(name).identity
        digest = Path(identity[5:]).name if identity.startswith("blob:") else None
        cache = MetadataCache(gguf_metadata_cache_dir())
        if digest:
            cached = cache.get(digest)
            if cached is not None:
                return cached
        meta = None
        paths = self.weight_paths(name)
        if paths:
            with contextlib.suppress(OSError, ValueError):  # unreadable header: ask the server instead
                meta = read_gguf(paths[0])
        if meta is None:
            body = self._request("POST", "/api/show", json={"model": name, "verbose": True}, model=name)
            meta = metadata_from_show(body) if isinstance(body, dict) else None
        if meta is not None and digest:
            with contextlib.suppress(ValueError):  # an identity that is not a digest is simply not cached
                cache.put(digest, meta)
        return meta

    def list_loaded(self) -> list[LoadedModel]:
        body = self._request("GET", "/api/ps")
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise self._unexpected("/api/ps", body)
        loaded = []
        for entry in models:
            if not isinstance(entry, dict):
                raise self._unexpected("/api/ps", entry)
            name = str(entry.get("name") or entry.get("model") or "")
            loaded.append(
                LoadedModel(
                    name=name,
                    size=_int_or_none(entry.get("size")),
                    size_vram=_int_or_none(entry.get("size_vram")),
                    context_length=_int_or_none(entry.get("context_length")),
                    expires_at=_parse_time(entry.get("expires_at")),
                    digest=entry.get("digest") if isinstance(entry.get("digest"), str) else None,
                )
            )
        return loaded

    # -- actions -------------------------------------------------------------------------------

    def load(self, request: LoadRequest) -> LoadOutcome:
        info = self.describe(request.name)
        if info.remote:
            raise Unsupported(
                f"{request.name} is a cloud model that runs on ollama.com; it is never loaded locally, "
                "so there is nothing to load"
            )
        embedding = request.embedding if request.embedding is not None else info.embedding_only
        body: dict[str, Any] = {"model": request.name}
        if request.options:
            body["options"] = dict(request.options)
        if request.keep_alive is not None:
            body["keep_alive"] = request.keep_alive.to_ollama()
        if embedding:
            path = "/api/embed"  # empty input loads the model and returns no vectors (§2.7)
        else:
            path = "/api/generate"  # empty prompt = load shortcut, answers once ready (§2.5 step 9)
            body.update(prompt="", stream=False)
        started = time.monotonic()
        deadline = started + request.deadline_s
        # A runner whose expiry is pending still takes requests and unloads afterwards whatever
        # their keep_alive (sched.go processCompleted / useLoadedRunner): a preload it serves leaves
        # the model unloaded. Let it go first, then confirm the load stuck; a few tries, not forever.
        waited = self._wait_until_not_dying(request.name, info.identity, deadline)
        for attempt in range(1, _LOAD_TRIES + 1):
            # The whole deadline for a first load sent at once, what is left of it otherwise.
            read_s = max(deadline - time.monotonic(), 0.001) if waited or attempt > 1 else request.deadline_s
            reply = self._send_load(path, body, request.name, read_s)
            if request.keep_alive is not None and request.keep_alive.seconds == 0:
                break  # asked to leave once idle: not listed afterwards is what was asked for
            state = self._residency(info.identity)
            if state == "resident":
                break
            if state == "dying":
                waited = self._wait_until_not_dying(request.name, info.identity, deadline)
            if attempt == _LOAD_TRIES:
                raise ServerError(
                    f"Ollama at {self.endpoint.url} answered that {request.name} loaded, but unloaded it again "
                    f"{_LOAD_TRIES} times: another client keeps unloading it (keep_alive 0), or OLLAMA_KEEP_ALIVE "
                    "is 0 on the server; find that client, or give the model a keep_alive"
                )
        wall = time.monotonic() - started
        server_s = reply.get("load_duration")
        return LoadOutcome(
            name=request.name,
            wall_s=wall,
            server_load_s=server_s / 1e9 if isinstance(server_s, int | float) else None,
        )

    def _send_load(self, path: str, body: dict[str, Any], name: str, read_s: float) -> dict[str, Any]:
        # No read timeout shorter than the whole deadline: giving up early cancels the load (§4.2).
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=read_s)
        reply = self._request("POST", path, json=body, model=name, timeout=timeout, action="load")
        if not isinstance(reply, dict) or ("embeddings" not in reply and reply.get("done") is not True):
            raise self._unexpected(path, reply)
        return reply

    def _residency(self, identity: str) -> str:
        """The model's state in /api/ps: "resident", "dying" (its unload is pending) or "absent".

        A pending unload shows as an expiry at or before now: expireRunner sets ``expiresAt = now``,
        and an idle timer fires at the ``expiresAt`` it set (sched.go). While its process exits,
        /api/ps waits and then leaves it out (processCompleted holds loadedMu)."""
        now = datetime.now().astimezone()
        for model in self.list_loaded():
            try:
                listed = self.describe(model.name).identity
            except ModelNotFound:  # deleted while loaded: not the model being loaded
                continue
            if listed == identity:
                due = model.expires_at is not None and model.expires_at.year < 2200 and model.expires_at <= now
                return "dying" if due else "resident"
        return "absent"

    def _wait_until_not_dying(self, name: str, identity: str, deadline: float) -> bool:
        """Wait while the model's unload is pending; whether there was one."""
        waited = False
        while self._residency(identity) == "dying":
            waited = True
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"Ollama at {self.endpoint.url} is still unloading {name} (its unload is pending), so it "
                    "cannot be loaded yet; retry in a moment, or with a longer --timeout"
                )
            time.sleep(_DYING_POLL_S)
        return waited

    def predicts_reload(self, request: LoadRequest, resident: LoadedModel) -> bool | None:
        from sourceprep_models.providers.ollama.reload import predicts_reload

        return predicts_reload(request.options, resident)

    def unload(self, name: str) -> None:
        info = self.describe(name)
        if info.remote:
            return  # cloud stubs never appear in /api/ps (§2.2)
        # keep_alive 0 with an empty prompt expires the runner without loading anything (§3.4);
        # it works for embedding models too because no capability check runs first (§2.5 step 5).
        self._request("POST", "/api/generate", json={"model": name, "keep_alive": 0}, model=name)

    # -- one choke point for HTTP and its errors ----------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        model: str | None = None,
        timeout: httpx.Timeout | None = None,
        action: str = "request",
    ) -> Any:
        where = f"Ollama at {self.endpoint.url} (endpoint {self.endpoint.name!r})"
        response = send(
            self._client,
            method,
            path,
            where=where,
            unreachable_fix="start it with `ollama serve`, or point OLLAMA_HOST or the endpoint's url at the "
            "right host:port",
            # The server cancels a load whose client has gone (ollama.md §4.2).
            after_deadline="leaving cancels the load, so it is not loaded",
            json=json,
            headers=secrets.auth_headers(self.endpoint) or None,
            timeout=timeout,
            model=model,
            action=action,
        )
        return self._decode(response, model, where)

    def _decode(self, response: httpx.Response, model: str | None, where: str) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = _streamed_body(response.text)
        if response.is_success:
            if body is None:
                raise self._unexpected(str(response.request.url.path), response.text)
            if not (isinstance(body, dict) and isinstance(body.get("error"), str)):
                return body
        message = body.get("error") if isinstance(body, dict) else None
        # An authenticating proxy in front of Ollama may quote the request, key and all: scrub, then cut.
        if not isinstance(message, str):
            message = secrets.scrub(response.text.strip())[:200] or response.reason_phrase
        message = secrets.scrub(message)
        status = response.status_code
        if status == 404 and model is not None and ("not found" in message or message.startswith("404")):
            raise self._not_found(model, message)
        if status == 503:
            raise ServerBusy(f"{where} is busy ({message}); retry in a moment", status)
        lowered = message.lower()
        if any(marker in lowered for marker in _OOM_MARKERS):
            raise DoesNotFit(
                f"{model or 'the model'} does not fit in memory on {where}: {message}; unload other models "
                "or load it with a smaller context (--ctx)"
            )
        if "timed out waiting for llama-server" in lowered:
            raise DeadlineExceeded(
                f"{where} gave up loading {model}: {message}; a slow disk or a huge model may need "
                "OLLAMA_LOAD_TIMEOUT raised on the server",
                status,
            )
        if response.is_success:  # an error line once the stream had started: the status stays 200 (§2.5)
            raise ServerError(f"{where}: {message}", status)
        raise ServerError(f"{where} answered {status}: {message}", status)

    def _not_found(self, model: str, message: str) -> ModelNotFound:
        if "try pulling it first" in message:
            hint = f"pull it with `ollama pull {model}`"
        else:
            hint = f"see `ollama list`; pull it with `ollama pull {model}`"
            try:
                names = [info.name for info in self.list_available()]
            except Exception:  # the suggestion is a courtesy; the not-found error stands regardless
                names = []
            close = difflib.get_close_matches(model, names, n=1, cutoff=0.5)
            if not close:
                base = model.split(":", 1)[0]
                close = [name for name in names if name.split(":", 1)[0] == base][:1]
            if close:
                hint = f"did you mean {close[0]!r}?"
        return ModelNotFound(f"model {model!r} not found on endpoint {self.endpoint.name!r}; {hint}")

    def _unexpected(self, path: str, body: object) -> ServerError:
        return ServerError(
            f"{self.endpoint.url}{path} did not answer like Ollama ({secrets.scrub(str(body))[:80]!r}); "
            f"is endpoint {self.endpoint.name!r} really an Ollama server?"
        )


def _model_info(entry: dict[str, Any], identity: str) -> ModelInfo:
    details: dict[str, Any] = entry["details"] if isinstance(entry.get("details"), dict) else {}
    model_info: dict[str, Any] = entry["model_info"] if isinstance(entry.get("model_info"), dict) else {}
    trained = details.get("context_length")
    if trained is None and model_info:
        arch = model_info.get("general.architecture")
        trained = model_info.get(f"{arch}.context_length")
    capabilities = entry.get("capabilities") or ()
    return ModelInfo(
        name=str(entry.get("name") or entry.get("model") or ""),
        identity=identity,
        size=_int_or_none(entry.get("size")),
        digest=entry.get("digest"),
        family=details.get("family"),
        parameter_size=details.get("parameter_size"),
        quantization=details.get("quantization_level"),
        trained_context=_int_or_none(trained),
        capabilities=tuple(str(item) for item in capabilities),
        remote=bool(entry.get("remote_model") or entry.get("remote_host")),
    )


def _streamed_body(text: str) -> Any:
    """A streamed (NDJSON) reply as one body: its error line if it has one, else its last object.

    Ollama streams one JSON object per line; an error after the first line arrives as a last line
    ``{"error": "..."}`` under status 200 (ollama.md §2.5, server/routes.go streamResponse)."""
    objects = []
    for line in text.splitlines():
        if line.strip():
            try:
                objects.append(json.loads(line))
            except ValueError:
                return None
    errors = [item for item in objects if isinstance(item, dict) and isinstance(item.get("error"), str)]
    return errors[0] if errors else (objects[-1] if objects else None)


def _blob_identity(show: dict[str, Any]) -> str | None:
    """The runner key is the GGUF blob path, given as the modelfile's FROM line (§2.3, §4.1)."""
    modelfile = show.get("modelfile")
    if not isinstance(modelfile, str):
        return None
    for line in modelfile.splitlines():
        if line.startswith("FROM "):
            return "blob:" + line[5:].strip()
    return None


def _version_tuple(version: str | None) -> tuple[int, ...] | None:
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version or "")
    return tuple(int(part) for part in match.groups()) if match else None


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
