"""Tests of the Ollama emulator itself (test infrastructure), through its HTTP API.

One test per rule group of ollama.md; each asserts what a real Ollama would do. Waiting is
done by polling a condition with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.emulator import EmulatedModel, OllamaEmulator
from tests.emulator.gguf import ALIGNMENT, read_gguf
from tests.emulator.pytest_plugin import EmulatorFactory

MIB = 1024 * 1024
KV_4096 = 16 * MIB  # default shape: 2 x 8 blocks x 2 KV heads x 64 head dim x 4096 ctx x 2 bytes
BUSY = "server busy, please try again.  maximum pending requests exceeded"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


# One shared client: building one per call (an SSL context each) would cost ~35 ms a request.
CLIENT = httpx.Client(timeout=10)


@pytest.fixture(autouse=True, scope="module")
def _close_client() -> Iterator[None]:
    yield
    CLIENT.close()


def small(name: str, **kwargs: Any) -> EmulatedModel:
    return EmulatedModel(name, file_mib=kwargs.pop("file_mib", 1), **kwargs)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def post(emu: OllamaEmulator, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    if isinstance(body, dict) and path in ("/api/generate", "/api/chat"):
        body.setdefault("stream", False)
    return CLIENT.post(f"{emu.url}{path}", json=body, timeout=kwargs.pop("timeout", 10), **kwargs)


def get(emu: OllamaEmulator, path: str) -> httpx.Response:
    return CLIENT.get(f"{emu.url}{path}")


@contextmanager
def in_thread(fn: Callable[[], Any]) -> Iterator[dict[str, Any]]:
    """Run ``fn`` in a thread (a concurrent client); its result lands in the yielded dict."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except Exception as exc:  # surfaced to the test through ``out``
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield out
    finally:
        thread.join(timeout=15)
        assert not thread.is_alive()


def ps(emu: OllamaEmulator) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = get(emu, "/api/ps").json()["models"]
    return models


