"""The official ``ollama`` Python client drives the Ollama emulator.

A check of the emulator's wire format by code this project did not write: every call the
Ollama provider relies on (ps, list, show, generate with an empty prompt to preload and with
keep_alive 0 to unload, chat, embed, and the error replies) parses into the client's own
response types. The client's models ignore fields they do not know, so each test also
compares the keys on the wire with the fields the client models: a key it does not know is
either one real Ollama sends that this client version leaves out (listed here, from
ollama.md §2) or a misspelling in the emulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import ollama
import pytest
from pydantic import BaseModel

from tests.emulator import EmulatedModel, OllamaEmulator
from tests.emulator.pytest_plugin import EmulatorFactory

MIB = 1024 * 1024
MODELS = [
    EmulatedModel("qwen3:4b", file_mib=1, family="qwen3"),
    EmulatedModel("nomic-embed-text", file_mib=1, capabilities=["embedding"], family="nomic-bert"),
]
# Keys real Ollama sends (ollama.md §2.2-§2.4) that ollama-python's types do not model.
UNMODELLED = {
    "/api/tags": {
        "models.name",
        "models.capabilities",
        "models.details.context_length",
        "models.details.embedding_length",
    },
    "/api/show": {"details.context_length", "details.embedding_length"},
}


@pytest.fixture
def emu(ollama_emulator: EmulatorFactory) -> OllamaEmulator:
    return ollama_emulator(models=MODELS, gpu_vram_mib=256, unload_delay_s=0.01)


@pytest.fixture
def client(emu: OllamaEmulator) -> Iterator[ollama.Client]:
    client = ollama.Client(host=emu.url)
    yield client
    client._client.close()


def unknown_keys(raw: Any, parsed: Any, prefix: str = "") -> set[str]:
    """Keys of ``raw`` (JSON) that the client's model ``parsed`` has no field for, dotted."""
    if isinstance(parsed, BaseModel) and isinstance(raw, dict):
        fields = type(parsed).model_fields
        names = {info.alias or name: name for name, info in fields.items()}
        found: set[str] = set()
        for key, value in raw.items():
            if key not in names:
                found.add(prefix + key)
            else:
                found |= unknown_keys(value, getattr(parsed, names[key]), f"{prefix}{key}.")
        return found
    if isinstance(parsed, list | tuple) and isinstance(raw, list) and parsed:
        return set().union(*(unknown_keys(r, p, prefix) for r, p in zip(raw, parsed, strict=True)))
    return set()


def raw(emu: OllamaEmulator, method: str, path: str, body: Any = None) -> Any:
    reply = httpx.request(method, f"{emu.url}{path}", json=body, timeout=10)
    reply.raise_for_status()
    return reply.json()


def test_preload_ps_and_unload(emu: OllamaEmulator, client: ollama.Client) -> None:
    preload = client.generate(model="qwen3:4b", prompt="", keep_alive=-1)
    assert isinstance(preload, ollama.GenerateResponse)
    assert (preload.model, preload.done, preload.done_reason, preload.response) == ("qwen3:4b", True, "load", "")
    assert preload.total_duration is None  # the load shortcut carries no durations (ollama.md §2.5)
    embed_preload = client.embed(model="nomic-embed-text", input="")
    assert isinstance(embed_preload, ollama.EmbedResponse) and list(embed_preload.embeddings) == []

    listed = client.ps()
    assert isinstance(listed, ollama.ProcessResponse)
    by_name = {m.name: m for m in listed.models}
    assert set(by_name) == {"qwen3:4b", "nomic-embed-text:latest"}
    pinned = by_name["qwen3:4b"]
    assert pinned.model == "qwen3:4b" and pinned.digest is not None and len(pinned.digest) == 64
    assert isinstance(pinned.expires_at, datetime) and pinned.expires_at.tzinfo is not None
    assert pinned.expires_at.year > 2300  # forever (ollama.md §3.3)
    assert pinned.size is not None and pinned.size == pinned.size_vram and pinned.size > MIB
    assert pinned.context_length == 4096
    assert pinned.details is not None and pinned.details.family == "qwen3" and pinned.details.format == "gguf"
    assert unknown_keys(raw(emu, "GET", "/api/ps"), listed) == set()

    unload = client.generate(model="qwen3:4b", keep_alive=0)
    assert (unload.done, unload.done_reason) == (True, "unload")
    assert [m.name for m in client.ps().models] == ["nomic-embed-text:latest"]


