"""Ollama emulator: test infrastructure, not product code.

An in-process stand-in for an Ollama v0.32/0.33 server, following the behaviour contract
ollama.md (sections cited beside each rule in the code): a real on-disk model store with
GGUF blobs, the native HTTP API on a loopback port, and a scheduler with runners, a load
queue, eviction, keep-alive timers and asynchronous unloads. Tests drive it over HTTP and
inspect or perturb it through ``OllamaEmulator`` and ``Faults``.
"""

from .scheduler import Faults, RunnerView
from .server import OllamaEmulator, RecordedRequest
from .store import EmulatedModel

__all__ = ["EmulatedModel", "Faults", "OllamaEmulator", "RecordedRequest", "RunnerView"]