# -- §1 transport ------------------------------------------------------------------------------
def test_transport_conventions(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("qwen3:4b")])
    root = get(emu, "/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    head = CLIENT.head(f"{emu.url}/")
    assert head.status_code == 200 and head.content == b""
    missing = get(emu, "/nope")
    assert (missing.status_code, missing.text) == (404, "404 page not found")
    assert missing.headers["content-type"].startswith("text/plain")
    wrong = CLIENT.put(f"{emu.url}/api/tags")
    assert (wrong.status_code, wrong.text) == (405, "405 method not allowed")
    assert get(emu, "/api/version").headers["content-type"] == "application/json; charset=utf-8"

    empty = CLIENT.post(f"{emu.url}/api/generate", content=b"")
    assert (empty.status_code, empty.json()) == (400, {"error": "missing request body"})
    bad = CLIENT.post(f"{emu.url}/api/generate", content=b"xyz")
    assert bad.json() == {"error": "invalid character 'x' looking for beginning of value"}
    typed = post(emu, "/api/generate", {"model": "qwen3:4b", "prompt": 5})
    assert typed.status_code == 400
    assert typed.json()["error"] == (
        "json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string"
    )
    null = CLIENT.post(f"{emu.url}/api/generate", content=b"null")
    assert (null.status_code, null.json()) == (404, {"error": "model '' not found"})  # null = empty request
    foreign = CLIENT.get(f"{emu.url}/api/version", headers={"Host": "evil.example.com"})
    assert (foreign.status_code, foreign.content) == (403, b"")
    assert [(r.method, r.path) for r in emu.requests[:3]] == [("GET", "/"), ("HEAD", "/"), ("GET", "/nope")]


# -- §2.1 / §2.2 / §6 store and listing -----------------------------------------------------------
def test_version_tags_and_store_layout(ollama_emulator: EmulatorFactory) -> None:
    models = [
        small("qwen3:4b", family="qwen3", capabilities=["completion", "thinking"], file_mib=2),
        small("myuser/foo:7b"),
        small("nomic-embed-text", capabilities=["embedding"]),
    ]
    emu = ollama_emulator(models=models, version="0.32.15")
    assert get(emu, "/api/version").json() == {"version": "0.32.15"}
    tags = get(emu, "/api/tags").json()["models"]
    assert [t["name"] for t in tags] == ["qwen3:4b", "myuser/foo:7b", "nomic-embed-text:latest"]
    first = tags[0]
    assert first["model"] == first["name"]
    assert RFC3339.match(first["modified_at"])
    manifest_path = emu.root / "manifests/registry.ollama.ai/library/qwen3/4b"
    raw = manifest_path.read_bytes()
    assert first["digest"] == hashlib.sha256(raw).hexdigest()
    manifest = json.loads(raw)
    assert first["size"] == sum(layer["size"] for layer in manifest["layers"]) + manifest["config"]["size"]
    weights = next(x for x in manifest["layers"] if x["mediaType"] == "application/vnd.ollama.image.model")
    blob = emu.root / "blobs" / weights["digest"].replace(":", "-")
    assert blob.stat().st_size == 2 * MIB == weights["size"]
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == weights["digest"].removeprefix("sha256:")
    assert first["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "qwen3",
        "families": ["qwen3"],
        "parameter_size": "1.0B",
        "quantization_level": "Q4_K_M",
        "context_length": 32768,
        "embedding_length": 512,
    }
    assert first["capabilities"] == ["completion", "thinking"]
    assert (emu.root / "manifests/registry.ollama.ai/myuser/foo/7b").is_file()

    gguf = read_gguf(blob)  # a valid GGUF v3 whose one tensor owns every remaining byte
    assert gguf.version == 3
    assert gguf.metadata["general.architecture"] == "qwen3"
    assert gguf.metadata["qwen3.context_length"] == 32768
    assert gguf.data_offset % ALIGNMENT == 0
    assert gguf.data_offset + gguf.tensors[0].shape[0] == blob.stat().st_size

    v1 = get(emu, "/v1/models")
    assert v1.headers["content-type"] == "application/json" and v1.text.endswith("\n")
    assert [(m["id"], m["owned_by"]) for m in v1.json()["data"]][:2] == [
        ("qwen3:4b", "library"),
        ("myuser/foo:7b", "myuser"),
    ]
    one = get(emu, "/v1/models/myuser/foo:7b").json()
    assert one["id"] == "myuser/foo:7b" and one["object"] == "model"
    gone = get(emu, "/v1/models/nope")
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found_error"


def test_empty_store_lists(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[])
    assert get(emu, "/api/tags").json() == {"models": []}
    assert get(emu, "/api/ps").json() == {"models": []}
    assert get(emu, "/v1/models").json() == {"object": "list", "data": None}  # §2.8: null, not []


# -- §2.3 show ---------------------------------------------------------------------------------
def test_show(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("qwen3:4b", family="qwen3", block_count=12, head_count_kv=4)])
    assert post(emu, "/api/show", {}).json() == {"error": "model is required"}
    missing = post(emu, "/api/show", {"model": "mistral"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'mistral:latest' not found"})
    body = post(emu, "/api/show", {"name": "QWEN3:4B"}).json()  # legacy key, case-insensitive
    info = body["model_info"]
    assert info["general.architecture"] == "qwen3"
    assert (info["qwen3.block_count"], info["qwen3.attention.head_count_kv"]) == (12, 4)
    assert {"qwen3.context_length", "qwen3.embedding_length", "qwen3.attention.head_count"} <= set(info)
    assert info["tokenizer.ggml.tokens"] == []  # arrays longer than 5 only when verbose
    assert (
        len(
            post(emu, "/api/show", {"model": "qwen3:4b", "verbose": True}).json()["model_info"]["tokenizer.ggml.tokens"]
        )
        == 8
    )
    from_lines = [line for line in body["modelfile"].splitlines() if line.startswith("FROM /")]
    assert from_lines == [f"FROM {emu.blob_path('qwen3:4b').resolve()}"]
    assert body["capabilities"] == ["completion"] and body["details"]["family"] == "qwen3"
    assert emu.loaded_names() == []  # show never loads


# -- §2.4 ps -----------------------------------------------------------------------------------
def test_ps_fields_sizes_and_order(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("a:1b"), small("b:1b")], gpu_vram_mib=256)
    post(emu, "/api/generate", {"model": "a:1b", "keep_alive": "10m"})
    post(emu, "/api/generate", {"model": "b:1b", "keep_alive": -1, "options": {"num_ctx": 8192}})
    models = ps(emu)
    assert [m["name"] for m in models] == ["b:1b", "a:1b"]  # latest expiry first; forever is latest
    forever, ten = models
    assert forever["expires_at"].startswith("23")  # year ~2318
    assert RFC3339.match(ten["expires_at"])
    assert (ten["context_length"], forever["context_length"]) == (4096, 8192)
    assert ten["size"] == 1 * MIB + KV_4096 and forever["size"] == 1 * MIB + 2 * KV_4096
    assert ten["size_vram"] == ten["size"]
    assert (
        ten["digest"]
        == hashlib.sha256((emu.root / "manifests/registry.ollama.ai/library/a/1b").read_bytes()).hexdigest()
    )
    assert "context_length" not in ten["details"] and ten["details"]["format"] == "gguf"
    view = emu.loaded()[0]
    assert (view.name, view.keep_alive_s, view.size) == ("b:1b", None, forever["size"])


# -- §2.5 generate -----------------------------------------------------------------------------
def test_generate_handler_order_and_shortcuts(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(
        models=[small("qwen3:4b"), small("nomic-embed-text", capabilities=["embedding"])], load_mib_per_s=10
    )
    assert post(emu, "/api/generate", {"prompt": "x"}).json() == {"error": "model '' not found"}
    assert post(emu, "/api/generate", {"model": "bad name!"}).json() == {"error": "invalid model name"}
    unknown = post(emu, "/api/generate", {"model": "Mistral"})
    assert (unknown.status_code, unknown.json()) == (404, {"error": "model 'Mistral' not found"})
    # Unload shortcut: fine for a model that is not loaded, and for an embedding-only model.
    for name in ("qwen3:4b", "nomic-embed-text"):
        reply = post(emu, "/api/generate", {"model": name, "keep_alive": 0, "stream": True})
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.json()["done_reason"] == "unload" and reply.json()["model"] == name
    refused = post(emu, "/api/generate", {"model": "nomic-embed-text"})
    assert (refused.status_code, refused.json()) == (400, {"error": '"nomic-embed-text" does not support generate'})
    assert sum(emu.load_count.values()) == 0

    started = time.monotonic()
    load = post(emu, "/api/generate", {"model": "QWEN3:4b"})  # 1 MiB at 10 MiB/s
    assert time.monotonic() - started >= 0.09  # answered only once loaded
    body = load.json()
    assert body["model"] == "QWEN3:4b" and body["done_reason"] == "load" and body["response"] == ""
    assert body["created_at"].endswith("Z")
    assert "load_duration" not in body and "total_duration" not in body
    assert emu.loaded_names() == ["qwen3:4b"]


def test_generate_streaming_and_single_object(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("qwen3:4b")])
    with CLIENT.stream("POST", f"{emu.url}/api/generate", json={"model": "qwen3:4b", "prompt": "hi"}) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"]
    final = lines[-1]
    assert final["done_reason"] == "stop" and final["context"]
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count"):
        assert isinstance(final[key], int) and final[key] > 0
    assert final["eval_count"] == len(lines) - 1
    text = "".join(line["response"] for line in lines)
    single = post(emu, "/api/generate", {"model": "qwen3:4b", "prompt": "hi", "options": {"num_predict": 2}})
    assert single.headers["content-type"] == "application/json; charset=utf-8"
    one = single.json()
    assert one["done"] and one["done_reason"] == "length" and one["eval_count"] == 2
    assert text.startswith(one["response"]) and one["load_duration"] > 0


# -- §2.6 chat ---------------------------------------------------------------------------------
def test_chat(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("qwen3:4b"), small("embed:1b", capabilities=["embedding"])])
    assert post(emu, "/api/chat", {"messages": []}).json() == {"error": "model is required"}
    assert post(emu, "/api/chat", {"model": "nope"}).json() == {"error": "model 'nope' not found"}
    assert post(emu, "/api/chat", {"model": "embed:1b"}).json() == {"error": '"embed:1b" does not support chat'}
    loaded = post(emu, "/api/chat", {"model": "qwen3:4b"}).json()
    assert loaded["message"] == {"role": "assistant", "content": ""} and loaded["done_reason"] == "load"
    messages = [{"role": "user", "content": "hello"}]
    with CLIENT.stream("POST", f"{emu.url}/api/chat", json={"model": "qwen3:4b", "messages": messages}) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[0]["message"]["role"] == "assistant" and lines[0]["message"]["content"]
    assert lines[-1]["done"] and "context" not in lines[-1]
    unload = post(emu, "/api/chat", {"model": "qwen3:4b", "keep_alive": "0s"}).json()
    assert unload["done_reason"] == "unload"


