"""HTTP layer of the Ollama emulator (test infrastructure, not product code).

Serves the native Ollama API subset described in ollama.md §1-§2 and §5 on a real
loopback socket (``ThreadingHTTPServer``, HTTP/1.1 with keep-alive and chunked NDJSON
streams), backed by the on-disk store (store.py) and the scheduler (scheduler.py).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, NamedTuple
from urllib.parse import unquote, urlsplit

from .goduration import api_duration_ns, env_keep_alive_ns, ns_to_seconds
from .scheduler import (
    RUNTIME_OOM_ERROR,
    Faults,
    Lease,
    RunnerView,
    Scheduler,
    SchedulerConfig,
    SchedulerError,
    utc_now,
)
from .store import EmulatedModel, ModelStore, StoredModel, parse_name

SERVE_POLL_S = 0.05  # serve_forever poll interval: bounds how long stop() waits for the accept loop
JSON_TYPE = "application/json; charset=utf-8"  # ollama.md §1: gin's c.JSON
NDJSON_TYPE = "application/x-ndjson"  # ollama.md §1: streams
OPENAI_JSON_TYPE = "application/json"  # ollama.md §1: OpenAI list/retrieve, no charset
TEXT_TYPE = "text/plain; charset=utf-8"
FAKE_PIECES = ("Emulated", " reply", " from", " a", " fake", " runner", ".")
FAKE_THINKING = "Emulated reasoning."
MID_STREAM_ERROR = "an error was encountered while running the model: unexpected EOF"
NOT_EMULATED = "endpoint not implemented by the Ollama emulator"


class RecordedRequest(NamedTuple):
    method: str
    path: str  # as sent, query string included
    body: Any  # parsed JSON body, or None when empty or not JSON


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE


@dataclass
class StreamReply:
    lines: Iterator[bytes]
    cleanup: Callable[[], None]  # always called once the stream ends or the client left


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- formatting --------------------------------------------------------------------------------
def rfc3339(moment: datetime, nanos: int | None = None) -> str:
    """Go's RFC 3339 with nanoseconds, trailing zeros trimmed; zero offset as ``Z`` (ollama.md §1)."""
    frac = moment.microsecond * 1000 if nanos is None else nanos
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        text += f".{frac:09d}".rstrip("0")
    offset = moment.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def json_reply(status: int, payload: Any, content_type: str = JSON_TYPE) -> Reply:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    if content_type == OPENAI_JSON_TYPE:
        body += b"\n"  # ollama.md §1: OpenAI-compatible responses end with a newline
    return Reply(status, body, content_type)


def error_reply(status: int, message: str) -> Reply:
    return json_reply(status, {"error": message})  # ollama.md §1: {"error": ...} everywhere


