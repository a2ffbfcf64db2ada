"""How much memory a GGUF model needs once loaded: the classic Ollama formula (hardware.md §4.3).

``estimate`` adds reserve + spare layer + weights on the GPU + KV cache + compute graph, as
Ollama's ``llm/memory.go`` did up to v0.12.10, and ``coarse_preflight`` is the file-size guess
current Ollama makes before it starts llama-server (ollama.md §4.4).

Deliberate differences from Ollama's own estimator, each because it is closer to what llama.cpp
really allocates:

- a quantized KV cache costs the real ggml block size (q8_0 = 34/32 bytes per element, not 1);
- a missing ``head_count_kv`` means "same as ``head_count``" (llama.cpp's rule), not 1;
- sliding-window layers of the architectures in ``_SLIDING_WINDOW_PATTERN`` cache only
  ``min(window x parallel + batch, ctx)`` cells, not only for gemma3;
- ``OLLAMA_GPU_OVERHEAD`` is part of the total (Ollama only used it in its fit checks).

The same parts size a model on llama.cpp's own ``llama-server`` (``runtime=LLAMA_SERVER``): there is
no spare layer (that is Ollama's scheduler), flash attention is on by default (``--flash-attn auto``),
so the compute buffer hardly grows with the context, and every model runs in a child process of its
own, whose binary, libraries and runtime cost about 16 MiB of resident memory on a CPU build
(measured with ``benchmarks/llamacpp_sizes.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from sourceprep_models.memory.runtime import LLAMA_SERVER, OLLAMA, Runtime

if TYPE_CHECKING:  # only annotations: status and the planner size nothing from a GGUF file
    from sourceprep_models.memory.gguf import GGUFMetadata

__all__ = [
    "BACKENDS",
    "KV_CACHE_TYPES",
    "LLAMA_SERVER",
    "OLLAMA",
    "Estimate",
    "Runtime",
    "coarse_preflight",
    "estimate",
    "graph_sizes",
    "kv_cache_bytes",
]

MIB = 1024 * 1024

# KV cache element cost as an exact fraction (numerator, denominator) of bytes per element.
# Quantized caches pay for the block scale too: q8_0 is 34 bytes per 32 elements (hardware.md §4.3).
KV_CACHE_TYPES: dict[str, tuple[int, int]] = {
    "f32": (4, 1),
    "f16": (2, 1),
    "bf16": (2, 1),
    "q8_0": (34, 32),
    "q5_1": (24, 32),
    "q5_0": (22, 32),
    "q4_1": (20, 32),
    "iq4_nl": (18, 32),
    "q4_0": (18, 32),
}

# Memory the runtime keeps per GPU before any model buffer: Ollama's MinimumMemory (hardware.md §4.3).
_RESERVE = {"cuda": 457 * MIB, "rocm": 457 * MIB, "metal": 512 * MIB, "cpu": 0}
BACKENDS = tuple(_RESERVE)

# Architectures whose sliding-window layers follow a fixed pattern: every n-th layer (the last of
# each group of n) attends to the whole context and the others only to the window. These are the
# patterns llama.cpp hard-codes; for any other architecture every layer is treated as global,
# which can only overestimate.
_SLIDING_WINDOW_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "gpt-oss": 2, "gptoss": 2}

# Architectures whose compute graph uses the llama constants of Ollama's GraphSize.
_LLAMA_GRAPH = frozenset({"llama", "llama4"})


@dataclass(frozen=True)
class Estimate:
    weights_bytes: int  # weights on the GPU (all of them on the CPU backend)
    kv_bytes: int
    graph_bytes: int  # compute buffer for a full offload
    reserve_bytes: int  # per-GPU runtime minimum, the user's OLLAMA_GPU_OVERHEAD and the server process
    spare_bytes: int  # one extra layer (weights + KV) that Ollama keeps free
    host_bytes: int  # parts that stay in system RAM (token_embd on a GPU backend)
    total_bytes: int  # what the model will occupy on the GPU / unified memory
    num_ctx: int  # effective context per sequence after capping at the trained context

    def to_dict(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


def _per_layer(value: int | tuple[int, ...], layers: int) -> list[int]:
    """A count per layer; a short array is padded with its largest entry (the cautious choice)."""
    if isinstance(value, int):
        return [value] * layers
    padding = max(value, default=0)
    return [*value[:layers], *[padding] * (layers - len(value))]


def _head_dims(meta: GGUFMetadata) -> tuple[int, int]:
    """(key, value) head dimensions; both default to embedding / query heads."""
    heads = [h for h in _per_layer(meta.head_count, max(meta.block_count, 1)) if h > 0]
    default = meta.embedding_length // min(heads) if heads else 0
    return meta.key_length or default, meta.value_length or default


def _sliding_layers(meta: GGUFMetadata) -> list[bool]:
    pattern = _SLIDING_WINDOW_PATTERN.get(meta.architecture)
    if not meta.sliding_window or pattern is None:
        return [False] * meta.block_count
    return [(layer + 1) % pattern != 0 for layer in range(meta.block_count)]


def _kv_cost(kv_cache_type: str) -> tuple[int, int]:
    cost = KV_CACHE_TYPES.get(kv_cache_type.lower())
    if cost is None:
        raise ValueError(f"unknown KV cache type {kv_cache_type!r} (known: {', '.join(KV_CACHE_TYPES)})")
    return cost


def kv_cache_bytes(
    meta: GGUFMetadata, ctx_total: int, kv_cache_type: str = "f16", *, parallel: int = 1, num_batch: int = 512
) -> int:
    """KV cache bytes for ``ctx_total`` cells across all sequences (hardware.md §4.3).

    Sum over attention layers of cells x (key_length + value_length) x KV heads x bytes per
    element. A layer with no KV heads (or no query heads) is recurrent: its f32 state is a few MiB
    and is not counted. Sliding-window layers hold ``min(window x parallel + batch, ctx_total)``.
    """
    numerator, denominator = _kv_cost(kv_cache_type)
    key_length, value_length = _head_dims(meta)
    heads = _per_layer(meta.head_count, meta.block_count)
    kv_heads = _per_layer(meta.head_count_kv, meta.block_count)
    window_cells = min((meta.sliding_window or 0) * parallel + min(ctx_total, num_batch), ctx_total)
    total = 0
    for query, kv, sliding in zip(heads, kv_heads, _sliding_layers(meta), strict=True):
        if query <= 0 or kv <= 0:
            continue
        cells = window_cells if sliding else ctx_total
        elements = cells * (key_length + value_length) * kv
        total += -(-elements * numerator // denominator)
    return total


def _feed_forward_length(meta: GGUFMetadata) -> int:
    """The FFN width from the first block's up projection; 4 x embedding when the table lacks it."""
    for tensor in meta.tensors:
        if tensor.name in ("blk.0.ffn_up.weight", "blk.0.ffn_gate.weight") and tensor.shape:
            return max(tensor.shape)
    return 4 * meta.embedding_length