# -- §2.7 embed --------------------------------------------------------------------------------
def test_embed(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("nomic-embed-text", capabilities=["embedding"])], unload_delay_s=0.01)
    assert post(emu, "/api/embed", {"model": "x"}).json() == {"error": 'model "x" not found, try pulling it first'}
    assert post(emu, "/api/embed", {"model": "nomic-embed-text", "input": 3}).json() == {"error": "invalid input type"}
    assert post(emu, "/api/embed", {"model": "nomic-embed-text"}).json() == {
        "model": "nomic-embed-text",
        "embeddings": [],
    }
    assert emu.loaded()[0].options["num_parallel"] == 1
    vectors = post(emu, "/api/embed", {"model": "nomic-embed-text", "input": ["a", "b"], "dimensions": 16}).json()
    assert len(vectors["embeddings"]) == 2 and len(vectors["embeddings"][0]) == 16
    assert vectors["load_duration"] > 0 and vectors["prompt_eval_count"] == 2
    assert len(post(emu, "/api/embeddings", {"model": "nomic-embed-text", "prompt": "a"}).json()["embedding"]) == 512
    assert post(emu, "/api/embeddings", {"model": ""}).json() == {"error": "model is required"}
    # No unload shortcut: empty input + keep_alive 0 is served, then the runner expires.
    loads = emu.load_count["nomic-embed-text"]
    assert post(emu, "/api/embed", {"model": "nomic-embed-text", "keep_alive": 0}).json()["embeddings"] == []
    assert emu.load_count["nomic-embed-text"] == loads
    wait_until(lambda: emu.loaded_names() == [], what="the keep_alive 0 expiry")


# -- §3 keep_alive -----------------------------------------------------------------------------
def test_keep_alive_encoding_and_inheritance(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("qwen3:4b")], default_keep_alive="7m")
    for value, error in (
        ("300", 'time: missing unit in duration "300"'),
        ("-1", 'time: missing unit in duration "-1"'),
        ("", 'time: invalid duration ""'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        (True, "Unsupported type: 'bool'"),
    ):
        reply = post(emu, "/api/generate", {"model": "qwen3:4b", "keep_alive": value})
        assert (reply.status_code, reply.json()) == (400, {"error": error})
    assert emu.loaded_names() == []

    def keep_alive_after(**body: Any) -> float | None:
        post(emu, "/api/generate", {"model": "qwen3:4b", **body}).raise_for_status()
        return emu.loaded()[0].keep_alive_s

    assert keep_alive_after() == 420  # fresh load without keep_alive: the server default
    assert keep_alive_after(keep_alive="1h30m") == 5400
    assert keep_alive_after() == 5400  # absent keeps the runner's value (§3.2)
    assert keep_alive_after(keep_alive=1.5) == 1.5
    assert keep_alive_after(keep_alive="-1m") is None  # negative string = forever
    assert keep_alive_after(prompt="hi") is None  # pinned across requests without keep_alive
    assert keep_alive_after(keep_alive="300ms") == pytest.approx(0.3)
    assert sum(emu.load_count.values()) == 1


def test_keep_alive_sliding_timer_and_expiry(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("qwen3:4b")], unload_delay_s=0.02)
    post(emu, "/api/generate", {"model": "qwen3:4b", "keep_alive": "10m"})
    loaded_expiry = emu.loaded()[0].expires_at
    with emu.hold("qwen3:4b"):
        post(emu, "/api/generate", {"model": "qwen3:4b", "prompt": "x"})
        assert emu.loaded()[0].expires_at == loaded_expiry  # still busy: expiry keeps its value (§3.3)
        before_end = datetime.now().astimezone()
    after_end = datetime.now().astimezone()
    expires = emu.loaded()[0].expires_at
    assert before_end + timedelta(minutes=10) <= expires <= after_end + timedelta(minutes=10)  # sliding
    post(emu, "/api/generate", {"model": "qwen3:4b", "keep_alive": "200ms"})
    assert emu.loaded_names() == ["qwen3:4b"]
    wait_until(lambda: emu.loaded_names() == [], what="the idle timer to expire the runner")


# -- §4.1 runner identity ------------------------------------------------------------------------
def test_aliases_share_one_runner(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("qwen3:4b"), EmulatedModel("my-qwen", blob_of="qwen3:4b")], unload_delay_s=0.01)
    tags = {t["name"]: t for t in get(emu, "/api/tags").json()["models"]}
    assert tags["my-qwen:latest"]["digest"] != tags["qwen3:4b"]["digest"]  # its own manifest
    assert emu.blob_path("my-qwen") == emu.blob_path("qwen3:4b")
    post(emu, "/api/generate", {"model": "my-qwen", "keep_alive": -1})
    post(emu, "/api/generate", {"model": "qwen3:4b"})
    assert emu.loaded_names() == ["my-qwen:latest"]  # ps shows the name that loaded it
    assert emu.loaded()[0].keep_alive_s is None  # one runner, one keep-alive
    assert emu.load_count["qwen3:4b"] == emu.load_count["my-qwen"] == 1
    post(emu, "/api/generate", {"model": "qwen3:4b", "keep_alive": 0})  # unloading either name
    wait_until(lambda: emu.loaded_names() == [], what="the shared runner to unload")


# -- §4.2 admission --------------------------------------------------------------------------------
def test_serialized_loads_and_loaded_models_bypass_the_queue(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("warm:1b"), small("a:1b"), small("b:1b")], gpu_vram_mib=None)
    post(emu, "/api/generate", {"model": "warm:1b"})
    emu.faults.slow_load_s = 0.4
    with in_thread(lambda: post(emu, "/api/generate", {"model": "a:1b"})) as first:
        wait_until(lambda: emu.loading_name() == "a:1b", what="a to start loading")
        with in_thread(lambda: post(emu, "/api/generate", {"model": "b:1b"})) as second:
            wait_until(lambda: emu.queue_depth() == 1, what="b to queue behind a")
            started = time.monotonic()
            assert post(emu, "/api/generate", {"model": "warm:1b", "prompt": "hi"}).json()["done"]
            assert time.monotonic() - started < 0.3  # not blocked by the load in progress
            assert emu.loading_name() == "a:1b" and "a:1b" not in emu.loaded_names()  # §2.4: not listed yet
    assert first["result"].status_code == second["result"].status_code == 200
    assert sorted(emu.loaded_names()) == ["a:1b", "b:1b", "warm:1b"]


def test_queue_capacity_and_busy_fault(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("a:1b"), small("b:1b"), small("c:1b")], max_queue=1, gpu_vram_mib=None)
    emu.faults.slow_load_s = 0.3
    with in_thread(lambda: post(emu, "/api/generate", {"model": "a:1b"})):
        wait_until(lambda: emu.loading_name() == "a:1b")
        with in_thread(lambda: post(emu, "/api/generate", {"model": "b:1b"})):
            wait_until(lambda: emu.queue_depth() == 1)
            full = post(emu, "/api/generate", {"model": "c:1b"})
            assert (full.status_code, full.json()) == (503, {"error": BUSY})
    emu.faults.slow_load_s = 0
    emu.faults.busy_503 = 1
    assert post(emu, "/api/generate", {"model": "c:1b"}).status_code == 503
    assert emu.faults.busy_503 == 0
    assert post(emu, "/api/generate", {"model": "c:1b"}).status_code == 200
    emu.faults.busy_503 = -1  # always; a loaded model still attaches without queueing
    assert post(emu, "/api/generate", {"model": "c:1b", "prompt": "x"}).status_code == 200


