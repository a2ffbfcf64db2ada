"""Several servers in one config: Ollama (emulator), LM Studio and a cloud API (loopback fakes) side
by side, as a user with a fast local model, a heavy one and a deep-reasoning API would run them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CliFn
from tests.emulator import EmulatedModel
from tests.fakes.lmstudio import QWEN, FakeLMStudio
from tests.fakes.openai import MODELS as CLOUD_MODELS
from tests.loopback import Reply, Request, serve, unused_port

KEY_VAR = "DEEP_API_KEY"
SECRET = "sk-deep-0123456789"

# The documented keys of `status --json`, per endpoint and per model (README, "status --json").
ENDPOINT_KEYS = {"name", "kind", "url", "ok", "error", "server", "models", "lost_pins", "host"}
MODEL_KEYS = {
    "name",
    "state",
    "size",
    "size_vram",
    "vram_percent",
    "processor",
    "context_length",
    "expires_at",
    "until",
    "pinned",
    "always_available",
    "digest",
}


@pytest.fixture
def side_by_side(
    ollama_emulator: Any, write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Any, FakeLMStudio]]:
    monkeypatch.setenv(KEY_VAR, SECRET)
    emulator = ollama_emulator(models=[EmulatedModel("qwen3:14b", file_mib=8)], gpu_vram_mib=64)
    studio = FakeLMStudio()
    studio.instances[QWEN] = [(QWEN, 16384)]

    def cloud(request: Request) -> Reply:
        if request.headers.get("authorization") != f"Bearer {SECRET}":
            return 401, {"error": {"message": "bad key"}}
        return (200, CLOUD_MODELS) if request.path == "/v1/models" else (404, {"error": {"message": "no"}})

    with (
        serve(lambda request: studio.handle(request.method, request.path, request.body)) as studio_url,
        serve(cloud) as cloud_url,
    ):
        path = write_config(
            f'default_endpoint = "heavy"\n'
            f'[endpoints.heavy]\nkind = "ollama"\nurl = "{emulator.url}"\n'
            f'[endpoints.fast]\nkind = "lmstudio"\nurl = "{studio_url}"\n'
            f'[endpoints.deep]\nkind = "openai"\nurl = "{cloud_url}/v1"\napi_key_env = "{KEY_VAR}"\n'
        )
        yield str(path), emulator, studio


def test_status_json_is_one_document_for_every_endpoint(cli: CliFn, side_by_side: tuple[str, Any, Any]) -> None:
    path, emulator, _ = side_by_side
    httpx.post(f"{emulator.url}/api/generate", json={"model": "qwen3:14b", "stream": False}).raise_for_status()

    result = cli("--config", path, "status", "--json", "--no-hardware")

    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert set(document) == {"schema_version", "hosts", "endpoints", "hardware"}  # docs/json.md
    by_name = {endpoint["name"]: endpoint for endpoint in document["endpoints"]}
    assert [(e["name"], e["kind"]) for e in document["endpoints"]] == [
        ("heavy", "ollama"),
        ("fast", "lmstudio"),
        ("deep", "openai"),
    ]
    for endpoint in document["endpoints"]:
        assert set(endpoint) == ENDPOINT_KEYS and endpoint["ok"] is True
        for model in endpoint["models"]:
            assert set(model) == MODEL_KEYS
    assert [m["name"] for m in by_name["heavy"]["models"]] == ["qwen3:14b"]
    assert [(m["name"], m["context_length"]) for m in by_name["fast"]["models"]] == [(QWEN, 16384)]
    assert by_name["deep"]["models"] == []  # always ready, nothing resident
    assert SECRET not in result.stdout + result.stderr


def test_one_endpoint_down_does_not_hide_the_others(
    cli: CliFn, side_by_side: tuple[str, Any, Any], write_config: Callable[[str], Path]
) -> None:
    path, _, _ = side_by_side
    text = Path(path).read_text() + f'[endpoints.spare]\nkind = "llamacpp"\nurl = "http://127.0.0.1:{unused_port()}"\n'
    path = str(write_config(text))

    result = cli("--config", path, "status", "--json", "--no-hardware")

    assert result.exit_code == 4
    oks = {endpoint["name"]: endpoint["ok"] for endpoint in result.json()["endpoints"]}
    assert oks == {"heavy": True, "fast": True, "deep": True, "spare": False}
    assert "cannot reach llama-server" in result.stderr and "spare" in result.stderr
    table = cli("--config", path, "status", "--no-hardware")
    assert "(unreachable)" in table.stdout and QWEN in table.stdout


def test_an_unconfigured_name_goes_to_the_endpoint_that_has_it(
    cli: CliFn, side_by_side: tuple[str, Any, FakeLMStudio]
) -> None:
    path, emulator, studio = side_by_side

    to_studio = cli("--config", path, "load", "google/gemma-3-4b", "--no-warm", "--json")
    to_ollama = cli("--config", path, "load", "qwen3:14b", "--no-warm", "--json")
    to_cloud = cli("--config", path, "load", "gpt-4.1", "--json")

    assert to_studio.exit_code == 0, to_studio.stderr
    assert to_studio.json()["endpoint"] == "fast" and studio.instances["google/gemma-3-4b"]
    assert to_ollama.exit_code == 0 and to_ollama.json()["endpoint"] == "heavy"
    assert "qwen3:14b" in emulator.loaded_names()
    assert to_cloud.exit_code == 0 and to_cloud.json()["outcome"] == "always-ready"


def test_a_name_on_two_endpoints_needs_endpoint(
    cli: CliFn, side_by_side: tuple[str, Any, FakeLMStudio], write_config: Callable[[str], Path]
) -> None:
    path, _, studio = side_by_side
    # A second LM Studio offering the same catalogue: the name alone is ambiguous.
    with serve(lambda request: studio.handle(request.method, request.path, request.body)) as other:
        text = Path(path).read_text() + f'[endpoints.fast2]\nkind = "lmstudio"\nurl = "{other}"\n'
        path = str(write_config(text))

        ambiguous = cli("--config", path, "load", "google/gemma-3-4b", "--no-warm")
        chosen = cli("--config", path, "load", "google/gemma-3-4b", "--endpoint", "fast2", "--no-warm", "--json")

    assert ambiguous.exit_code == 2
    assert "several endpoints (fast, fast2)" in ambiguous.stderr and "--endpoint" in ambiguous.stderr
    assert chosen.exit_code == 0 and chosen.json()["endpoint"] == "fast2"


def test_unknown_everywhere_is_not_found_on_the_default(cli: CliFn, side_by_side: tuple[str, Any, Any]) -> None:
    path, _, _ = side_by_side
    result = cli("--config", path, "load", "no-such-model", "--no-warm")
    assert result.exit_code == 3 and "heavy" in result.stderr


def test_a_pipeline_across_three_endpoints(
    cli: CliFn, side_by_side: tuple[str, Any, FakeLMStudio], tmp_path: Path
) -> None:
    path, emulator, studio = side_by_side
    seen = tmp_path / "seen.txt"
    record = f'echo \\"$SOURCEPREP_ENDPOINT $SOURCEPREP_MODEL $OPENAI_BASE_URL ${{OPENAI_API_KEY:+key}}\\" >> {seen}'
    text = Path(path).read_text() + (
        '[models.fast]\nname = "google/gemma-3-4b"\nendpoint = "fast"\ncontext_length = 8192\n'
        '[models.heavy]\nname = "qwen3:14b"\nendpoint = "heavy"\n'
        '[models.deep]\nname = "gpt-4.1"\nendpoint = "deep"\n'
        "[pipelines.agent]\nstages = [\n"
        f'  {{ name = "context", model = "fast", command = "{record}" }},\n'
        f'  {{ name = "execute", model = "heavy", command = "{record}" }},\n'
        f'  {{ name = "verify", model = "deep", command = "{record}" }},\n]\n'
    )
    Path(path).write_text(text)

    result = cli("--config", path, "run-pipeline", "agent", "--no-overlap", "--json")

    assert result.exit_code == 0, result.stderr
    rows = result.json()["stages"]
    assert [(row["endpoint"], row["action"]) for row in rows] == [
        ("fast", "load"),
        ("heavy", "load"),
        ("deep", "ready"),
    ]
    lines = seen.read_text().splitlines()
    assert lines[0].startswith("fast google/gemma-3-4b http://127.0.0.1:") and lines[0].endswith("/v1 ")
    assert lines[1].startswith("heavy qwen3:14b ")
    assert lines[2].startswith("deep gpt-4.1 ") and lines[2].endswith(" key")  # the key reaches the command only
    assert studio.instances["google/gemma-3-4b"][0][1] == 8192
    assert "qwen3:14b" in emulator.loaded_names()
    assert SECRET not in result.stdout + result.stderr