def graph_sizes(
    meta: GGUFMetadata,
    ctx_total: int,
    *,
    num_batch: int = 512,
    parallel: int = 1,
    kv_cache_type: str = "f16",
    flash_attention: bool = False,
) -> tuple[int, int]:
    """(full, partial) compute-graph bytes: Ollama's ``GraphSize`` (hardware.md §4.3).

    ``full`` applies when every layer is on one GPU, ``partial`` when some run on the CPU. The
    llama family has its own constants (its Mixtral special cases are not reproduced); any other
    architecture gets the generic rule partial = (heads / KV heads) x KV / 6, full = partial.
    Without ``flash_attention`` long contexts are overestimated. With it (llama-server's default),
    one batch's activations dominate: about 3 FFN widths and 5 embeddings of f32 per token, or the
    logits, plus the f16 attention mask of batch x context (fitted to llama-server's logged
    "compute buffer size" at contexts 512 to 8192).
    """
    batch = min(ctx_total, num_batch)
    if flash_attention:
        per_token = max(
            3 * _feed_forward_length(meta) + 5 * meta.embedding_length, (meta.vocab_size or 0) + meta.embedding_length
        )
        graph = 4 * batch * per_token + 2 * batch * ctx_total
        return graph, graph
    if meta.architecture in _LLAMA_GRAPH:
        embd = meta.embedding_length
        heads = max(_per_layer(meta.head_count, max(meta.block_count, 1)))
        kv_heads = max(_per_layer(meta.head_count_kv, max(meta.block_count, 1)))
        vocab = meta.vocab_size or 0
        head_dim = embd // heads if heads else 0
        full = max(4 * batch * (1 + 4 * embd + ctx_total * (1 + heads)), 4 * batch * (embd + vocab))
        partial = 4 * batch * embd + max(
            4 * batch * (1 + embd + max(ctx_total, embd))
            + embd * embd * 9 // 16
            + 4 * ctx_total * (batch * heads + head_dim * kv_heads),
            4 * batch * (embd + vocab) + embd * vocab * 105 // 128,
        )
        return full, partial
    kv = kv_cache_bytes(meta, ctx_total, kv_cache_type, parallel=parallel, num_batch=num_batch)
    most_heads = max(_per_layer(meta.head_count, max(meta.block_count, 1)))
    attention_kv_heads = [h for h in _per_layer(meta.head_count_kv, max(meta.block_count, 1)) if h > 0]
    gqa = max(most_heads // min(attention_kv_heads), 1) if attention_kv_heads else 1
    generic = gqa * kv // 6
    return generic, generic


def _group(name: str) -> str:
    """Ollama's layer grouping: ``blk.N`` for block tensors, else the first name component."""
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) > 2:
        return f"blk.{parts[1]}"
    return parts[0]