def ndjson(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


# -- request decoding (ollama.md §1: Go's encoding/json semantics) -----------------------------
def parse_keep_alive(value: Any, struct: str = "GenerateRequest") -> float | None:
    """api.Duration (api/types.go UnmarshalJSON, ollama.md §3.1): seconds as Go computes them
    (goduration.py); negative = forever (inf); None = not given."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ApiError(400, "Unsupported type: 'bool'")
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isinf(number):
            # Go's decoder cannot hold it in a float64 (encoding/json UnmarshalTypeError).
            raise ApiError(
                400, f"json: cannot unmarshal number {value} into Go struct field {struct}.keep_alive of type float64"
            )
        return ns_to_seconds(api_duration_ns(number))
    if isinstance(value, str):
        try:
            return ns_to_seconds(api_duration_ns(value))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None  # e.g. beyond int64 ns: 'time: invalid duration "3000000h"'
    kind = "[]interface {}" if isinstance(value, list) else "map[string]interface {}"
    raise ApiError(400, f"Unsupported type: '{kind}'")


def parse_env_keep_alive(value: str | float) -> float:
    """OLLAMA_KEEP_ALIVE (envconfig.KeepAlive, ollama.md §3.1): Go duration, else integer
    seconds, else (invalid) the 5m default; negative = forever. A number given by a test is
    taken as seconds."""
    if isinstance(value, int | float):
        return math.inf if value < 0 else float(value)
    return ns_to_seconds(env_keep_alive_ns(value))


# Go type of each request field (api/types.go); "duration" and "think" have custom decoders.
_MESSAGE = "[]api.Message"
_SCHEMAS: dict[str, dict[str, str]] = {
    "GenerateRequest": {
        "model": "string", "prompt": "string", "suffix": "string", "system": "string", "template": "string",
        "context": "[]int", "stream": "bool", "raw": "bool", "keep_alive": "duration", "images": "[]api.ImageData",
        "options": "map[string]interface {}", "think": "think", "truncate": "bool", "shift": "bool",
        "logprobs": "bool", "top_logprobs": "int",
    },
    "ChatRequest": {
        "model": "string", "messages": _MESSAGE, "stream": "bool", "keep_alive": "duration",
        "tools": "api.Tools", "options": "map[string]interface {}", "think": "think", "truncate": "bool",
        "shift": "bool", "logprobs": "bool", "top_logprobs": "int",
    },
    "EmbedRequest": {
        "model": "string", "input": "any", "keep_alive": "duration", "truncate": "bool", "dimensions": "int",
        "options": "map[string]interface {}",
    },
    "EmbeddingRequest": {
        "model": "string", "prompt": "string", "keep_alive": "duration", "options": "map[string]interface {}",
    },
    "ShowRequest": {
        "model": "string", "name": "string", "system": "string", "template": "string", "verbose": "bool",
        "options": "map[string]interface {}",
    },
}  # fmt: skip


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {value}" if isinstance(value, float) and not value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_ok(gotype: str, value: Any) -> bool:
    if gotype == "string":
        return isinstance(value, str)
    if gotype == "bool":
        return isinstance(value, bool)
    if gotype == "int":
        return isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
    if gotype == "[]int":
        return isinstance(value, list) and all(_type_ok("int", v) for v in value)
    if gotype in ("[]api.ImageData", "api.Tools"):
        return isinstance(value, list)
    if gotype == _MESSAGE:
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    if gotype.startswith("map["):
        return isinstance(value, dict)
    return True


def _go_syntax_error(text: str, exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(text.rstrip()):
        return "unexpected EOF"  # json.Decoder on a truncated body
    char = text[exc.pos]
    if exc.msg.startswith("Expecting property name"):
        where = "looking for beginning of object key string"
    elif exc.msg.startswith("Expecting ':'"):
        where = "after object key"
    elif exc.msg.startswith("Expecting ','"):
        where = "after object key:value pair"
    else:
        where = "looking for beginning of value"
    return f"invalid character {char!r} {where}"


def decode_request(body: bytes, struct: str) -> dict[str, Any]:
    """ShouldBindJSON as Ollama uses it (ollama.md §1): empty body, syntax and type errors -> 400."""
    text = body.decode("utf-8", errors="replace").lstrip()
    if not text:
        raise ApiError(400, "missing request body")
    try:
        # json.Decoder reads one value and ignores whatever follows it.
        payload, _ = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, _go_syntax_error(text, exc)) from None
    if payload is None:
        return {}  # ollama.md §1: a JSON null decodes to an empty request
    if not isinstance(payload, dict):
        raise ApiError(400, f"json: cannot unmarshal {_json_kind(payload)} into Go value of type api.{struct}")
    out: dict[str, Any] = {}
    for key, value in payload.items():
        gotype = _SCHEMAS[struct].get(key)
        if gotype is None or value is None:
            continue  # unknown fields are ignored; null leaves the zero value
        if gotype == "duration":
            out[key] = parse_keep_alive(value, struct)
            continue
        if gotype == "think" and not isinstance(value, bool | str):
            raise ApiError(400, f"invalid think value: {json.dumps(value)}")
        if not _type_ok(gotype, value):
            raise ApiError(
                400,
                f"json: cannot unmarshal {_json_kind(value)} into Go struct field {struct}.{key} of type {gotype}",
            )
        out[key] = value
    if "top_logprobs" in out and not 0 <= out["top_logprobs"] <= 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")  # ollama.md §2.5
    return out


def _host_allowed(header: str | None) -> bool:
    """ollama.md §1: on loopback only local-looking Host headers are served (else 403)."""
    if not header:
        return True
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host in ("localhost", socket.gethostname().lower()) or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified


def _embedding(text: str, dims: int) -> list[float]:
    values: list[float] = []
    counter = 0
    while len(values) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((byte - 127.5) / 127.5 for byte in digest)
        counter += 1
    values = values[:dims]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


# -- the API -----------------------------------------------------------------------------------
_Handler = Callable[["Api", "Call"], "Reply | StreamReply"]


@dataclass
class Call:
    method: str
    path: str
    body: bytes
    conn: socket.socket | None


class Api:
    """Endpoint implementations; each returns a Reply or a StreamReply."""

    def __init__(self, emulator: OllamaEmulator) -> None:
        self.emu = emulator
        self.store = emulator.store
        self.sched = emulator.scheduler

    # ollama.md §1: gin's router; known path + wrong method -> 405, unknown -> 404.
    ROUTES: ClassVar[dict[str, dict[str, str | None]]] = {
        "/": {"GET": "root", "HEAD": "root"},
        "/api/version": {"GET": "version", "HEAD": "version"},
        "/api/tags": {"GET": "tags", "HEAD": "tags"},
        "/api/ps": {"GET": "ps"},
        "/api/show": {"POST": "show"},
        "/api/generate": {"POST": "generate"},
        "/api/chat": {"POST": "chat"},
        "/api/embed": {"POST": "embed"},
        "/api/embeddings": {"POST": "embeddings"},
        "/v1/models": {"GET": "v1_models"},
        # Known to Ollama (ollama.md §2.8/§2.9) but outside what the product needs: 501.
        "/api/pull": {"POST": None},
        "/api/push": {"POST": None},
        "/api/create": {"POST": None},
        "/api/copy": {"POST": None},
        "/api/delete": {"DELETE": None},
        "/api/status": {"GET": None},
        "/v1/chat/completions": {"POST": None},
        "/v1/completions": {"POST": None},
        "/v1/embeddings": {"POST": None},
        "/v1/responses": {"POST": None},
        "/v1/messages": {"POST": None},
    }

    def route(self, path: str) -> dict[str, str | None] | None:
        if path in self.ROUTES:
            return self.ROUTES[path]
        if path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
            return {"GET": "v1_model"}
        if path.startswith("/api/blobs/"):
            return {"HEAD": None, "POST": None}
        return None

    def handle(self, call: Call) -> Reply | StreamReply:
        methods = self.route(call.path)
        if methods is None:
            return Reply(404, b"404 page not found", TEXT_TYPE)
        if call.method not in methods:
            return Reply(405, b"405 method not allowed", TEXT_TYPE)
        faults = self.emu.faults
        if faults.error_500 is not None and call.path.startswith("/api/"):
            return error_reply(500, faults.error_500)
        name = methods[call.method]
        if name is None:
            return error_reply(501, NOT_EMULATED)
        try:
            result: Reply | StreamReply = getattr(self, name)(call)
            return result
        except ApiError as exc:
            return error_reply(exc.status, exc.message)
        except SchedulerError as exc:
            return error_reply(exc.status, exc.message)
        except Exception as exc:
            # An emulator bug: answer visibly (a dropped connection would hide it) and log it.
            traceback.print_exc()
            return error_reply(500, f"ollama emulator internal error: {exc!r}")

    # -- simple endpoints ---------------------------------------------------------------------
    def root(self, call: Call) -> Reply:
        return Reply(200, b"Ollama is running", TEXT_TYPE)  # ollama.md §1

    def version(self, call: Call) -> Reply:
        return json_reply(200, {"version": self.emu.version})  # ollama.md §2.1

    def _tag_entry(self, model: StoredModel) -> dict[str, Any]:
        stat = model.manifest_path.stat()
        entry: dict[str, Any] = {
            "name": model.short,
            "model": model.short,
            "modified_at": rfc3339(model.modified_at(), stat.st_mtime_ns % 1_000_000_000),
            "size": model.size,
            "digest": model.manifest_digest,
            "details": model.details(with_lengths=True),
        }
        if model.capabilities:
            entry["capabilities"] = model.capabilities
        return entry

    def tags(self, call: Call) -> Reply:
        # ollama.md §2.2: newest first, [] (never null) when empty.
        return json_reply(200, {"models": [self._tag_entry(m) for m in self.store.models()]})

    def ps(self, call: Call) -> Reply:
        models = []
        for view in self.sched.ps_views():  # ollama.md §2.4: already sorted, latest expiry first
            model = self.store.lookup(view.name)
            details = model.details(with_lengths=False) if model else {}
            models.append(
                {
                    "name": view.name,
                    "model": view.name,
                    "size": view.size,
                    "digest": view.digest,
                    "details": details,
                    "expires_at": rfc3339(view.expires_at),
                    "size_vram": view.size_vram,
                    "context_length": view.context_length,
                }
            )
        return json_reply(200, {"models": models})

    def show(self, call: Call) -> Reply:
        req = decode_request(call.body, "ShowRequest")
        name = req.get("model") or req.get("name") or ""  # ollama.md §2.3: legacy "name" accepted
        if not name:
            raise ApiError(400, "model is required")
        parsed = parse_name(name)
        model = self.store.lookup(parsed) if parsed else None
        if model is None:
            shown = parsed.short if parsed else name
            raise ApiError(404, f"model '{shown}' not found")  # ollama.md §2.3: normalized name
        try:
            metadata = self.store.gguf_metadata(model)
        except FileNotFoundError:
            raise ApiError(500, f"open {model.blob_path}: no such file or directory") from None
        verbose = bool(req.get("verbose"))
        info = {
            key: ([] if isinstance(value, list) and len(value) > 5 and not verbose else value)
            for key, value in sorted(metadata.items())
            if key not in ("general.alignment", "general.name")
        }
        modelfile = (
            '# Modelfile generated by "ollama show"\n'
            "# To build a new Modelfile based on this, replace FROM with:\n"
            f"# FROM {model.short}\n\n"
            f"FROM {model.blob_path.resolve()}\n"  # ollama.md §2.3/§6: absolute blob path
            f'TEMPLATE """{model_template()}"""\n'
        )
        body: dict[str, Any] = {
            "modelfile": modelfile,
            "template": model_template(),
            "details": model.details(with_lengths=True),
            "model_info": info,
        }
        if model.spec.blob_of is not None:
            body["system"] = f"You are {model.short}."
        if verbose:
            body["tensors"] = self.store.gguf_tensors(model)
        body["capabilities"] = model.capabilities
        body["modified_at"] = rfc3339(model.modified_at(), model.manifest_path.stat().st_mtime_ns % 1_000_000_000)
        return json_reply(200, body)

    def _v1_entry(self, model: StoredModel) -> dict[str, Any]:
        return {
            "id": model.short,
            "object": "model",
            "created": int(model.manifest_path.stat().st_mtime),
            "owned_by": model.name.namespace,
        }

    def v1_models(self, call: Call) -> Reply:
        data = [self._v1_entry(m) for m in self.store.models()]
        # ollama.md §2.8: downloaded models; data is null (not []) when there are none.
        return json_reply(200, {"object": "list", "data": data or None}, OPENAI_JSON_TYPE)

    def v1_model(self, call: Call) -> Reply:
        name = unquote(call.path[len("/v1/models/") :])
        model = self.store.lookup(name)
        if model is None:
            shown = parse_name(name).short if parse_name(name) else name  # type: ignore[union-attr]
            error = {"message": f"model '{shown}' not found", "type": "not_found_error", "param": None, "code": None}
            return json_reply(404, {"error": error}, OPENAI_JSON_TYPE)
        return json_reply(200, self._v1_entry(model), OPENAI_JSON_TYPE)

    # -- scheduling helpers ----------------------------------------------------------------------
    def _resolve(self, name: str, not_found: str) -> StoredModel:
        parsed = parse_name(name)
        if parsed is None:
            raise ApiError(400, "invalid model name")  # ollama.md §2.5 step 2
        model = self.store.lookup(parsed)
        if model is None:
            raise ApiError(404, not_found)  # ollama.md §2.5 step 3
        return model

    def _schedule(self, model: StoredModel, name: str, req: dict[str, Any], call: Call) -> Lease:
        # ollama.md §4.9: manifest present, GGUF blob gone.
        if not model.blob_path.exists():
            raise ApiError(404, f'model "{name}" not found, try pulling it first')
        # ollama.md §4.7: options are type-checked when scheduling (500 on a wrong type).
        opts = self.sched.effective_options(model, req.get("options"), req.get("shift"))
        return self.sched.acquire(model, name, opts, req.get("keep_alive"), call.conn)

    # -- generate / chat (ollama.md §2.5, §2.6) ----------------------------------------------------
    def generate(self, call: Call) -> Reply | StreamReply:
        return self._complete(call, chat=False)

    def chat(self, call: Call) -> Reply | StreamReply:
        return self._complete(call, chat=True)

    def _complete(self, call: Call, *, chat: bool) -> Reply | StreamReply:
        started = time.monotonic_ns()
        req = decode_request(call.body, "ChatRequest" if chat else "GenerateRequest")  # step 1
        name: str = req.get("model", "")
        if not name:
            # ollama.md §2.5 step 2 / §2.6: generate 404 "model '' not found"; chat 400.
            raise ApiError(400, "model is required") if chat else ApiError(404, "model '' not found")
        model = self._resolve(name, f"model '{name}' not found")  # steps 2-3
        empty = not req.get("messages") if chat else req.get("prompt", "") == ""
        keep_alive = req.get("keep_alive")
        if empty and keep_alive == 0:
            # ollama.md §2.5 step 5: unload shortcut, answered at once, no capability check.
            self.sched.unload(model)
            return json_reply(200, self._done_body(name, chat, "unload"))
        if req.get("raw") and (req.get("template") or req.get("system") or req.get("context")):
            raise ApiError(400, "raw mode does not support template, system, or context")  # step 6
        caps = model.capabilities
        think = req.get("think")
        if think not in (None, False) and "thinking" not in caps:
            raise ApiError(400, f'"{name}" does not support thinking')  # step 7
        if "completion" not in caps:
            raise ApiError(400, f'"{name}" does not support {"chat" if chat else "generate"}')  # step 7
        thinking = "thinking" in caps and think is not False  # unset = on for thinking models
        lease = self._schedule(model, name, req, call)  # step 8
        load_ns = max(time.monotonic_ns() - started, 1)
        if empty:
            # ollama.md §2.5 step 9: load shortcut, only after the runner is ready; no durations.
            self.sched.release(lease)
            return json_reply(200, self._done_body(name, chat, "load"))
        return self._fake_generation(call, req, name, chat, lease, started, load_ns, thinking)

    @staticmethod
    def _done_body(name: str, chat: bool, reason: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": name, "created_at": rfc3339(utc_now())}
        if chat:
            body["message"] = {"role": "assistant", "content": ""}
        else:
            body["response"] = ""
        body.update(done=True, done_reason=reason)
        return body

    def _fake_generation(
        self,
        call: Call,
        req: dict[str, Any],
        name: str,
        chat: bool,
        lease: Lease,
        started: int,
        load_ns: int,
        thinking: bool,
    ) -> Reply | StreamReply:
        limit = (req.get("options") or {}).get("num_predict")
        pieces = list(FAKE_PIECES)
        reason = "stop"
        if isinstance(limit, int | float) and 0 < limit < len(pieces):
            pieces, reason = pieces[: int(limit)], "length"
        if chat:
            prompt_text = " ".join(str(m.get("content", "")) for m in req.get("messages", []))
        else:
            prompt_text = str(req.get("prompt", ""))
        prompt_tokens = max(len(prompt_text.split()), 1)
        faults = self.emu.faults
        fault = faults.error_mid_stream or faults.runtime_oom
        error = RUNTIME_OOM_ERROR if faults.runtime_oom else MID_STREAM_ERROR

        def fail() -> str:
            if faults.runtime_oom:
                self.sched.expire_all_for_runtime_oom()  # routes.go: on the completion error
            return error

        def chunk(text: str, think_text: str = "") -> dict[str, Any]:
            out: dict[str, Any] = {"model": name, "created_at": rfc3339(utc_now())}
            if chat:
                message: dict[str, Any] = {"role": "assistant", "content": text}
                if think_text:
                    message["thinking"] = think_text
                out["message"] = message
            else:
                out["response"] = text
                if think_text:
                    out["thinking"] = think_text
            out["done"] = False
            return out

        def final(text: str, think_text: str) -> dict[str, Any]:
            out = chunk(text, think_text)
            out.update(done=True, done_reason=reason)
            if not chat and not req.get("raw"):
                out["context"] = list(range(1, prompt_tokens + len(pieces) + 1))
            eval_ns = 1_000_000 * len(pieces)
            out.update(
                total_duration=max(time.monotonic_ns() - started, load_ns + 1),
                load_duration=load_ns,
                prompt_eval_count=prompt_tokens,
                prompt_eval_duration=500_000 * prompt_tokens,
                eval_count=len(pieces),
                eval_duration=eval_ns,
            )
            return out

        if req.get("stream") is False:
            message = fail() if fault else ""
            self.sched.release(lease)
            if fault:
                # ollama.md §2.5: nothing written yet -> a plain 500 with {"error": ...}.
                return error_reply(500, message)
            return json_reply(200, final("".join(pieces), FAKE_THINKING if thinking else ""))

        def lines() -> Iterator[bytes]:
            if thinking:
                yield ndjson(chunk("", FAKE_THINKING))
            for index, piece in enumerate(pieces):
                yield ndjson(chunk(piece))
                if fault and index == 0:
                    # ollama.md §2.5: once streaming started the status stays 200; one error line.
                    yield ndjson({"error": fail()})
                    return
            yield ndjson(final("", ""))

        return StreamReply(lines(), lambda: self.sched.release(lease))

    # -- embeddings (ollama.md §2.7) ---------------------------------------------------------------
    def embed(self, call: Call) -> Reply:
        started = time.monotonic_ns()
        req = decode_request(call.body, "EmbedRequest")
        value = req.get("input")
        name: str = req.get("model", "")
        if not name:
            raise ApiError(404, "model '' not found")  # ollama.md §5
        if parse_name(name) is None:
            raise ApiError(400, "invalid model name")
        # routes.go EmbedHandler: the input is checked before the model is looked up.
        if value is None or value == "":
            inputs: list[str] = []
        elif isinstance(value, str):
            inputs = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            inputs = list(value)
        else:
            raise ApiError(400, "invalid input type")
        model = self._resolve(name, f'model "{name}" not found, try pulling it first')
        # No unload shortcut here: empty input with keep_alive 0 loads, then expires when done.
        lease = self._schedule(model, name, req, call)
        load_ns = max(time.monotonic_ns() - started, 1)
        self.sched.release(lease)
        if not inputs:
            return json_reply(200, {"model": name, "embeddings": []})  # ollama.md §2.7: preload form
        dims = req.get("dimensions") or model.spec.embedding_length
        tokens = sum(max(len(text.split()), 1) for text in inputs)
        return json_reply(
            200,
            {
                "model": name,
                "embeddings": [_embedding(text, int(dims)) for text in inputs],
                "total_duration": max(time.monotonic_ns() - started, load_ns + 1),
                "load_duration": load_ns,
                "prompt_eval_count": tokens,
            },
        )

    def embeddings(self, call: Call) -> Reply:
        req = decode_request(call.body, "EmbeddingRequest")
        name: str = req.get("model", "")
        if not name or parse_name(name) is None:
            raise ApiError(400, "model is required")  # ollama.md §2.7: legacy bad-name status
        model = self._resolve(name, f'model "{name}" not found, try pulling it first')
        lease = self._schedule(model, name, req, call)
        self.sched.release(lease)
        prompt = req.get("prompt", "")
        vector = _embedding(prompt, model.spec.embedding_length) if prompt else []
        return json_reply(200, {"embedding": vector})


def model_template() -> str:
    return "{{ .Prompt }}"


# -- HTTP plumbing -----------------------------------------------------------------------------
class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive like Go's net/http
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed-ACK stalls
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the emulator records requests itself

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        emu = self.server.emulator
        self.server.set_busy(self.connection, True)
        try:
            body = self._read_body()
            emu._record(method, self.path, body)
            if not _host_allowed(self.headers.get("Host")):
                reply: Reply | StreamReply = Reply(403, b"", TEXT_TYPE)
            else:
                path = urlsplit(self.path).path
                reply = emu.api.handle(Call(method, path, body, self.connection))
            self._send(reply, head=method == "HEAD")
        finally:
            self.server.set_busy(self.connection, False)
            if emu.faults.refuse_connections or emu.stopped:
                self.close_connection = True

    def _send(self, reply: Reply | StreamReply, *, head: bool) -> None:
        try:
            if isinstance(reply, StreamReply):
                self.send_response(200)
                self.send_header("Content-Type", NDJSON_TYPE)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for line in reply.lines:
                    self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if not head:
                    self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client left mid-answer
        finally:
            if isinstance(reply, StreamReply):
                reply.cleanup()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, emulator: OllamaEmulator) -> None:
        self.emulator = emulator
        self._conn_lock = threading.Lock()
        self._connections: dict[socket.socket, bool] = {}  # connection -> busy with a request
        super().__init__(("127.0.0.1", 0), _RequestHandler)

    def server_bind(self) -> None:
        # Skip HTTPServer's reverse DNS lookup (getfqdn): slow on some hosts, useless here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def relisten(self) -> None:
        self.socket = socket.socket(self.address_family, self.socket_type)
        self.server_bind()
        self.server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections[request] = False
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def set_busy(self, conn: socket.socket, busy: bool) -> None:
        with self._conn_lock:
            if conn in self._connections:
                self._connections[conn] = busy

    def drop_connections(self, *, idle_only: bool) -> None:
        """Shut connections down (their handler threads then close them)."""
        with self._conn_lock:
            targets = [c for c, busy in self._connections.items() if not (idle_only and busy)]
        for conn in targets:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError) or self.emulator.stopped:
            return  # a client that vanished, or teardown: nothing to report
        super().handle_error(request, client_address)


class OllamaEmulator:
    """An Ollama server emulated in-process for tests (see the package docstring)."""

    def __init__(
        self,
        root: Path,
        models: list[EmulatedModel],
        *,
        gpu_vram_mib: float | None = 64,
        max_loaded_models: int = 0,
        default_keep_alive: str | float = "5m",
        load_mib_per_s: float | None = None,
        unload_delay_s: float = 0.2,
        max_queue: int = 512,
        context_length_env: int = 0,
        num_parallel: int = 1,
        load_timeout_s: float = 300,
        expiry_delay_s: float = 0.0,
        version: str = "0.33.0-rc2",
    ) -> None:
        self.root = Path(root)
        self.store = ModelStore(self.root, list(models))
        self.version = version
        self.requests: list[RecordedRequest] = []
        self.url = ""
        self.port = 0
        self.stopped = False
        self._faults = Faults()
        self._listen_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        config = SchedulerConfig(
            gpu_vram_mib=gpu_vram_mib,
            max_loaded_models=max_loaded_models,
            default_keep_alive_s=parse_env_keep_alive(default_keep_alive),
            load_mib_per_s=load_mib_per_s,
            unload_delay_s=unload_delay_s,
            max_queue=max_queue,
            context_length_env=context_length_env,
            num_parallel=num_parallel,
            load_timeout_s=load_timeout_s,
            expiry_delay_s=expiry_delay_s,
        )
        self.scheduler = Scheduler(self.store, config, lambda: self._faults)
        self.api = Api(self)
        self.faults = self._faults  # installs the listener hook

    # -- faults ------------------------------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._faults = value
        object.__setattr__(value, "_listen_hook", self._set_listening)
        if self._httpd is not None:
            self._set_listening(not value.refuse_connections)

    def _set_listening(self, refuse: bool) -> None:
        with self._listen_lock:
            httpd = self._httpd
            if httpd is None or self.stopped:
                return
            if refuse and self._serve_thread is not None:
                httpd.shutdown()
                self._serve_thread.join()
                self._serve_thread = None
                httpd.socket.close()  # nothing listens: connects get ECONNREFUSED
                httpd.drop_connections(idle_only=True)  # pooled keep-alive connections too
            elif not refuse and self._serve_thread is None:
                if httpd.socket.fileno() == -1:
                    httpd.relisten()
                self._serve_thread = threading.Thread(
                    target=httpd.serve_forever, args=(SERVE_POLL_S,), name=f"ollama-emulator-{self.port}", daemon=True
                )
                self._serve_thread.start()

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> str:
        if self._httpd is None:
            self._httpd = _HTTPServer(self)
            self.port = int(self._httpd.server_address[1])
            self.url = f"http://127.0.0.1:{self.port}"
            self.scheduler.start()
            if self._faults.refuse_connections:
                self._httpd.socket.close()
            else:
                self._set_listening(False)
        return self.url

    def stop(self) -> None:
        """Stop serving; releases waiting and held requests and aborts a load. Idempotent."""
        with self._listen_lock:
            if self.stopped:
                return
            self.stopped = True
            httpd, thread = self._httpd, self._serve_thread
            self._serve_thread = None
        self.scheduler.stop()
        if httpd is None:
            return
        if thread is not None:
            httpd.shutdown()
            thread.join()
        httpd.socket.close()
        httpd.drop_connections(idle_only=False)
        httpd.server_close()  # joins the handler threads

    def __enter__(self) -> OllamaEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection ------------------------------------------------------------------------------
    def _record(self, method: str, path: str, body: bytes) -> None:
        parsed: Any = None
        if body.strip():
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        self.requests.append(RecordedRequest(method, path, parsed))

    @property
    def load_count(self) -> dict[str, int]:
        return self.scheduler.load_count

    @property
    def load_attempts(self) -> list[tuple[str, int, tuple[str, ...]]]:
        """Every llama-server start: (model, num_ctx, names loaded at that moment), in order."""
        return self.scheduler.load_attempts

    def crash_runner(self, name: str) -> None:
        """The runner's process dies: still listed, its next health ping fails, so the next
        request for it reloads (sched.go needsReload)."""
        model = self.store.lookup(name)
        if model is None:
            raise LookupError(f"model {name!r} not in the store")
        self.scheduler.crash(model)

    @property
    def aborted_loads(self) -> int:
        """Loads aborted because their client disconnected (ollama.md §4.2/§4.9)."""
        return self.scheduler.aborted_loads

    def loaded(self) -> list[RunnerView]:
        return self.scheduler.views()

    def loaded_names(self) -> list[str]:
        return [view.name for view in self.loaded()]

    def loading_name(self) -> str | None:
        """The model whose load is in progress (not yet visible in /api/ps, ollama.md §2.4)."""
        return self.scheduler.loading_name()

    def queue_depth(self) -> int:
        return self.scheduler.queue_depth()

    def blob_path(self, name: str) -> Path:
        model = self.store.lookup(name)
        if model is None:
            raise KeyError(name)
        return model.blob_path

    @contextmanager
    def hold(self, name: str, *, keep_alive: float | None = None, load: bool = False) -> Iterator[RunnerView]:
        """An in-flight request on the loaded runner of ``name`` until the block exits.

        Raises LookupError when that model is not loaded, unless ``load``: then the request is
        scheduled like an API request with default options (it may load the model, and is then
        the fresh runner's first request). ``keep_alive`` (seconds, negative = forever) is
        applied like a request's (ollama.md §3.2)."""
        model = self.store.lookup(name)
        if model is None:
            raise LookupError(f"model {name!r} not in the store")
        given = None if keep_alive is None else parse_keep_alive(keep_alive)
        if load:
            lease = self.scheduler.acquire(model, name, self.scheduler.effective_options(model, None, None), given)
        else:
            lease = self.scheduler.hold(model, given)
        try:
            yield lease.runner.view()
        finally:
            self.scheduler.release(lease)
