"""Predicted against real memory of each model on a real llama-server router, for the generated tiny,
50 MB and 500 MB models, at the router's context 512 and 2048.

predicted  = what `sourceprep-models load` plans with before the first load: the GGUF header the
             router lists (status.args --model) through the memory formula at the router's context
             (nothing remembered from an earlier load)
rss load   = the child llama-server process's resident memory right after the load (psutil)
rss used   = the same after one completion whose prompt fills a batch (the compute buffer touched)
ratio      = predicted / rss used

Needs the llama-server binary (scripts/install-llama-server) and the gguf package.
    .venv/bin/python -m benchmarks.llamacpp_sizes
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
import psutil

from benchmarks._common import real_server_workdir
from sourceprep_models.config.schema import Endpoint
from sourceprep_models.memory.sizing import SizeBook, predict
from sourceprep_models.providers.base import LoadRequest
from sourceprep_models.providers.llamacpp import LlamaCppProvider
from tests.realserver.make_gguf import PRESETS, write_model
from tests.realserver.router import LlamaServer, llama_server

# About 400 tokens: the generated vocabulary has every word below as one piece.
PROMPT = "hello world the model memory " * 80
MB = 1_000_000


def child_rss(server: LlamaServer) -> int:
    """The one child process the router runs (--models-max 1), read from the process table."""
    children = psutil.Process(server.process.pid).children()
    if len(children) != 1:
        raise SystemExit(f"expected one child llama-server, found {len(children)}")
    return children[0].memory_info().rss


def measure(server: LlamaServer, provider: LlamaCppProvider, name: str, book: SizeBook) -> tuple[int, str, int, int]:
    info = provider.describe(name)
    header = lambda: provider.gguf_metadata(name)  # noqa: E731 - the lazy header read Session.predict passes
    prediction = predict(info.identity, info.size, info.trained_context, None, {}, book, header, info.runner)
    provider.load(LoadRequest(name=name))
    after_load = child_rss(server)
    reply = httpx.post(
        f"{server.url}/v1/completions", json={"model": name, "prompt": PROMPT, "max_tokens": 8}, timeout=120
    )
    reply.raise_for_status()
    in_use = child_rss(server)
    provider.unload(name)
    while server.state(name) != "unloaded":
        time.sleep(0.01)
    return prediction.bytes, f"{prediction.source} @ {prediction.num_ctx}", after_load, in_use


def main() -> None:
    with real_server_workdir("llamacpp-sizes-") as (binary, work), tempfile.TemporaryDirectory() as empty:
        models = work / "models"
        files = [write_model(models / f"m{preset}.gguf", PRESETS[preset]) for preset in ("tiny", "50M", "500M")]
        book = SizeBook(Path(empty) / "sizes.json")  # never written: every row is a first prediction
        print(
            f"{'model':8} {'file MB':>9} {'ctx':>5} {'predicted MB':>13} {'rss load MB':>12} {'rss used MB':>12}",
            end="",
        )
        print("  ratio")
        for context in ("512", "2048"):
            with llama_server(
                binary, work, "--models-dir", str(models), "--models-max", "1", "--no-models-autoload", "-c", context
            ) as server:
                provider = LlamaCppProvider(Endpoint(name="bench", kind="llamacpp", url=server.url))
                for path in files:
                    predicted, source, after_load, in_use = measure(server, provider, path.stem, book)
                    print(
                        f"{path.stem:8} {path.stat().st_size / MB:9.1f} {context:>5} {predicted / MB:13.1f} "
                        f"{after_load / MB:12.1f} {in_use / MB:12.1f}  {predicted / in_use:.3f}  ({source})"
                    )
                provider.close()


if __name__ == "__main__":
    main()
