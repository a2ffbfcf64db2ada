"""The two runtimes the memory formula knows (Ollama's runner, a llama-server router child), in their own
module: sizing's records default to one, and `status` starts faster without the whole ``formula``."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Runtime:
    """What differs between the programs that allocate a GGUF model's memory."""

    spare_layer: bool  # Ollama keeps one layer's weights and KV free beside the model
    flash_attention: bool  # the compute graph never holds the whole attention matrix
    process_bytes: int  # the model's own server process (binary, libraries), when it gets one


OLLAMA = Runtime(spare_layer=True, flash_attention=False, process_bytes=0)
# A router child: llama-server's RSS with a 0.6 MB model loaded is 17-18 MB, of which the model,
# its KV cache and the touched part of the compute buffer are under 2 MB.
LLAMA_SERVER = Runtime(spare_layer=False, flash_attention=True, process_bytes=16 * MIB)