def test_list_and_show(emu: OllamaEmulator, client: ollama.Client) -> None:
    listed = client.list()
    assert isinstance(listed, ollama.ListResponse)
    assert sorted(m.model or "" for m in listed.models) == ["nomic-embed-text:latest", "qwen3:4b"]
    for model in listed.models:
        assert isinstance(model.modified_at, datetime) and model.modified_at.tzinfo is not None
        assert model.size is not None and model.size > MIB and model.digest is not None
        assert model.details is not None and model.details.quantization_level == "Q4_K_M"
    assert unknown_keys(raw(emu, "GET", "/api/tags"), listed) == UNMODELLED["/api/tags"]

    shown = client.show("qwen3:4b")
    assert isinstance(shown, ollama.ShowResponse)
    assert shown.capabilities == ["completion"]
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "qwen3"
    assert shown.modelfile is not None and f"FROM {emu.blob_path('qwen3:4b').resolve()}" in shown.modelfile
    assert isinstance(shown.modified_at, datetime)
    raw_show = raw(emu, "POST", "/api/show", {"model": "qwen3:4b"})
    assert unknown_keys(raw_show, shown) == UNMODELLED["/api/show"]


def test_generate_chat_and_embed(emu: OllamaEmulator, client: ollama.Client) -> None:
    reply = client.generate(model="qwen3:4b", prompt="hello", options={"num_ctx": 4096})
    assert isinstance(reply, ollama.GenerateResponse)
    assert reply.done and reply.done_reason == "stop" and reply.response
    assert reply.eval_count and reply.load_duration and reply.total_duration
    pieces = list(client.generate(model="qwen3:4b", prompt="hello", stream=True))
    assert all(isinstance(p, ollama.GenerateResponse) for p in pieces) and pieces[-1].done

    chat = client.chat(model="qwen3:4b", messages=[{"role": "user", "content": "hi"}])
    assert isinstance(chat, ollama.ChatResponse)
    assert chat.message.role == "assistant" and chat.message.content and chat.done
    streamed = list(client.chat(model="qwen3:4b", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(isinstance(p, ollama.ChatResponse) for p in streamed) and streamed[-1].done_reason == "stop"

    vectors = client.embed(model="nomic-embed-text", input=["a", "b"])
    assert isinstance(vectors, ollama.EmbedResponse)
    assert len(vectors.embeddings) == 2 and len(vectors.embeddings[0]) == 512
    assert vectors.prompt_eval_count == 2
    assert emu.load_count["qwen3:4b"] == 1  # every call above shared one runner


def test_errors_reach_the_client(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.generate(model="mistral", prompt="")
    assert (missing.value.status_code, missing.value.error) == (404, "model 'mistral' not found")
    with pytest.raises(ollama.ResponseError) as unknown:
        client.show("mistral")
    assert (unknown.value.status_code, unknown.value.error) == (404, "model 'mistral:latest' not found")
    with pytest.raises(ollama.ResponseError) as keep_alive:
        client.generate(model="qwen3:4b", keep_alive="3000000h")
    assert (keep_alive.value.status_code, keep_alive.value.error) == (400, 'time: invalid duration "3000000h"')
    with pytest.raises(ollama.ResponseError) as embedding_only:
        client.generate(model="nomic-embed-text", prompt="x")
    assert embedding_only.value.status_code == 400
    assert embedding_only.value.error == '"nomic-embed-text" does not support generate'