def test_client_disconnect_aborts_the_load(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("a:1b")])
    emu.faults.slow_load_s = 5
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        post(emu, "/api/generate", {"model": "a:1b"}, timeout=httpx.Timeout(5, read=0.3))
    wait_until(lambda: emu.aborted_loads == 1, what="the load to be aborted")
    assert time.monotonic() - started < 2
    assert emu.loaded_names() == [] and emu.loading_name() is None and emu.load_count["a:1b"] == 0
    emu.faults.slow_load_s = 0  # the loader is free again
    assert post(emu, "/api/generate", {"model": "a:1b"}).status_code == 200


# -- §4.3 / §4.4 fit ---------------------------------------------------------------------------------
def test_first_model_too_big_is_partially_offloaded(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("big:14b", file_mib=16)], gpu_vram_mib=8)
    post(emu, "/api/generate", {"model": "big:14b"}).raise_for_status()
    model = ps(emu)[0]
    assert model["size"] == 16 * MIB + KV_4096 and model["size_vram"] == 8 * MIB


def test_fit_check_evicts_when_the_next_model_does_not_fit(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("a:1b"), small("b:1b"), small("c:1b")], gpu_vram_mib=40, unload_delay_s=0.01)
    post(emu, "/api/generate", {"model": "a:1b", "keep_alive": "1m"})
    post(emu, "/api/generate", {"model": "b:1b", "keep_alive": "2m"})  # 17 MiB <= 0.8 x 23 MiB: fits
    assert sorted(emu.loaded_names()) == ["a:1b", "b:1b"]
    post(emu, "/api/generate", {"model": "c:1b"})  # 17 MiB > 0.8 x 6 MiB: evict one (a: shorter keep-alive)
    assert sorted(emu.loaded_names()) == ["b:1b", "c:1b"]
    assert all(m["size_vram"] == m["size"] for m in ps(emu))


def test_cpu_only_counts_models_only(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(
        models=[small(n, file_mib=4) for n in ("a:1b", "b:1b", "c:1b")],
        gpu_vram_mib=None,
        max_loaded_models=2,
        unload_delay_s=0.01,
    )
    for name in ("a:1b", "b:1b"):
        post(emu, "/api/generate", {"model": name, "options": {"num_ctx": 32768}})  # big, but no fit check
    assert [m["size_vram"] for m in ps(emu)] == [0, 0]
    post(emu, "/api/generate", {"model": "c:1b"})
    assert len(emu.loaded_names()) == 2 and "c:1b" in emu.loaded_names()


# -- §4.5 victims ------------------------------------------------------------------------------------
def test_victim_order_is_keep_alive_not_recency(ollama_emulator: EmulatorFactory) -> None:
    names = ("a:1b", "b:1b", "c:1b", "d:1b")
    emu = ollama_emulator(models=[small(n) for n in names], gpu_vram_mib=None, max_loaded_models=2, unload_delay_s=0.01)
    post(emu, "/api/generate", {"model": "b:1b", "keep_alive": "10m"})
    post(emu, "/api/generate", {"model": "a:1b", "keep_alive": "1m"})  # most recent, shortest keep-alive
    post(emu, "/api/generate", {"model": "c:1b", "keep_alive": "10m"})
    assert sorted(emu.loaded_names()) == ["b:1b", "c:1b"]  # a went, though b was least recently used
    # Tie on keep-alive: the lower blob path goes first.
    expected = max(("b:1b", "c:1b"), key=lambda n: str(emu.blob_path(n)))
    post(emu, "/api/generate", {"model": "d:1b", "keep_alive": "10m"})
    assert sorted(emu.loaded_names()) == sorted([expected, "d:1b"])


def test_victim_skips_busy_runners_and_waits_when_all_are_busy(ollama_emulator: EmulatorFactory) -> None:
    names = ("a:1b", "b:1b", "c:1b", "d:1b")
    emu = ollama_emulator(models=[small(n) for n in names], gpu_vram_mib=None, max_loaded_models=2, unload_delay_s=0.01)
    post(emu, "/api/generate", {"model": "a:1b", "keep_alive": "1m"})
    post(emu, "/api/generate", {"model": "b:1b", "keep_alive": -1})
    with emu.hold("a:1b"):
        post(emu, "/api/generate", {"model": "c:1b", "keep_alive": "1m"})  # a is busy: the pinned b goes
        assert sorted(emu.loaded_names()) == ["a:1b", "c:1b"]
    holds = ExitStack()
    holds.enter_context(emu.hold("a:1b"))
    holds.enter_context(emu.hold("c:1b"))
    with in_thread(lambda: post(emu, "/api/generate", {"model": "d:1b"})) as out:
        wait_until(lambda: any(r.keep_alive_s == 0 for r in emu.loaded()), what="a busy victim to be chosen")
        assert "result" not in out and len(emu.loaded_names()) == 2  # waiting for the busy victim
        holds.close()  # its requests end: the victim unloads and d loads
    assert out["result"].status_code == 200 and "d:1b" in emu.loaded_names()


# -- §4.6 unload ---------------------------------------------------------------------------------------
def test_unload_is_asynchronous(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("a:1b")], unload_delay_s=0.3)
    post(emu, "/api/generate", {"model": "a:1b"})
    started = time.monotonic()
    assert post(emu, "/api/generate", {"model": "a:1b", "keep_alive": 0}).json()["done_reason"] == "unload"
    assert time.monotonic() - started < 0.2  # answered without waiting for the unload
    assert emu.loaded()[0].stopping  # the process is still exiting ...
    # ... and /api/ps waits for that exit, then no longer lists it: Ollama never shows a
    # half-stopped idle runner (sched.go processCompleted closes it holding loadedMu, which
    # loadedModels needs; this corrects ollama.md §2.4).
    assert ps(emu) == []
    assert emu.loaded() == []
    # "Stopping..." (expires_at now) is what a busy runner shows after an unload request.
    post(emu, "/api/generate", {"model": "a:1b"})
    with emu.hold("a:1b"):
        post(emu, "/api/generate", {"model": "a:1b", "keep_alive": 0})
        stopping = ps(emu)[0]
        expires = datetime.fromisoformat(stopping["expires_at"].replace("Z", "+00:00"))
        assert expires <= datetime.now().astimezone()
    assert ps(emu) == []


