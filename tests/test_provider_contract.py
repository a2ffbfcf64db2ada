"""The Provider contract: what the core relies on from every server, run against each registered kind.

Each kind is driven through the registry (``create_provider``) against its fake in ``tests/fakes/``
(the Ollama emulator for Ollama; a real llama-server router for llama.cpp when the binary is
installed). A kind registered without a fake here fails, so a new provider cannot skip the contract.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sourceprep_models.config.schema import Endpoint
from sourceprep_models.errors import ExitCode, ModelNotFound, ServerUnreachable
from sourceprep_models.providers import create_provider, registered_kinds
from sourceprep_models.providers.base import (
    MODEL_STATES,
    Capabilities,
    LoadedModel,
    LoadOutcome,
    LoadRequest,
    ModelInfo,
    Provider,
)
from tests.emulator import EmulatedModel
from tests.fakes import llamaswap, lmstudio, omlx, openai, production_stack, vllm
from tests.fakes.llamacpp import FakeLlamaRouter
from tests.helpers import wait_for
from tests.loopback import unused_port
from tests.realserver import router as real_router

README = Path(__file__).resolve().parent.parent / "README.md"
# How long a server may take to release an unloaded model (they answer first and free it later).
UNLOAD_WAIT_S = 15.0


@dataclass(frozen=True)
class Served:
    """A provider talking to a running fake (or real) server, and a model that server has."""

    provider: Provider
    model: str


Start = Callable[[pytest.FixtureRequest, contextlib.ExitStack], Served]


def _over(fake_transport: httpx.BaseTransport, kind: str, url: str) -> Provider:
    """The registered provider of ``kind``, its HTTP sent to a fake instead of the network."""
    client = httpx.Client(base_url=url, transport=fake_transport)
    return create_provider(Endpoint(name=kind, kind=kind, url=url), client=client)


def _ollama(request: pytest.FixtureRequest, stack: contextlib.ExitStack) -> Served:
    start_emulator = request.getfixturevalue("ollama_emulator")
    emulator = start_emulator(models=[EmulatedModel("qwen3:4b", file_mib=8)], gpu_vram_mib=64, unload_delay_s=0.05)
    return Served(create_provider(Endpoint(name="ollama", kind="ollama", url=emulator.url)), "qwen3:4b")


def _llamacpp(request: pytest.FixtureRequest, stack: contextlib.ExitStack) -> Served:
    binary = real_router.find_binary()
    if binary is None or importlib.util.find_spec("gguf") is None:
        return Served(_over(FakeLlamaRouter().transport(), "llamacpp", "http://router.test:8080"), "tiny-a")
    from tests.realserver.make_gguf import PRESETS, write_model

    tmp_path: Path = request.getfixturevalue("tmp_path")
    models = tmp_path / "models"
    models.mkdir()
    write_model(models / "tiny-a.gguf", PRESETS["tiny"], seed=0)
    server = stack.enter_context(
        real_router.llama_server(
            binary, tmp_path, "--models-dir", str(models), "--models-max", "2", "--no-models-autoload"
        )
    )
    return Served(create_provider(Endpoint(name="llamacpp", kind="llamacpp", url=server.url)), "tiny-a")


def _lmstudio(request: pytest.FixtureRequest, stack: contextlib.ExitStack) -> Served:
    return Served(_over(lmstudio.FakeLMStudio().transport(), "lmstudio", "http://studio.test:1234"), lmstudio.QWEN)


def _vllm(request: pytest.FixtureRequest, stack: contextlib.ExitStack) -> Served:
    return Served(_over(vllm.FakeVLLM().transport(), "vllm", "http://gpu.test:8000"), vllm.QWEN)


def _llamaswap(request: pytest.FixtureRequest, stack: contextlib.ExitStack) -> Served:
    fake = llamaswap.FakeLlamaSwap()
    return Served(_over(fake.transport(), "llamaswap", "http://swap.test:8080"), llamaswap.QWEN)


def _omlx(request: pytest.FixtureRequest, stack: contextlib.ExitStack) -> Served:
    return Served(_over(omlx.FakeOMLX().transport(), "omlx", "http://mac.test:8000"), omlx.QWEN)


def _openai(request: pytest.FixtureRequest, stack: contextlib.ExitStack) -> Served:
    return Served(_over(httpx.MockTransport(openai.listing), "openai", "https://api.cloud.test/v1"), "gpt-4.1")


def _production_stack(request: pytest.FixtureRequest, stack: contextlib.ExitStack) -> Served:
    router = production_stack.FakeRouter()
    return Served(_over(router.transport(), "production-stack", "http://router.test:30080"), production_stack.QWEN)


FAKES: dict[str, Start] = {
    "ollama": _ollama,
    "llamacpp": _llamacpp,
    "lmstudio": _lmstudio,
    "vllm": _vllm,
    "llamaswap": _llamaswap,
    "omlx": _omlx,
    "openai": _openai,
    "production-stack": _production_stack,
}


@pytest.fixture(params=registered_kinds())
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """Each registered kind's provider, created by the registry, against its running fake."""
    kind: str = request.param
    start = FAKES.get(kind)
    if start is None:
        pytest.fail(f"provider kind {kind!r} has no fake: add one to FAKES in {Path(__file__).name}")
    with contextlib.ExitStack() as stack:
        running = start(request, stack)
        stack.callback(running.provider.close)  # before the server stops: callbacks run last in, first out
        assert running.provider.kind == kind
        yield running


