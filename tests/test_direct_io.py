"""Servers that read weights with direct I/O, bypassing the page cache: no warming there, and doctor says so.

llama-server's ``-lm/--load-mode dio`` (llama.cpp common/arg.cpp, ``common_params_parser_init``) and Ollama
on Linux with an integrated CUDA/ROCm GPU (ollama llm/llama_server.go, ``appendLoadModeArgs``) read the
weights with O_DIRECT: warming the page cache before such a load only spends disk reads and RAM. The end to
end tests start a REAL llama-server router (``tests/realserver``) and judge from outside: the warm step's
own words, and the page-cache residency of the GGUF (mincore) after the tool ran.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sourceprep_models import hardware
from sourceprep_models.cli import doctor as doctor_cmd
from sourceprep_models.doctor.system import LocalSystem
from sourceprep_models.providers.load_mode import direct_io_flag, load_mode
from sourceprep_models.providers.ollama.direct_io import direct_io_reason
from sourceprep_models.warming import pagecache
from tests.conftest import CliFn
from tests.emulator import EmulatedModel
from tests.loopback import Reply, Request, serve
from tests.realserver.make_gguf import Shape, write_model
from tests.realserver.router import LlamaServer, llama_server, require_binary
from tests.test_hardware import FakeSystem, fake_nvml

GiB = 1 << 30

# -- llama-server's arguments (status.args / status.preset of GET /models) -----------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "a.gguf", "--load-mode", "dio"],
        ["--model", "a.gguf", "-lm", "dio"],
        ["--load-mode=dio", "--model", "a.gguf"],
        ["--load-mode", "DIO"],
        ["-dio"],  # deprecated spellings of the same mode (arg.cpp: "DEPRECATED in favor of `--load-mode`")
        ["--direct-io"],
        ["--load-mode", "mmap", "--direct-io"],  # the last mode-setting flag wins
    ],
)
def test_arguments_that_read_with_direct_io(args: list[str]) -> None:
    assert load_mode(args) == "dio"
    assert direct_io_flag(args) == "--load-mode dio"


@pytest.mark.parametrize(
    ("args", "mode"),
    [
        (["--model", "a.gguf"], None),  # llama-server's default (auto: mmap) reads through the cache
        (["--load-mode", "mmap"], "mmap"),
        (["--load-mode", "none"], "none"),
        (["--load-mode", "mmap+mlock"], "mmap+mlock"),
        (["--no-mmap"], "none"),  # plain reads: still through the page cache, not direct I/O
        (["--mmap"], "mmap"),
        (["--mlock"], "mlock"),
        (["--load-mode", "dio", "--no-mmap"], "none"),  # a later deprecated flag overrides the mode
        (["--load-mode", "dio", "-ndio"], "none"),
        (["--load-mode", "dio", "--no-direct-io"], "none"),
        (["--alias", "--load-mode"], None),  # a flag with no value after it sets nothing
    ],
)
def test_arguments_that_read_through_the_page_cache(args: list[str], mode: str | None) -> None:
    assert load_mode(args) == mode
    assert direct_io_flag(args) is None


def test_the_preset_is_read_only_when_the_router_lists_no_arguments() -> None:
    preset = "[tiny]\nctx-size = 512\nload-mode = dio\nmodel = /m/tiny.gguf\n"
    assert direct_io_flag([], preset) == "--load-mode dio"
    assert direct_io_flag([], "[tiny]\ndirect-io = true\n") == "--load-mode dio"
    assert direct_io_flag([], "[tiny]\nload-mode = mmap\n") is None
    # The arguments are what the child really gets: they win over the preset text.
    assert direct_io_flag(["--model", "/m/tiny.gguf"], preset) is None


# -- Ollama: hardware and version (llm/llama_server.go, appendLoadModeArgs) -----------------------------------


def _hardware(os_name: str = "linux", **gpu: object) -> dict[str, object]:
    gpus = [{"index": 0, "name": "NVIDIA GB10", "vendor": "nvidia", "unified": True, **gpu}]
    return {"os": os_name, "gpus": gpus}


@pytest.mark.parametrize(
    ("version", "flag"),
    [
        ("0.32.2", "--direct-io"),
        ("0.32.5", "--direct-io"),
        ("0.32.6", "--load-mode dio"),
        ("v0.34.1", "--load-mode dio"),
    ],
)
def test_ollama_on_linux_with_an_integrated_cuda_gpu_reads_with_direct_io(version: str, flag: str) -> None:
    reason = direct_io_reason(version, _hardware())
    assert reason == f"Ollama {version} starts its runner with {flag} on Linux with an integrated GPU (NVIDIA GB10)"


def test_ollama_on_an_amd_apu_reads_with_direct_io() -> None:
    assert direct_io_reason("0.33.0", _hardware(vendor="amd", name="AMD Radeon 8060S")) is not None


@pytest.mark.parametrize(
    ("version", "hardware"),
    [
        ("0.32.1", _hardware()),  # before commit 72116bafb (#17286)
        (None, _hardware()),  # unknown version: no claim
        ("unknown", _hardware()),
        ("0.33.0", _hardware(unified=False)),  # a discrete CUDA card
        ("0.33.0", _hardware("darwin", vendor="apple", name="Apple M3")),  # integrated Metal: not CUDA/ROCm
        ("0.33.0", _hardware("windows")),  # Linux only (runtime.GOOS == "linux")
        ("0.33.0", {"os": "linux", "gpus": []}),  # no GPU at all
    ],
)
def test_ollama_reads_through_the_page_cache_otherwise(version: str | None, hardware: dict[str, object]) -> None:
    assert direct_io_reason(version, hardware) is None


# -- a REAL llama-server router ----------------------------------------------------------------------------------

realserver = pytest.mark.realserver
# About 8 MB: big enough that reading the GGUF header (for the memory estimate), with the kernel's readahead,
# brings only a small part of the file into the page cache, so a warm read is told apart from a header read.
SHAPE = Shape(n_embd=256, n_layer=2, n_head=4, n_head_kv=4, n_ff=1024)


@pytest.fixture(scope="module")
def binary() -> Path:
    return require_binary()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    pytest.importorskip("gguf", reason="the model generator needs the gguf package (pip install gguf)")
    folder = tmp_path / "models"
    folder.mkdir()
    for index, name in enumerate(("tiny-a", "tiny-b")):
        write_model(folder / f"{name}.gguf", SHAPE, seed=index)
    return folder


StartRouter = Callable[..., LlamaServer]


@pytest.fixture
def start_router(binary: Path, models_dir: Path, tmp_path: Path) -> Iterator[StartRouter]:
    """Start routers on demand; all are stopped by PID when the test ends."""
    with contextlib.ExitStack() as stack:

        def start(*extra: str) -> LlamaServer:
            router = llama_server(
                binary, tmp_path, "--models-dir", str(models_dir), "--models-max", "2", "--no-models-autoload", *extra
            )
            return stack.enter_context(router)

        yield start


def _config(write_config: Callable[[str], Path], url: str) -> str:
    models = "".join(f'[models.{name}]\nendpoint = "llama"\nname = "{name}"\n' for name in ("tiny-a", "tiny-b"))
    return str(write_config(f'[endpoints.llama]\nkind = "llamacpp"\nurl = "{url}"\n{models}'))


def _cold(path: Path) -> Path:
    """``path`` evicted from the page cache (the way tests/test_pagecache.py does), or a skip saying why not."""
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise on this platform: cannot evict a file without root")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    fraction = pagecache.residency(path).fraction
    if fraction is None or fraction > 0.1:
        pytest.skip(f"{path.parent} keeps its pages (tmpfs?) or residency is unknown: cannot start cold")
    return path


@contextlib.contextmanager
def _watching_loads(router: LlamaServer, models_dir: Path) -> Iterator[tuple[str, dict[str, float | None]]]:
    """A loopback relay in front of ``router`` that notes, by model, how much of its GGUF is in the page cache
    at the moment its ``POST /models/load`` arrives: what the tool read before it handed the load to the server
    (the server's own reading comes after, and is the server's business)."""
    seen: dict[str, float | None] = {}

    def handle(request: Request) -> Reply:
        if request.path.startswith("/models/sse"):
            # The relay answers one whole reply at a time and cannot pass an event stream on: it answers as a
            # router built before the stream does, and the tool polls the listing instead.
            return 404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}
        if request.method == "POST" and request.path == "/models/load":
            model = request.body["model"]
            seen[model] = pagecache.residency(models_dir / f"{model}.gguf").fraction
        reply = httpx.request(request.method, router.url + request.path, json=request.body, timeout=60)
        return reply.status_code, reply.json() if reply.content else None

    with serve(handle) as url:
        yield url, seen


def _warm_step(report: dict[str, object]) -> dict[str, object]:
    steps = report["steps"]
    assert isinstance(steps, list)
    [step] = [step for step in steps if step["step"] == "warm"]
    assert isinstance(step, dict)
    return step


@realserver
def test_doctor_names_direct_io_for_a_router_started_with_load_mode_dio(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router("-lm", "dio")

    result = cli("--config", _config(write_config, server.url), "doctor", "--json")

    checks = {check["id"]: check for check in result.json()["checks"]}
    check = checks["endpoint.llama.direct_io"]
    assert check["status"] == "ok"
    assert check["summary"] == (
        "direct I/O: llama reads tiny-a, tiny-b (--load-mode dio) bypassing the page cache, so warming is skipped "
        "there (load, bench, pipeline prefetch)"
    )
    assert check["details"]["models"] == ["tiny-a", "tiny-b"]
    table = cli("--config", _config(write_config, server.url), "doctor")
    assert "direct I/O: llama reads tiny-a, tiny-b (--load-mode dio)" in table.stdout


@realserver
def test_doctor_says_nothing_of_direct_io_for_an_ordinary_router(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router()

    result = cli("--config", _config(write_config, server.url), "doctor", "--json")

    ids = [check["id"] for check in result.json()["checks"]]
    assert "endpoint.llama.present" in ids or any(i.startswith("model.") for i in ids)
    assert "endpoint.llama.direct_io" not in ids


@realserver
def test_load_on_a_direct_io_router_reads_nothing_into_the_page_cache(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path], models_dir: Path
) -> None:
    server = start_router("--load-mode", "dio")
    _cold(models_dir / "tiny-a.gguf")
    _cold(models_dir / "tiny-b.gguf")

    with _watching_loads(server, models_dir) as (url, seen):
        path = _config(write_config, url)
        # The yardstick: what reading the header alone (for the memory estimate) leaves in the cache, kernel
        # readahead included, for a file of the same size and layout loaded with warming turned off.
        control = cli("--config", path, "load", "tiny-b", "--no-warm", "--json")
        result = cli("--config", path, "load", "tiny-a", "--json")

    assert control.exit_code == 0, control.stderr
    assert result.exit_code == 0, result.stderr
    step = _warm_step(result.json())
    assert step["detail"] == "skipped: direct I/O (--load-mode dio): the server bypasses the page cache"
    assert step["wall_s"] == 0
    assert server.state("tiny-a") == "loaded"
    header_only, before_load = seen["tiny-b"], seen["tiny-a"]
    assert header_only is not None and before_load is not None
    if header_only >= pagecache_warm_fraction():
        pytest.skip(f"reading the header alone cached {header_only:.0%} (readahead): residency cannot show a warm read")
    assert before_load < pagecache_warm_fraction(), f"{before_load:.0%} of the GGUF was in the page cache"
    assert cli("--config", _config(write_config, server.url), "unload", "tiny-b").exit_code == 0
    table = cli("--config", _config(write_config, server.url), "load", "tiny-b")  # the table shows the same step
    assert table.exit_code == 0, table.stderr
    assert "skipped: direct I/O (--load-mode dio)" in table.stdout


@realserver
def test_a_router_given_direct_io_through_its_environment_is_recognised(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # LLAMA_ARG_LOAD_MODE is the option's environment variable (arg.cpp set_env): the router lists it in no
    # model's arguments, yet every child inherits it.
    monkeypatch.setenv("LLAMA_ARG_LOAD_MODE", "dio")
    server = start_router()
    listed = httpx.get(f"{server.url}/models", timeout=10).json()["data"]
    assert not any("dio" in " ".join(item["status"].get("args") or ()) for item in listed)

    result = cli("--config", _config(write_config, server.url), "load", "tiny-a", "--json")

    assert result.exit_code == 0, result.stderr
    step = _warm_step(result.json())
    assert step["detail"] == "skipped: direct I/O (LLAMA_ARG_LOAD_MODE=dio): the server bypasses the page cache"
    assert server.state("tiny-a") == "loaded"
    doctor = cli("--config", _config(write_config, server.url), "doctor", "--json")
    checks = {check["id"]: check for check in doctor.json()["checks"]}
    assert "(LLAMA_ARG_LOAD_MODE=dio)" in checks["endpoint.llama.direct_io"]["summary"]


@realserver
def test_load_on_an_ordinary_router_still_warms(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path], models_dir: Path
) -> None:
    server = start_router()
    _cold(models_dir / "tiny-a.gguf")

    with _watching_loads(server, models_dir) as (url, seen):
        result = cli("--config", _config(write_config, url), "load", "tiny-a", "--json")

    assert result.exit_code == 0, result.stderr
    detail = str(_warm_step(result.json())["detail"])
    assert detail.startswith("read ") and "→ 100% resident" in detail
    assert server.state("tiny-a") == "loaded"
    fraction = seen["tiny-a"]  # warmed by the tool before the load request went out
    assert fraction is not None and fraction >= pagecache_warm_fraction()


def pagecache_warm_fraction() -> float:
    """The share of a file in the page cache from which the tool calls it warm (and a warm read reaches)."""
    return 0.9


@realserver
def test_a_pipeline_on_a_direct_io_router_neither_prefetches_nor_warms(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path], models_dir: Path
) -> None:
    server = start_router("--load-mode", "dio")
    _cold(models_dir / "tiny-a.gguf")
    _cold(models_dir / "tiny-b.gguf")
    stages = (
        '[pipelines.p]\nstages = [\n  { name = "one", model = "tiny-a", command = "true" },\n'
        '  { name = "two", model = "tiny-b", command = "true" },\n]\n'
    )

    with _watching_loads(server, models_dir) as (url, seen):
        path = str(write_config(Path(_config(write_config, url)).read_text() + stages))
        # Without overlap stage two's model is what a prefetch would warm during stage one.
        result = cli("--config", path, "run-pipeline", "p", "--json", "--no-overlap")

    assert result.exit_code == 0, result.stderr
    one, two = result.json()["stages"]
    assert (one["action"], two["action"]) == ("load", "load")
    assert two["prefetched"] is False
    assert server.loaded() >= {"tiny-b"}
    for model, fraction in seen.items():  # nothing read either file into the cache before its load request
        assert fraction is not None and fraction < pagecache_warm_fraction(), f"{model}: {fraction:.0%} cached"


@realserver
def test_bench_on_a_direct_io_router_says_the_page_cache_plays_no_part(
    cli: CliFn, start_router: StartRouter, write_config: Callable[[str], Path]
) -> None:
    server = start_router("-lm", "dio")

    result = cli("--config", _config(write_config, server.url), "bench", "tiny-a", "--json")

    assert result.exit_code == 0, result.stderr
    [row] = result.json()["models"]
    assert row["cache"] == "direct I/O"
    assert row["note"] == "--load-mode dio: the server bypasses the page cache, so every load reads the disk"
    table = cli("--config", _config(write_config, server.url), "bench", "tiny-a")
    assert "tiny-a: direct I/O: --load-mode dio: the server bypasses the page cache" in table.stderr


# -- Ollama on a GB10 (the emulator, a recorded DGX Spark probe) -----------------------------------------------


def _spark() -> FakeSystem:
    """A DGX Spark as the probe sees it: Linux on aarch64, one NVIDIA GB10 that reports no memory of its own."""
    return FakeSystem(machine="aarch64", memory=(128 * GiB, 120 * GiB), nvml=fake_nvml([("NVIDIA GB10", None, None)]))


@pytest.fixture
def spark_with_ollama(ollama_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    """Ollama ``version`` (the emulator) on a recorded DGX Spark; ``doctor`` and the other commands probe it.

    The blob is 48 MiB so that reading its header (kernel readahead included) leaves it cold enough to warm."""

    def start(version: str) -> Any:
        emulator = ollama_emulator(models=[EmulatedModel("small:1b", file_mib=48)], gpu_vram_mib=None, version=version)
        monkeypatch.setenv("OLLAMA_HOST", emulator.url)
        original = hardware.probe
        monkeypatch.setattr(hardware, "probe", lambda system=None: original(_spark()))
        monkeypatch.setattr(
            doctor_cmd, "make_system", lambda app: LocalSystem(app.environ, probe_system=_spark(), timeout_s=5.0)
        )
        return emulator

    return start


def test_ollama_on_a_spark_loads_without_warming_and_doctor_says_why(
    cli: CliFn, spark_with_ollama: Callable[[str], Any]
) -> None:
    emu = spark_with_ollama("0.33.0")
    _cold(emu.blob_path("small:1b"))

    result = cli("load", "small:1b", "--json")
    doctor = cli("doctor", "--json")

    assert result.exit_code == 0, result.stderr
    reason = "Ollama 0.33.0 starts its runner with --load-mode dio on Linux with an integrated GPU (NVIDIA GB10)"
    assert _warm_step(result.json())["detail"] == f"skipped: direct I/O ({reason}): the server bypasses the page cache"
    assert "small:1b" in emu.loaded_names()
    checks = {check["id"]: check for check in doctor.json()["checks"]}
    assert checks["endpoint.ollama.direct_io"]["details"]["reasons"] == {"small:1b": reason}


def test_ollama_before_0_32_2_on_a_spark_still_warms(cli: CliFn, spark_with_ollama: Callable[[str], Any]) -> None:
    emu = spark_with_ollama("0.32.1")
    _cold(emu.blob_path("small:1b"))

    result = cli("load", "small:1b", "--json")
    doctor = cli("doctor", "--json")

    assert result.exit_code == 0, result.stderr
    assert str(_warm_step(result.json())["detail"]).startswith("read ")
    assert "endpoint.ollama.direct_io" not in {check["id"] for check in doctor.json()["checks"]}