def test_busy_unload_waits_and_a_positive_keep_alive_cancels_it(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("a:1b")], unload_delay_s=0.01)
    post(emu, "/api/generate", {"model": "a:1b"})
    with emu.hold("a:1b"):
        post(emu, "/api/generate", {"model": "a:1b", "keep_alive": 0})
        post(emu, "/api/generate", {"model": "a:1b", "prompt": "no keep_alive: does not cancel"})
        assert emu.loaded()[0].keep_alive_s == 0 and not emu.loaded()[0].stopping
    wait_until(lambda: emu.loaded_names() == [], what="the deferred unload")

    post(emu, "/api/generate", {"model": "a:1b"})
    with emu.hold("a:1b"):
        post(emu, "/api/generate", {"model": "a:1b", "keep_alive": 0})
        post(emu, "/api/generate", {"model": "a:1b", "prompt": "x", "keep_alive": "5m"})
    runner = emu.loaded()[0]  # decided synchronously when the last request ended
    assert runner.keep_alive_s == 300 and not runner.stopping


def test_unload_while_loading_is_a_no_op(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("a:1b")])
    emu.faults.slow_load_s = 0.3
    with in_thread(lambda: post(emu, "/api/generate", {"model": "a:1b"})) as load:
        wait_until(lambda: emu.loading_name() == "a:1b")
        assert post(emu, "/api/generate", {"model": "a:1b", "keep_alive": 0}).json()["done_reason"] == "unload"
    assert load["result"].json()["done_reason"] == "load"
    assert emu.loaded_names() == ["a:1b"] and not emu.loaded()[0].stopping


# -- §4.7 reloads ----------------------------------------------------------------------------------------
def test_reload_triggers(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("a:1b", context_length=16384)], gpu_vram_mib=256, unload_delay_s=0.01)

    def load(**options: Any) -> tuple[int, int]:
        post(emu, "/api/generate", {"model": "a:1b", "options": options}).raise_for_status()
        return emu.load_count["a:1b"], emu.loaded()[0].context_length

    assert load(num_ctx=8192) == (1, 8192)
    assert load(num_ctx=8192, temperature=0.1, top_p=0.5, seed=3, stop=["x"]) == (1, 8192)  # sampling: no
    assert load(num_ctx=8192, num_gpu=-1) == (1, 8192)  # num_gpu -1 is never a difference
    assert load() == (2, 4096)  # omitted num_ctx after an explicit one: reload at the default (#18129)
    assert load() == (2, 4096)  # automatic on both sides: not compared
    assert load(num_ctx=100000) == (3, 16384)  # capped at the trained context ...
    assert load(num_ctx=16384) == (3, 16384)  # ... before comparing
    assert load(num_ctx=16384, num_batch=256) == (4, 16384)
    assert load(num_ctx=16384, num_batch=256, num_thread=2) == (5, 16384)
    bad = post(emu, "/api/generate", {"model": "a:1b", "options": {"num_ctx": "big"}})
    assert (bad.status_code, bad.json()) == (500, {"error": 'option "num_ctx" must be of type integer'})


def test_context_length_env_and_parallel(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(
        models=[small("a:1b"), small("e:1b", capabilities=["embedding"])],
        gpu_vram_mib=256,
        context_length_env=2048,
        num_parallel=2,
    )
    post(emu, "/api/generate", {"model": "a:1b"})
    post(emu, "/api/embed", {"model": "e:1b"})
    sizes = {m["name"]: (m["context_length"], m["size"]) for m in ps(emu)}
    assert sizes["a:1b"] == (2048, MIB + KV_4096)  # 2048 ctx x 2 slots
    assert sizes["e:1b"] == (2048, MIB + KV_4096 // 2)  # embedding models get one slot


# -- §4.9 load failures ------------------------------------------------------------------------------------
def test_load_failures(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("a:1b"), small("b:1b"), small("c:1b")], load_timeout_s=0.2, unload_delay_s=0.01)
    post(emu, "/api/generate", {"model": "a:1b"})
    emu.faults.oom_on_load = {"b:1b"}
    oom = post(emu, "/api/generate", {"model": "b:1b"})
    assert oom.status_code == 500
    assert oom.json()["error"].startswith("llama-server reported out-of-memory during startup: ")
    assert emu.loaded_names() == []  # OOM with others loaded: all evicted before the retry
    emu.faults.die_on_load = {"c:1b"}
    died = post(emu, "/api/generate", {"model": "c:1b"}).json()["error"]
    assert died.startswith("llama-server process has terminated: ")
    emu.faults.stall_load_s = 5
    started = time.monotonic()
    stalled = post(emu, "/api/generate", {"model": "a:1b"})
    assert time.monotonic() - started < 2
    assert stalled.status_code == 500
    assert stalled.json()["error"].startswith("timed out waiting for llama-server to start - ")
    emu.faults.stall_load_s = 0.05  # shorter than the stall timeout: loads
    assert post(emu, "/api/generate", {"model": "a:1b"}).status_code == 200
    emu.blob_path("c:1b").unlink()
    missing = post(emu, "/api/generate", {"model": "c:1b"})
    assert (missing.status_code, missing.json()) == (404, {"error": 'model "c:1b" not found, try pulling it first'})
    assert emu.loaded_names() == ["a:1b"]


# -- faults and shutdown ------------------------------------------------------------------------------------
def test_fault_switches(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("a:1b")])
    emu.faults.error_500 = "boom"
    assert (get(emu, "/api/tags").status_code, get(emu, "/api/tags").json()) == (500, {"error": "boom"})
    assert get(emu, "/").status_code == 200
    emu.faults.error_500 = None

    emu.faults.error_mid_stream = True
    with CLIENT.stream("POST", f"{emu.url}/api/generate", json={"model": "a:1b", "prompt": "x"}) as r:
        assert r.status_code == 200
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert len(lines) == 2 and lines[0]["done"] is False and set(lines[1]) == {"error"}
    assert post(emu, "/api/generate", {"model": "a:1b", "prompt": "x"}).status_code == 500
    emu.faults.error_mid_stream = False
    assert emu.loaded()[0].active_requests == 0  # every lease was released

    with httpx.Client(base_url=emu.url) as client:
        assert client.get("/").status_code == 200  # a pooled keep-alive connection
        emu.faults.refuse_connections = True
        with pytest.raises(httpx.ConnectError):
            client.get("/")
        with pytest.raises(httpx.ConnectError):
            httpx.get(emu.url)
        emu.faults.refuse_connections = False
        assert client.get("/").status_code == 200  # same port again


def test_stop_is_clean_with_a_load_and_held_requests(ollama_emulator: EmulatorFactory) -> None:
    emu = ollama_emulator(models=[small("a:1b"), small("b:1b")])
    post(emu, "/api/generate", {"model": "a:1b"})
    emu.faults.slow_load_s = 30
    with emu.hold("a:1b"), in_thread(lambda: post(emu, "/api/generate", {"model": "b:1b"})) as out:
        wait_until(lambda: emu.loading_name() == "b:1b")
        started = time.monotonic()
        emu.stop()
        assert time.monotonic() - started < 2
    assert "error" in out or out["result"].status_code == 500
    with pytest.raises(httpx.ConnectError):
        httpx.get(emu.url)
    emu.stop()  # idempotent; the fixture stops it once more


