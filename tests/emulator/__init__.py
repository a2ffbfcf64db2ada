"""Ollama emulator: test infrastructure, not product code.

An in-process stand-in for an Ollama server, following the behaviour contract ollama.md
(sections cited beside each rule in the code) and, where that was checked against Ollama's
source, the source itself (file and function cited): a real on-disk model store with GGUF
blobs, the native HTTP API on a loopback port, and a scheduler with runners, a load queue,
eviction, keep-alive timers and asynchronous unloads. Tests drive it over HTTP (the official
``ollama`` Python client included, tests/test_ollama_client.py) and inspect or perturb it
through ``OllamaEmulator`` and ``Faults``.

Version followed: Ollama v0.33.0-rc2 (commit fb30760, 2026-08-21); server/sched.go,
server/routes.go, api/types.go, envconfig/config.go, llm/status.go and llm/llama_server.go
are byte-identical in v0.32.15. Not checked against 0.34: no 0.34 source was at hand (the
newest tag seen was v0.33.0-rc2), so nothing here follows a 0.34 change.

Left out on purpose (Ollama's rule, then why):

- GPU libraries: on CUDA without flash attention the automatic batch is 512 or 256
  (sched.go automaticGenerationBatch); the emulated GPU has no library, so the flash-attention
  path applies. Likewise multi-GPU placement, OLLAMA_SCHED_SPREAD, OLLAMA_GPU_OVERHEAD and the
  integrated-GPU cap by free RAM (selectLlamaServerPlacement): one GPU, one VRAM figure.
- Embedding models get an explicit batch derived from their context (routes.go
  shouldApplyEmbeddingBatchDefault): treated as automatic, which compares the same way as
  long as the context does not change.
- use_mmap defaults other than CPU-only: Windows+CUDA, Metal partial offload and Linux host
  memory pressure (sched.go disableMmapDefaultReason, maybeDisableMmapForHostPressure) need an
  OS and a RAM figure the emulator does not have.
- The VRAM settle wait after an unload (sched.go waitForVRAMRecovery, up to 5 s on discrete
  GPUs) is part of ``unload_delay_s``; /api/ps waits for all of it, Ollama only for the process
  exit.
- The loader waits for every expiring runner to go before deciding; Ollama decides on its
  accounting at once and may pick that runner as its victim. Same end state, one wait more.
- Adapters, projectors and per-model context-shift support (needsReload, resolveContextShift):
  emulated models have none; ``shift`` is the request's, default true. Vision models' 2048
  minimum context and MLX runners: no such models.
- A float keep_alive beyond int64 nanoseconds follows amd64 (the minimum int64: expire when
  idle); on arm64 Go saturates to the maximum, i.e. forever.
- Ties in /api/ps: Go iterates a map (random order); the emulator alternates orders between
  calls (Scheduler.ps_views) so that reliance on it fails deterministically.
- Recoverable out-of-memory ("retrying without pipeline parallelism", llm/status.go) and
  llm.ErrLoadRequiredFull: llama-server behaviours no fault switch produces.
"""

from .scheduler import Faults, RunnerView
from .server import OllamaEmulator, RecordedRequest
from .store import EmulatedModel

__all__ = ["EmulatedModel", "Faults", "OllamaEmulator", "RecordedRequest", "RunnerView"]