@dataclass(frozen=True)
class _Weights:
    gpu: int  # weights that go to the GPU
    host: int  # token_embd, kept in system RAM by llama.cpp
    first_block: int  # blk.0, the size of Ollama's spare layer


def _weights(meta: GGUFMetadata, backend: str) -> _Weights:
    sizes: dict[str, int] = {}
    known = bool(meta.tensors)
    for tensor in meta.tensors:
        if tensor.n_bytes is None:
            known = False
            break
        group = _group(tensor.name)
        sizes[group] = sizes.get(group, 0) + tensor.n_bytes
    if not known:
        # No usable tensor table: the whole file goes to the GPU, and one layer is roughly
        # 1/(L+1) of it (the output layer counts as one more).
        if meta.file_size is None:
            raise ValueError(f"no tensor sizes and no file size for this {meta.architecture} model")
        return _Weights(gpu=meta.file_size, host=0, first_block=meta.file_size // (meta.block_count + 1))
    blocks = sum(size for group, size in sizes.items() if group.startswith("blk."))
    embeddings = sizes.get("token_embd", 0)
    first_block = sizes.get("blk.0", 0)
    if backend == "cpu":
        return _Weights(gpu=sum(sizes.values()), host=0, first_block=first_block)
    # A tied model has no output tensor: the embeddings serve as the output layer, and llama.cpp
    # then loads a second copy of them on the GPU next to the host copy used for lookups.
    output = sizes.get("output_norm", 0) + sizes.get("output", embeddings)
    return _Weights(gpu=blocks + output, host=embeddings, first_block=first_block)


def estimate(
    meta: GGUFMetadata,
    *,
    num_ctx: int,
    parallel: int = 1,
    num_batch: int = 512,
    kv_cache_type: str = "f16",
    backend: str = "cuda",
    gpu_overhead: int = 0,
    runtime: Runtime = OLLAMA,
) -> Estimate:
    """Memory for a full load on one device, the way classic Ollama estimated it (hardware.md §4.3).

    ``num_ctx`` is per sequence; it is capped at the trained context and then multiplied by
    ``parallel``. ``backend`` is "cuda", "rocm", "metal" or "cpu" and decides the fixed reserve
    (457 / 457 / 512 / 0 MiB) and where the token embeddings live. ``gpu_overhead`` is
    ``OLLAMA_GPU_OVERHEAD`` in bytes. ``runtime`` is the program that will hold the model (Ollama
    unless told otherwise).
    """
    if backend not in _RESERVE:
        raise ValueError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    if num_ctx < 1 or parallel < 1 or num_batch < 1:
        raise ValueError("num_ctx, parallel and num_batch must be positive")
    if gpu_overhead < 0:
        raise ValueError("gpu_overhead cannot be negative")
    if meta.context_length:
        num_ctx = min(num_ctx, meta.context_length)
    ctx_total = num_ctx * parallel
    kv = kv_cache_bytes(meta, ctx_total, kv_cache_type, parallel=parallel, num_batch=num_batch)
    full, _partial = graph_sizes(
        meta,
        ctx_total,
        num_batch=num_batch,
        parallel=parallel,
        kv_cache_type=kv_cache_type,
        flash_attention=runtime.flash_attention,
    )
    weights = _weights(meta, backend)
    # Ollama keeps one layer's worth of room spare: blk.0's weights plus an average layer's KV.
    spare = weights.first_block + kv // max(meta.block_count, 1) if runtime.spare_layer else 0
    reserve = _RESERVE[backend] + gpu_overhead + runtime.process_bytes
    return Estimate(
        weights_bytes=weights.gpu,
        kv_bytes=kv,
        graph_bytes=full,
        reserve_bytes=reserve,
        spare_bytes=spare,
        host_bytes=weights.host,
        total_bytes=reserve + spare + weights.gpu + kv + full,
        num_ctx=num_ctx,
    )


def coarse_preflight(file_size: int, meta: GGUFMetadata, ctx_total: int) -> int:
    """Current Ollama's quick guess before starting llama-server (ollama.md §4.4).

    File size + 2 x layers x min KV heads x (embedding / max heads) x ctx_total x 2 bytes. It
    always assumes f16 and ignores key_length, so treat it as a lower bound, not a plan.
    """
    layers = max(meta.block_count, 1)
    kv_heads = min(_per_layer(meta.head_count_kv, layers)) or 1
    heads = max(_per_layer(meta.head_count, layers))
    head_dim = meta.embedding_length // heads if heads > 0 else 0
    return file_size + 2 * meta.block_count * kv_heads * head_dim * ctx_total * 2