# -- rules read from Ollama's source (server/sched.go, server/routes.go, api/types.go,
#    envconfig/config.go, llm/status.go at the commit ollama.md §0 names) -----------------------
def test_keep_alive_beyond_go_int64_nanoseconds(ollama_emulator: EmulatorFactory) -> None:
    """api/types.go Duration.UnmarshalJSON and Go's time.ParseDuration: a string beyond int64
    nanoseconds is a 400; a number beyond it overflows (amd64: the minimum int64, a negative
    duration that sched.go processCompleted treats as "expire when idle"). Neither may stop the
    emulator's timers."""
    emu = ollama_emulator(models=[small("a:1b"), small("b:1b")], gpu_vram_mib=None, unload_delay_s=0.01)
    for value in ("3000000h", "2562048h", "9223372037s"):
        reply = post(emu, "/api/generate", {"model": "a:1b", "keep_alive": value})
        assert (reply.status_code, reply.json()) == (400, {"error": f'time: invalid duration "{value}"'})
    assert emu.loaded_names() == []
    post(emu, "/api/generate", {"model": "a:1b", "keep_alive": "2562047h"}).raise_for_status()
    assert emu.loaded()[0].keep_alive_s == 2562047 * 3600  # the largest whole hour Go accepts
    post(emu, "/api/generate", {"model": "a:1b", "keep_alive": 9e9}).raise_for_status()
    assert emu.loaded()[0].keep_alive_s == 9e9  # below the limit: finite, about 285 years

    overflowing = post(emu, "/api/generate", {"model": "b:1b", "keep_alive": 1e10})
    assert overflowing.json()["done_reason"] == "load"  # not the unload shortcut: the duration is not 0
    wait_until(lambda: emu.loaded_names() == ["a:1b"], what="b to expire once idle")
    # The timers still run: an unload finishes and the next load works.
    post(emu, "/api/generate", {"model": "a:1b", "keep_alive": 0})
    wait_until(lambda: emu.loaded_names() == [], what="the unload of a")
    assert post(emu, "/api/generate", {"model": "a:1b"}).json()["done_reason"] == "load"


def test_keep_alive_below_one_nanosecond_is_zero(ollama_emulator: EmulatorFactory) -> None:
    """api/types.go Duration.UnmarshalJSON truncates seconds x 1e9 to an integer, and Go's
    time.ParseDuration drops fractions of a nanosecond: below 1 ns is 0, which routes.go
    GenerateHandler takes as the unload shortcut."""
    emu = ollama_emulator(models=[small("a:1b")], unload_delay_s=0.01)
    for tiny in (1e-10, "0.5ns", "0.0000000001s"):
        post(emu, "/api/generate", {"model": "a:1b"}).raise_for_status()
        reply = post(emu, "/api/generate", {"model": "a:1b", "keep_alive": tiny})
        assert reply.json()["done_reason"] == "unload"
        wait_until(lambda: emu.loaded_names() == [], what=f"the unload by keep_alive {tiny!r}")
    assert post(emu, "/api/generate", {"model": "a:1b", "keep_alive": 1e-9}).json()["done_reason"] == "load"
    wait_until(lambda: emu.loaded_names() == [], what="the 1 ns keep-alive to expire")


@pytest.mark.parametrize(
    ("env", "expected"),
    [("bogus", 300), ("1.5", 300), ("", 300), ("3600", 3600), (" '10m' ", 600), ("-1", None), ("9999999999", None)],
)
def test_ollama_keep_alive_env(ollama_emulator: EmulatorFactory, env: str, expected: float | None) -> None:
    """envconfig/config.go KeepAlive (and Var, which trims spaces and quotes): a Go duration,
    else integer seconds (multiplied in int64, so a huge one wraps negative = forever), else
    the 5 minute default; negative = forever."""
    emu = ollama_emulator(models=[small("a:1b")], default_keep_alive=env)
    post(emu, "/api/generate", {"model": "a:1b"}).raise_for_status()
    assert emu.loaded()[0].keep_alive_s == expected


def test_out_of_memory_at_load_is_retried_once(ollama_emulator: EmulatorFactory) -> None:
    """sched.go load (reduceAutoNumCtxForLoadOOM, oomRetryAttempted) and processPending
    (evictAllAndWait): ONE retry in total. An automatic context is lowered for it and, with
    other runners loaded, all of them are evicted before it, together; an explicit context is
    retried only to evict the others; then the error goes to the client."""
    emu = ollama_emulator(models=[small("a:1b"), small("b:1b")], gpu_vram_mib=24 * 1024, unload_delay_s=0.01)

    def attempts_for_b(**body: Any) -> tuple[int, list[tuple[str, int, tuple[str, ...]]]]:
        emu.load_attempts.clear()
        reply = post(emu, "/api/generate", {"model": "b:1b", **body})
        return reply.status_code, [attempt for attempt in emu.load_attempts if attempt[0] == "b:1b"]

    emu.faults.oom_on_load = {"b:1b"}
    post(emu, "/api/generate", {"model": "a:1b"})  # the 24 GiB tier: automatic context 32768
    assert attempts_for_b() == (500, [("b:1b", 32768, ("a:1b",)), ("b:1b", 4096, ())])
    assert attempts_for_b() == (500, [("b:1b", 32768, ()), ("b:1b", 4096, ())])  # alone: lower only
    post(emu, "/api/generate", {"model": "a:1b"})
    explicit = {"options": {"num_ctx": 8192}}
    assert attempts_for_b(**explicit) == (500, [("b:1b", 8192, ("a:1b",)), ("b:1b", 8192, ())])  # evict only
    assert attempts_for_b(**explicit) == (500, [("b:1b", 8192, ())])  # alone and explicit: no retry

    emu.faults.oom_on_load = set()
    emu.faults.oom_above_ctx = {"b:1b": 4096}  # fits once the context is lowered
    post(emu, "/api/generate", {"model": "a:1b"})
    assert attempts_for_b() == (200, [("b:1b", 32768, ("a:1b",)), ("b:1b", 4096, ())])
    assert [(m["name"], m["context_length"]) for m in ps(emu)] == [("b:1b", 4096)]