def resident(provider: Provider) -> list[str]:
    """What holds memory now (a parked or sleeping model is listed but frees its share)."""
    return [model.name for model in provider.list_loaded() if model.occupies_memory]


def documented_model_keys() -> set[str]:
    """The keys of a model in the README's ``status --json`` example."""
    section = README.read_text(encoding="utf-8").split("### `status --json`", 1)[1]
    match = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert match, "README: the status --json section lost its example"
    [model] = json.loads(match.group(1))["endpoints"][0]["models"]
    return set(model)


# -- the contract ------------------------------------------------------------------------------------


def test_every_registered_kind_has_a_fake() -> None:
    assert sorted(set(registered_kinds()) - set(FAKES)) == []


def test_capabilities_are_a_record(served: Served) -> None:
    assert isinstance(served.provider.capabilities, Capabilities)


def test_describe_of_an_unknown_name_is_model_not_found(served: Served) -> None:
    with pytest.raises(ModelNotFound) as caught:
        served.provider.describe("no-such-model-anywhere")
    assert caught.value.exit_code == ExitCode.MODEL_NOT_FOUND and int(ExitCode.MODEL_NOT_FOUND) == 3
    assert "no-such-model-anywhere" in str(caught.value) and "\n" not in str(caught.value)


def test_the_available_models_include_one_describe_accepts(served: Served) -> None:
    available = served.provider.list_available()
    assert all(isinstance(info, ModelInfo) for info in available)
    assert served.model in [info.name for info in available]
    assert served.provider.describe(served.model).name == served.model


def test_load_and_unload_do_what_the_capabilities_say(served: Served) -> None:
    provider, model = served.provider, served.model
    capabilities = provider.capabilities
    if capabilities.always_ready:
        # Nothing is ever resident: loads are no-ops and no budget is used.
        assert provider.list_loaded() == []
        outcome = provider.load(LoadRequest(model))
        assert isinstance(outcome, LoadOutcome) and outcome.name == model
        assert provider.list_loaded() == []
        return
    assert capabilities.can_load, "a server that is not always ready must be able to load"
    outcome = provider.load(LoadRequest(model))
    assert isinstance(outcome, LoadOutcome) and outcome.name == model
    assert model in resident(provider)  # load returns only once the server has it
    assert capabilities.can_unload
    provider.unload(model)
    wait_for(lambda: model not in resident(provider), timeout=UNLOAD_WAIT_S, what=f"{model} to be unloaded")


def test_loaded_models_have_the_documented_status_keys(served: Served) -> None:
    provider = served.provider
    if provider.capabilities.can_load and not provider.capabilities.always_ready:
        provider.load(LoadRequest(served.model))
    loaded = provider.list_loaded()
    assert all(isinstance(model, LoadedModel) for model in loaded)
    if not provider.capabilities.always_ready:
        assert served.model in [model.name for model in loaded]
    # always_available comes from this tool's config, added by `status`, not by the server's record.
    expected = documented_model_keys() - {"always_available"}
    assert expected == {
        "name", "size", "size_vram", "vram_percent", "processor", "context_length", "expires_at", "until",
        "pinned", "state", "digest",
    }  # fmt: skip
    for model in loaded:
        record = model.to_dict()
        assert expected <= set(record), sorted(expected - set(record))
        assert record["name"] == model.name and record["state"] in MODEL_STATES


@pytest.mark.parametrize("kind", registered_kinds())
def test_a_server_that_is_down_is_unreachable_in_one_line(kind: str) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    provider = create_provider(Endpoint(name="down", kind=kind, url=url))
    try:
        with pytest.raises(ServerUnreachable) as caught:
            provider.list_available()
    finally:
        provider.close()
    assert caught.value.exit_code == ExitCode.SERVER_UNREACHABLE and int(ExitCode.SERVER_UNREACHABLE) == 4
    # One line: what failed, where, and the next step.
    message = str(caught.value)
    assert message.startswith("cannot reach ") and f" at {url} (endpoint 'down')" in message, message
    assert "\n" not in message


def test_close_releases_the_connection(served: Served) -> None:
    served.provider.list_available()
    served.provider.close()  # and once more at teardown: closing twice is harmless