def test_a_request_during_a_pending_expiry_is_served_by_the_dying_runner(ollama_emulator: EmulatorFactory) -> None:
    """sched.go processCompleted: an expiry waiting in expiredCh leaves the runner in the loaded
    set, so getRunner/useLoadedRunner hand it to a new request; the expiry, re-sent every 10 ms
    while the runner is busy, then unloads it whatever keep_alive that request carried. An
    unload followed by a preload of the same model can end with the model NOT loaded."""
    emu = ollama_emulator(models=[small("a:1b")], unload_delay_s=0.01)
    post(emu, "/api/generate", {"model": "a:1b", "keep_alive": "5m"})
    emu.faults.hold_expiries = True  # the scheduler is busy elsewhere: the expiry waits in its queue
    assert post(emu, "/api/generate", {"model": "a:1b", "keep_alive": 0}).json()["done_reason"] == "unload"
    preload = post(emu, "/api/generate", {"model": "a:1b", "keep_alive": -1})
    assert preload.json()["done_reason"] == "load"
    assert emu.load_count["a:1b"] == 1  # served by the expiring runner, not a new load
    assert emu.loaded()[0].keep_alive_s is None  # it took the pin ...
    emu.faults.hold_expiries = False
    wait_until(lambda: emu.loaded_names() == [], what="the queued expiry")  # ... and unloads all the same
    assert emu.load_count["a:1b"] == 1

    # The same with a realistic delay instead of the switch (``expiry_delay_s``), idle timer path.
    emu = ollama_emulator(models=[small("a:1b")], unload_delay_s=0.01, expiry_delay_s=30)
    post(emu, "/api/generate", {"model": "a:1b", "keep_alive": 1e-6})  # the timer fires at once
    wait_until(lambda: bool(emu.loaded()) and emu.loaded()[0].stopping, what="the idle timer to fire")
    assert post(emu, "/api/generate", {"model": "a:1b", "keep_alive": "1h"}).json()["done_reason"] == "load"
    assert emu.load_count["a:1b"] == 1 and emu.loaded()[0].stopping


def test_ps_waits_for_an_exiting_runner_and_does_not_list_it(ollama_emulator: EmulatorFactory) -> None:
    """sched.go processCompleted closes an expired idle runner while holding loadedMu, and
    loadedModels (routes.go PsHandler) needs loadedMu: /api/ps answers once the process has
    exited, without it. ollama.md §2.4 says the opposite; its Corrections section is right."""
    emu = ollama_emulator(models=[small("a:1b"), small("b:1b")], unload_delay_s=0.3)
    post(emu, "/api/generate", {"model": "a:1b"})
    post(emu, "/api/generate", {"model": "b:1b"})
    post(emu, "/api/generate", {"model": "a:1b", "keep_alive": 0})
    assert [m["name"] for m in ps(emu)] == ["b:1b"]
    assert emu.loaded_names() == ["b:1b"]  # a's process had exited by the time ps answered


def test_reload_triggers_beyond_num_ctx(ollama_emulator: EmulatorFactory) -> None:
    """sched.go needsReload with routes.go modelOptions and api/types.go Runner: main_gpu is a
    pointer (unset differs from 0); any negative request num_gpu is automatic; draft_num_predict
    counts (0 when unset on a model without a draft); an automatic batch compares as
    DefaultOptions' 512 against a runner's explicit one; use_mmap compares as set (the
    automatic case is on CPU-only, below); a failed health ping reloads."""
    emu = ollama_emulator(models=[small("a:1b", context_length=16384)], gpu_vram_mib=4096, unload_delay_s=0.01)

    def loads(**options: Any) -> int:
        post(emu, "/api/generate", {"model": "a:1b", "options": options}).raise_for_status()
        return emu.load_count["a:1b"]

    assert loads() == 1
    assert loads(main_gpu=0) == 2  # unset vs 0
    assert loads(main_gpu=0) == 2
    assert loads() == 3  # 0 vs unset
    assert loads(num_gpu=-2) == 3  # any negative num_gpu is automatic
    assert loads(num_gpu=99) == 4
    assert loads(num_gpu=-7) == 4  # a negative request is not compared even with an explicit runner
    assert loads(draft_num_predict=8) == 5
    assert loads(draft_num_predict=8) == 5
    assert loads() == 6  # 8 vs unset (0: the model has no draft)
    assert loads(draft_num_predict=0) == 6
    assert loads(num_ctx=8192, num_batch=1024) == 7
    assert loads(num_ctx=8192) == 8  # the request's automatic batch compares as 512
    assert loads(num_ctx=8192, num_batch=1024) == 8  # the runner's automatic batch at 8192 is 1024
    assert loads(num_ctx=8192, use_mmap=False) == 9  # on a GPU the runner's use_mmap is unset
    emu.crash_runner("a:1b")
    assert [m["name"] for m in ps(emu)] == ["a:1b"]  # a dead runner is still listed ...
    assert loads(num_ctx=8192, use_mmap=False) == 10  # ... until a request's health ping fails


def test_cpu_only_use_mmap_reload_rule(ollama_emulator: EmulatorFactory) -> None:
    """sched.go applyLlamaServerMmapDefaults / disableMmapDefaultReason ("cpu") and needsReload
    (useMMapAuto): a CPU-only load without use_mmap gets false from the scheduler; a request
    asking false matches it, true reloads; a runner loaded with an explicit value is compared
    with the request's as given, so omitting it then reloads."""
    emu = ollama_emulator(models=[small("a:1b")], gpu_vram_mib=None, unload_delay_s=0.01)

    def loads(**options: Any) -> int:
        post(emu, "/api/generate", {"model": "a:1b", "options": options}).raise_for_status()
        return emu.load_count["a:1b"]

    assert loads() == 1
    assert loads(use_mmap=False) == 1
    assert loads(use_mmap=True) == 2
    assert loads() == 3


@pytest.mark.parametrize(
    ("stderr", "kept"),
    [
        (
            "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 512.00 MiB on device 0: "
            "cudaMalloc failed: out of device memory",
            "cudaMalloc failed: out of device memory",
        ),
        (
            "ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 536870912",
            "ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 536870912",
        ),
        ("ggml_hip: hipMalloc failed for 1 GiB", "ggml_hip: hipMalloc failed for 1 GiB"),
        (
            "load_tensors: loading model\nllama_init_from_model: not enough memory for the KV cache",
            "llama_init_from_model: not enough memory for the KV cache",
        ),
        ("main: Error: insufficient memory to load the model", "Error: insufficient memory to load the model"),
    ],
)
def test_runner_out_of_memory_texts(ollama_emulator: EmulatorFactory, stderr: str, kept: str) -> None:
    """llm/llama_server.go WaitUntilRunning: a runner that dies while loading fails the load with
    "llama-server process has terminated: exit status N: <kept lines>", where llm/status.go
    StatusWriter keeps a line from its earliest error prefix on, or whole when it holds an
    out-of-memory needle; IsOutOfMemory then finds the needle, so sched.go load retries it as
    an out of memory (here: evicting the other runner first)."""
    emu = ollama_emulator(models=[small("a:1b"), small("b:1b")], gpu_vram_mib=None, unload_delay_s=0.01)
    post(emu, "/api/generate", {"model": "a:1b"})
    emu.faults.crash_log = {"b:1b": stderr}
    reply = post(emu, "/api/generate", {"model": "b:1b"})
    expected = f"llama-server process has terminated: exit status 1: {kept}"
    assert (reply.status_code, reply.json()) == (500, {"error": expected})
    assert [a for a in emu.load_attempts if a[0] == "b:1b"] == [("b:1b", 4096, ("a:1b",)), ("b:1b", 4096, ())]


def test_a_runner_crash_without_out_of_memory_is_not_retried(ollama_emulator: EmulatorFactory) -> None:
    """llm/status.go: "error loading model" is an error prefix but no out-of-memory needle, so
    sched.go load returns the error at once and the other runner stays."""
    emu = ollama_emulator(models=[small("a:1b"), small("b:1b")], gpu_vram_mib=None)
    post(emu, "/api/generate", {"model": "a:1b"})
    emu.faults.crash_log = {"b:1b": "llama_model_load: error loading model: unknown model architecture: 'x'"}
    reply = post(emu, "/api/generate", {"model": "b:1b"})
    kept = "error loading model: unknown model architecture: 'x'"
    expected = f"llama-server process has terminated: exit status 1: {kept}"
    assert (reply.status_code, reply.json()) == (500, {"error": expected})
    assert [a for a in emu.load_attempts if a[0] == "b:1b"] == [("b:1b", 4096, ("a:1b",))]
    assert emu.loaded_names() == ["a:1b"]


def test_explicit_num_batch_adds_to_the_fit_check(ollama_emulator: EmulatorFactory) -> None:
    """sched.go load (predictedForLoad) and generationBatchSurcharge: a completion model's batch
    adds 768 MiB at 1024 and 2 GiB at 2048 to the 80 % fit check; automaticGenerationBatch steps
    an automatic batch down until it fits, so that one never evicts by itself; embedding models
    pay no surcharge."""
    models = [small("a:1b"), small("b:1b", context_length=16384), small("e:1b", capabilities=["embedding"])]
    emu = ollama_emulator(models=models, gpu_vram_mib=600, unload_delay_s=0.01)
    post(emu, "/api/generate", {"model": "a:1b"})  # 1 MiB + 16 MiB KV
    post(emu, "/api/generate", {"model": "b:1b", "options": {"num_ctx": 8192}})  # 33 MiB, automatic batch
    assert sorted(emu.loaded_names()) == ["a:1b", "b:1b"]
    post(emu, "/api/embed", {"model": "e:1b", "options": {"num_batch": 2048}})
    assert sorted(emu.loaded_names()) == ["a:1b", "b:1b", "e:1b"]
    post(emu, "/api/generate", {"model": "b:1b", "options": {"num_ctx": 8192, "num_batch": 1024}})
    # 33 MiB + 768 MiB > 0.8 x the free 600 - 17 - 16.5 MiB: the others are evicted.
    assert emu.loaded_names() == ["b:1b"]

    emu = ollama_emulator(models=models[:2], gpu_vram_mib=2500, unload_delay_s=0.01)
    post(emu, "/api/generate", {"model": "a:1b"})
    post(emu, "/api/generate", {"model": "b:1b", "options": {"num_batch": 1024}})  # 785 MiB <= 0.8 x 2483
    assert sorted(emu.loaded_names()) == ["a:1b", "b:1b"]
    post(emu, "/api/generate", {"model": "b:1b", "options": {"num_batch": 2048}})  # 2065 MiB > 0.8 x 2483
    assert emu.loaded_names() == ["b:1b"]


def test_embed_checks_its_input_before_the_model(ollama_emulator: EmulatorFactory) -> None:
    """routes.go EmbedHandler: the input's type is checked before the model is looked up."""
    emu = ollama_emulator(models=[small("e:1b", capabilities=["embedding"])])
    bad = post(emu, "/api/embed", {"model": "missing", "input": 5})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid input type"})
    bad = post(emu, "/api/embed", {"model": "missing", "input": ["x", 1]})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid input type"})
    unknown = post(emu, "/api/embed", {"model": "missing", "input": "x"})
    assert (unknown.status_code, unknown.json()) == (404, {"error": 'model "missing" not found, try pulling it first'})


def test_ps_order_among_equal_expiries_is_not_stable(ollama_emulator: EmulatorFactory) -> None:
    """routes.go PsHandler sorts stably by expires_at in whole seconds, but its input is
    sched.go loadedModels iterating a Go map: random order. The emulator alternates between
    calls, so a client relying on the order of ties fails every time, not by chance."""
    emu = ollama_emulator(models=[small("a:1b"), small("b:1b")])
    for _ in range(10):
        for name in ("a:1b", "b:1b"):
            post(emu, "/api/generate", {"model": name, "keep_alive": -1}).raise_for_status()
        seconds = {math.floor(view.expires_at.timestamp()) for view in emu.loaded()}
        if len(seconds) == 1:
            break  # both expire in the same second: a tie
    assert len(seconds) == 1
    first, second = ([m["name"] for m in ps(emu)] for _ in range(2))
    assert sorted(first) == sorted(second) == ["a:1b", "b:1b"] and first != second


def test_a_fresh_load_shows_now_plus_keep_alive_until_its_first_request_ends(
    ollama_emulator: EmulatorFactory,
) -> None:
    """sched.go loadedModels: a runner's expiresAt is set when a request ends (processCompleted);
    until its first request ends it is zero, and ps answers now + keep_alive, computed anew at
    each call. Afterwards it stays put until the next request ends."""
    emu = ollama_emulator(models=[small("a:1b")])
    with emu.hold("a:1b", load=True, keep_alive=600):
        first = ps(emu)[0]["expires_at"]
        wait_until(lambda: ps(emu)[0]["expires_at"] != first, what="expires_at to move with the clock")
    settled = ps(emu)[0]["expires_at"]
    assert all(ps(emu)[0]["expires_at"] == settled for _ in range(3))


def test_runtime_out_of_memory_expires_every_runner(ollama_emulator: EmulatorFactory) -> None:
    """routes.go GenerateHandler calls sched.go expireRunnersForRuntimeOOM when generation fails
    with an out-of-memory text: every loaded runner, pinned ones too, expires when idle."""
    emu = ollama_emulator(models=[small("a:1b"), small("b:1b")], gpu_vram_mib=None, unload_delay_s=0.01)
    post(emu, "/api/generate", {"model": "a:1b"})
    post(emu, "/api/generate", {"model": "b:1b", "keep_alive": -1})
    emu.faults.runtime_oom = True
    reply = post(emu, "/api/generate", {"model": "a:1b", "prompt": "hi"})
    assert reply.status_code == 500 and "out of memory" in reply.json()["error"]
    wait_until(lambda: emu.loaded_names() == [], what="every runner to expire")
