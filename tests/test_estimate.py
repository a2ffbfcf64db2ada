"""Memory estimate: the numbers hardware.md §4.4 checked against Ollama and llama.cpp logs.

The two worked examples are built tensor by tensor with llama.cpp's Q4_K_M recipe; the layout
reproduces every buffer size the logs report (blocks 3992.5 MiB, output 411.0 MiB, token_embd
281.81 MiB, "CUDA0 model buffer" 4403.49 MiB for the 8B). The GGUF files are written by a small
writer below: header and tensor table only, no tensor data.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sourceprep_models.memory import gguf as gguf_module
from sourceprep_models.memory.formula import Estimate, coarse_preflight, estimate, graph_sizes, kv_cache_bytes
from sourceprep_models.memory.gguf import GGUFMetadata, TensorInfo, metadata_from_show, read_gguf, tensor_bytes
from sourceprep_models.memory.metadata import MetadataCache

DATA = Path(__file__).parent / "data" / "estimate"
MiB = 1 << 20
GiB = 1 << 30
F32, F16, Q4_0, Q8_0, Q4_K, Q6_K = 0, 1, 2, 8, 12, 14
VOCAB = 128256


# -- model layouts -----------------------------------------------------------------------------


def _more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's Q4_K_M recipe gives attn_v and ffn_down Q6_K on these layers, Q4_K elsewhere."""
    eighth = layers // 8
    return layer < eighth or layer >= 7 * layers // 8 or (layer - eighth) % 3 == 2


def llama_q4_k_m(
    layers: int, embd: int, ffn: int, kv_dim: int, *, tied: bool
) -> list[tuple[str, int, tuple[int, ...]]]:
    """(name, ggml type, shape) of a Llama 3.x Q4_K_M GGUF; a tied model's embeddings are the output."""
    rows = [("token_embd.weight", Q6_K if tied else Q4_K, (embd, VOCAB)), ("rope_freqs.weight", F32, (64,))]
    for i in range(layers):
        big = Q6_K if _more_bits(i, layers) else Q4_K
        rows += [
            (f"blk.{i}.attn_norm.weight", F32, (embd,)),
            (f"blk.{i}.ffn_down.weight", big, (ffn, embd)),
            (f"blk.{i}.ffn_gate.weight", Q4_K, (embd, ffn)),
            (f"blk.{i}.ffn_up.weight", Q4_K, (embd, ffn)),
            (f"blk.{i}.ffn_norm.weight", F32, (embd,)),
            (f"blk.{i}.attn_k.weight", Q4_K, (embd, kv_dim)),
            (f"blk.{i}.attn_output.weight", Q4_K, (embd, embd)),
            (f"blk.{i}.attn_q.weight", Q4_K, (embd, embd)),
            (f"blk.{i}.attn_v.weight", big, (embd, kv_dim)),
        ]
    rows.append(("output_norm.weight", F32, (embd,)))
    if not tied:
        rows.append(("output.weight", Q6_K, (embd, VOCAB)))
    return rows


def as_tensors(rows: Sequence[tuple[str, int, tuple[int, ...]]]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(name, kind, shape, tensor_bytes(kind, shape)) for name, kind, shape in rows)


LLAMA31_8B_ROWS = llama_q4_k_m(32, 4096, 14336, 1024, tied=False)
LLAMA32_3B_ROWS = llama_q4_k_m(28, 3072, 8192, 1024, tied=True)

# hardware.md §4.4: L 32, E 4096, H 32, Hkv 8, dk = dv = 128 (E/H, no key_length key), V 128256.
LLAMA31_8B = GGUFMetadata(
    architecture="llama",
    file_type=15,
    block_count=32,
    context_length=131072,
    embedding_length=4096,
    head_count=32,
    head_count_kv=8,
    key_length=None,
    value_length=None,
    vocab_size=VOCAB,
    sliding_window=None,
    tensors=as_tensors(LLAMA31_8B_ROWS),
)
# ollama/ollama#8098: L 28, E 3072, H 24, Hkv 8, key_length 128.
LLAMA32_3B = GGUFMetadata(
    architecture="llama",
    file_type=15,
    block_count=28,
    context_length=131072,
    embedding_length=3072,
    head_count=24,
    head_count_kv=8,
    key_length=128,
    value_length=128,
    vocab_size=VOCAB,
    sliding_window=None,
    tensors=as_tensors(LLAMA32_3B_ROWS),
)


def group_bytes(meta: GGUFMetadata, prefix: str) -> int:
    return sum(t.n_bytes or 0 for t in meta.tensors if t.name.startswith(prefix))


def ollama_gib(size: int) -> str:
    """How Ollama's logs print a size (format.HumanBytes2): one decimal of GiB."""
    return f"{size / GiB:.1f} GiB"


def attention_model(**changes: Any) -> GGUFMetadata:
    """A small model with round numbers for the KV rules: 4 layers, 8 KV heads of 128 dims."""
    base = GGUFMetadata(
        architecture="testarch",
        file_type=None,
        block_count=4,
        context_length=None,
        embedding_length=1024,
        head_count=8,
        head_count_kv=8,
        key_length=128,
        value_length=128,
        vocab_size=1000,
        sliding_window=None,
        tensors=(),
        file_size=100 * MiB,
    )
    return dataclasses.replace(base, **changes)


# -- a tiny GGUF writer ------------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, FLOAT32, BOOL, STRING, ARRAY, U64, I64, FLOAT64 = range(13)


def gguf_str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def kv_u32(value: int) -> tuple[int, bytes]:
    return U32, struct.pack("<I", value)


def kv_f32(value: float) -> tuple[int, bytes]:
    return FLOAT32, struct.pack("<f", value)


def kv_str(value: str) -> tuple[int, bytes]:
    return STRING, gguf_str(value)


def kv_strings(values: Sequence[str]) -> tuple[int, bytes]:
    return ARRAY, struct.pack("<IQ", STRING, len(values)) + b"".join(gguf_str(v) for v in values)


def kv_i32s(values: Sequence[int]) -> tuple[int, bytes]:
    return ARRAY, struct.pack("<IQ", I32, len(values)) + struct.pack(f"<{len(values)}i", *values)


def gguf_header(
    kvs: Sequence[tuple[str, tuple[int, bytes]]],
    tensors: Sequence[tuple[str, int, tuple[int, ...]]],
    *,
    version: int = 3,
) -> bytes:
    """A complete GGUF header (magic .. tensor table); the data section is left out."""
    out = [b"GGUF", struct.pack("<IQQ", version, len(tensors), len(kvs))]
    for key, (kind, payload) in kvs:
        out += [gguf_str(key), struct.pack("<I", kind), payload]
    offset = 0
    for name, kind, shape in tensors:
        out += [gguf_str(name), struct.pack("<I", len(shape)), struct.pack(f"<{len(shape)}Q", *shape)]
        out.append(struct.pack("<IQ", kind, offset))
        offset += -(-(tensor_bytes(kind, shape) or 0) // 32) * 32  # data is 32-byte aligned
    return b"".join(out)


def llama31_8b_kvs(*, with_tokens: bool = True) -> list[tuple[str, tuple[int, bytes]]]:
    """The keys of the llama3.1:8b GGUF (minus a few labels), with a 128,256-entry token list."""
    kvs = [
        ("general.architecture", kv_str("llama")),
        ("general.type", kv_str("model")),
        ("general.name", kv_str("Meta Llama 3.1 8B Instruct")),
        ("general.size_label", kv_str("8B")),
        ("general.languages", kv_strings(["en", "de", "fr", "it", "pt", "hi", "es", "th"])),
        ("llama.block_count", kv_u32(32)),
        ("llama.context_length", kv_u32(131072)),
        ("llama.embedding_length", kv_u32(4096)),
        ("llama.feed_forward_length", kv_u32(14336)),
        ("llama.attention.head_count", kv_u32(32)),
        ("llama.attention.head_count_kv", kv_u32(8)),
        ("llama.rope.freq_base", kv_f32(500000.0)),
        ("llama.attention.layer_norm_rms_epsilon", kv_f32(1e-5)),
        ("general.file_type", kv_u32(15)),
        ("llama.rope.dimension_count", kv_u32(128)),
        ("tokenizer.ggml.model", kv_str("gpt2")),
        ("tokenizer.ggml.pre", kv_str("llama-bpe")),
    ]
    if with_tokens:
        kvs += [
            ("tokenizer.ggml.tokens", kv_strings([f"tok{i}" for i in range(VOCAB)])),
            ("tokenizer.ggml.token_type", kv_i32s([1] * VOCAB)),
            ("tokenizer.ggml.merges", kv_strings([f"a{i} b{i}" for i in range(5000)])),
        ]
    kvs += [
        ("tokenizer.ggml.bos_token_id", kv_u32(128000)),
        ("tokenizer.ggml.eos_token_id", kv_u32(128009)),
        ("tokenizer.chat_template", kv_str("{{- bos_token }}{% for message in messages %}...{% endfor %}")),
        ("general.quantization_version", kv_u32(2)),
    ]
    return kvs


@pytest.fixture(scope="module")
def llama_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "sha256-llama31-8b"
    path.write_bytes(gguf_header(llama31_8b_kvs(), LLAMA31_8B_ROWS))
    return path


# -- the worked examples (hardware.md §4.4) ----------------------------------------------------


def test_llama31_8b_layout_matches_the_logged_buffers() -> None:
    kinds = [t.ggml_type for t in LLAMA31_8B.tensors]
    assert (kinds.count(Q4_K), kinds.count(Q6_K), kinds.count(F32)) == (193, 33, 66)
    assert round(group_bytes(LLAMA31_8B, "blk.") / MiB, 1) == 3992.5
    assert round(group_bytes(LLAMA31_8B, "output") / MiB, 1) == 411.0  # weights.nonrepeating
    assert round(group_bytes(LLAMA31_8B, "token_embd") / MiB, 2) == 281.81  # llama.cpp "CPU buffer"


def test_llama31_8b_at_8192_context_matches_ollama_and_llama_cpp() -> None:
    result = estimate(LLAMA31_8B, num_ctx=8192)

    assert result.kv_bytes == 1024 * MiB  # "CUDA0 KV buffer size = 1024.00 MiB"
    assert f"{result.graph_bytes / MiB:.1f}" == "560.0"  # memory.graph.full="560.0 MiB"
    assert f"{graph_sizes(LLAMA31_8B, 8192)[1] / MiB:.1f}" == "677.5"  # memory.graph.partial
    assert f"{result.weights_bytes / MiB:.2f}" == "4403.49"  # "CUDA0 model buffer size = 4403.49 MiB"
    assert f"{result.host_bytes / MiB:.2f}" == "281.81"  # token_embd stays in the CPU buffer
    assert result.reserve_bytes == 457 * MiB
    assert result.spare_bytes == group_bytes(LLAMA31_8B, "blk.0.") + 32 * MiB
    assert result.num_ctx == 8192
    # memory.required.full="6.5 GiB" (Ollama 0.5.4, RTX 4090): the issue asks for 5 %.
    assert result.total_bytes == pytest.approx(6.5 * GiB, rel=0.05)
    assert ollama_gib(result.total_bytes) == "6.5 GiB"
    assert result.total_bytes == sum(
        (result.reserve_bytes, result.spare_bytes, result.weights_bytes, result.kv_bytes, result.graph_bytes)
    )


def test_ollama_054_ran_the_8b_as_four_slots_of_2048() -> None:
    # The logged run used --ctx-size 8192 --parallel 4: Ollama sizes num_ctx x parallel cells.
    assert estimate(LLAMA31_8B, num_ctx=2048, parallel=4).total_bytes == estimate(LLAMA31_8B, num_ctx=8192).total_bytes


def test_llama32_3b_at_8192_context_matches_ollama_issue_8098() -> None:
    result = estimate(LLAMA32_3B, num_ctx=8192)

    assert f"{result.kv_bytes / MiB:.1f}" == "896.0"
    assert f"{result.graph_bytes / MiB:.1f}" == "424.0"
    assert f"{graph_sizes(LLAMA32_3B, 8192)[1] / MiB:.1f}" == "570.7"
    # Tied embeddings: the Q6_K token_embd is the output layer on the GPU and the lookup table on the host.
    assert result.host_bytes == group_bytes(LLAMA32_3B, "token_embd")
    assert f"{result.host_bytes / MiB:.2f}" == "308.23"
    assert result.total_bytes == pytest.approx(3.7 * GiB, rel=0.05)
    assert ollama_gib(result.total_bytes) == "3.7 GiB"


@pytest.mark.parametrize(
    ("num_ctx", "kv_mib", "graph_mib"),
    [(2048, 256, 258.5), (8192, 1024, 560.0), (32768, 4096, 2144.0), (131072, 16384, 8480.0)],
)
def test_context_scaling_of_the_8b(num_ctx: int, kv_mib: int, graph_mib: float) -> None:
    result = estimate(LLAMA31_8B, num_ctx=num_ctx)
    assert result.kv_bytes == kv_mib * MiB
    assert round(result.graph_bytes / MiB, 1) == graph_mib


def test_quantized_kv_cache_pays_for_block_scales() -> None:
    # 8704 MiB real, not the 8192 MiB of Ollama's one-byte rule.
    assert estimate(LLAMA31_8B, num_ctx=131072, kv_cache_type="q8_0").kv_bytes == 8704 * MiB
    assert kv_cache_bytes(LLAMA31_8B, 131072, "q4_0") == 4608 * MiB
    assert kv_cache_bytes(LLAMA31_8B, 8192, "Q8_0") == 544 * MiB  # the llama.cpp log in hardware.md §4.3
    with pytest.raises(ValueError, match="unknown KV cache type 'q3_k'"):
        kv_cache_bytes(LLAMA31_8B, 8192, "q3_k")


def test_coarse_preflight_is_file_size_plus_f16_kv() -> None:
    # hardware.md §4.4: 4.92e9 B + 1 GiB = 5.58 GiB for the 8B at 8192.
    assert coarse_preflight(4_920_000_000, LLAMA31_8B, 8192) == 4_920_000_000 + GiB
    assert f"{coarse_preflight(4_920_000_000, LLAMA31_8B, 8192) / GiB:.2f}" == "5.58"
    # It uses E / max(H) even when key_length says otherwise, and at least one KV head.
    odd = attention_model(embedding_length=2048, head_count=8, head_count_kv=(0, 4, 4, 4), key_length=512)
    assert coarse_preflight(0, odd, 100) == 2 * 4 * 1 * 256 * 100 * 2


# -- KV rules ----------------------------------------------------------------------------------


def test_per_layer_kv_heads_with_recurrent_layers() -> None:
    hybrid = attention_model(head_count=(8, 8, 8, 8), head_count_kv=(0, 8, 0, 2))
    per_cell_head = (128 + 128) * 2  # f16 key + value
    assert kv_cache_bytes(hybrid, 1000) == 1000 * per_cell_head * (8 + 2)
    # A layer without query heads has no attention either.
    assert kv_cache_bytes(attention_model(head_count=(8, 0, 8, 8)), 1000) == 1000 * per_cell_head * 8 * 3


def test_head_dims_default_to_embedding_over_heads() -> None:
    meta = attention_model(key_length=None, value_length=None, embedding_length=1024, head_count=16)
    assert kv_cache_bytes(meta, 10) == 4 * 10 * (64 + 64) * 8 * 2


def test_sliding_window_layers_cache_only_the_window() -> None:
    gemma3 = attention_model(architecture="gemma3", block_count=12, sliding_window=1024)
    per_cell = (128 + 128) * 8 * 2
    # Layers 5 and 11 are global; the other ten hold window + batch cells.
    assert kv_cache_bytes(gemma3, 8192) == (2 * 8192 + 10 * (1024 + 512)) * per_cell
    # Each parallel slot keeps its own window.
    assert kv_cache_bytes(gemma3, 16384, parallel=2) == (2 * 16384 + 10 * (2048 + 512)) * per_cell
    # A window larger than the context changes nothing.
    assert kv_cache_bytes(gemma3, 1024) == 12 * 1024 * per_cell
    # gemma2 alternates: even layers slide.
    gemma2 = attention_model(architecture="gemma2", block_count=4, sliding_window=4096)
    assert kv_cache_bytes(gemma2, 8192) == (2 * 8192 + 2 * (4096 + 512)) * per_cell
    # An architecture without a known pattern is sized as all-global (never under).
    assert kv_cache_bytes(attention_model(sliding_window=1024), 8192) == 4 * 8192 * per_cell


def test_context_is_capped_at_the_trained_length_before_parallel() -> None:
    small = dataclasses.replace(LLAMA32_3B, context_length=4096)
    capped = estimate(small, num_ctx=8192, parallel=2)
    assert capped.num_ctx == 4096
    assert capped.kv_bytes == kv_cache_bytes(small, 8192)
    assert estimate(LLAMA31_8B, num_ctx=1_000_000).num_ctx == 131072


# -- backends, fallbacks -----------------------------------------------------------------------


def test_metal_reserves_512_mib_and_cpu_nothing() -> None:
    cuda = estimate(LLAMA31_8B, num_ctx=8192, backend="cuda")
    rocm = estimate(LLAMA31_8B, num_ctx=8192, backend="rocm")
    metal = estimate(LLAMA31_8B, num_ctx=8192, backend="metal")
    assert rocm == cuda
    assert metal.reserve_bytes == 512 * MiB
    assert metal.total_bytes - cuda.total_bytes == 55 * MiB

    cpu = estimate(LLAMA31_8B, num_ctx=8192, backend="cpu")
    assert cpu.reserve_bytes == 0
    assert cpu.host_bytes == 0
    # On the CPU every tensor, embeddings included, is in the one memory.
    assert cpu.weights_bytes == sum(t.n_bytes or 0 for t in LLAMA31_8B.tensors)
    assert cpu.total_bytes == cpu.weights_bytes + cpu.kv_bytes + cpu.graph_bytes + cpu.spare_bytes


def test_gpu_overhead_is_added_to_the_reserve() -> None:
    plain = estimate(LLAMA31_8B, num_ctx=8192)
    padded = estimate(LLAMA31_8B, num_ctx=8192, gpu_overhead=GiB)
    assert padded.reserve_bytes == plain.reserve_bytes + GiB
    assert padded.total_bytes == plain.total_bytes + GiB


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown backend 'vulkan'"):
        estimate(LLAMA31_8B, num_ctx=8192, backend="vulkan")
    with pytest.raises(ValueError, match="positive"):
        estimate(LLAMA31_8B, num_ctx=0)


def test_without_tensors_the_file_size_stands_in_for_the_weights() -> None:
    meta = attention_model(file_size=400 * MiB)
    result = estimate(meta, num_ctx=1000)
    assert result.weights_bytes == 400 * MiB
    assert result.host_bytes == 0
    assert result.spare_bytes == 400 * MiB // 5 + result.kv_bytes // 4
    # One tensor of a type this module does not know is enough to fall back.
    odd = dataclasses.replace(LLAMA31_8B, tensors=(TensorInfo("blk.0.x", 99, (32,), None),), file_size=5 * GiB)
    assert estimate(odd, num_ctx=8192).weights_bytes == 5 * GiB
    with pytest.raises(ValueError, match="no tensor sizes and no file size"):
        estimate(attention_model(file_size=None), num_ctx=1000)


def test_other_architectures_use_the_generic_graph_rule() -> None:
    meta = attention_model(head_count=32, head_count_kv=8)  # GQA 4
    kv = kv_cache_bytes(meta, 4096)
    assert graph_sizes(meta, 4096) == (4 * kv // 6, 4 * kv // 6)
    assert estimate(meta, num_ctx=4096).graph_bytes == 4 * kv // 6


def test_estimate_to_dict_names_every_part() -> None:
    result = estimate(LLAMA32_3B, num_ctx=8192)
    data = result.to_dict()
    assert set(data) == {f.name for f in dataclasses.fields(Estimate)}
    assert data["total_bytes"] == result.total_bytes
    assert json.loads(json.dumps(data)) == data


def test_tensor_bytes_per_type() -> None:
    assert tensor_bytes(F32, (4096,)) == 16384
    assert tensor_bytes(F16, (10, 10)) == 200
    assert tensor_bytes(Q4_0, (4096, 4096)) == 4096 * 4096 // 32 * 18
    assert tensor_bytes(Q8_0, (64,)) == 68
    assert tensor_bytes(Q4_K, (4096, 4096)) == 4096 * 4096 // 256 * 144
    assert tensor_bytes(Q6_K, (4096, VOCAB)) == 430_940_160
    assert tensor_bytes(30, (3, 5)) == 30  # BF16
    assert tensor_bytes(4, (32,)) is None  # a removed type id


# -- the GGUF reader ---------------------------------------------------------------------------


def test_read_gguf_returns_the_8b_metadata(llama_file: Path) -> None:
    meta = read_gguf(llama_file)
    assert meta.file_size == llama_file.stat().st_size  # the header only: no tensor data was written
    # vocab_size comes from the length of tokenizer.ggml.tokens (the file has no llama.vocab_size).
    assert dataclasses.replace(meta, file_size=None) == LLAMA31_8B


def test_estimate_from_the_file_equals_the_worked_example(llama_file: Path) -> None:
    from_file = estimate(read_gguf(llama_file), num_ctx=8192)
    assert from_file == estimate(LLAMA31_8B, num_ctx=8192)
    assert ollama_gib(from_file.total_bytes) == "6.5 GiB"


class CountingFile(io.FileIO):
    """A real file that counts the bytes actually read from it."""

    bytes_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        CountingFile.bytes_read += len(data)
        return data


def test_big_arrays_are_skipped_by_seeking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 1 GiB float array (kept sparse on disk) between the keys and the tensor table.
    huge = 1 << 28
    kvs = llama31_8b_kvs(with_tokens=False)
    before = gguf_header([*kvs, ("llama.vocab_size", kv_u32(VOCAB))], [])[24:]  # the keys only
    path = tmp_path / "huge.gguf"
    with open(path, "wb") as handle:
        handle.write(b"GGUF" + struct.pack("<IQQ", 3, len(LLAMA31_8B_ROWS), len(kvs) + 2))
        handle.write(before)
        handle.write(gguf_str("tokenizer.ggml.scores") + struct.pack("<IIQ", ARRAY, FLOAT32, huge))
        handle.seek(4 * huge, io.SEEK_CUR)
        handle.write(gguf_header([], LLAMA31_8B_ROWS)[24:])  # the tensor table only
    assert path.stat().st_size > GiB

    monkeypatch.setattr(gguf_module, "open", lambda p, mode: CountingFile(p, "r"), raising=False)
    CountingFile.bytes_read = 0
    meta = read_gguf(path)
    assert dataclasses.replace(meta, file_size=None) == LLAMA31_8B
    assert CountingFile.bytes_read < 4 * MiB


def test_per_layer_arrays_are_read_as_tuples(tmp_path: Path) -> None:
    path = tmp_path / "hybrid.gguf"
    kvs = [
        ("general.architecture", kv_str("granitehybrid")),
        ("granitehybrid.block_count", kv_u32(4)),
        ("granitehybrid.embedding_length", kv_u32(1024)),
        ("granitehybrid.attention.head_count", kv_u32(8)),
        ("granitehybrid.attention.head_count_kv", kv_i32s([0, 8, 0, 8])),
        ("granitehybrid.attention.sliding_window", kv_u32(512)),
        ("granitehybrid.vocab_size", kv_u32(1000)),
        ("tokenizer.ggml.token_type", kv_i32s([1] * 1000)),
    ]
    path.write_bytes(gguf_header(kvs, [("blk.0.x.weight", 99, (32,))]))
    meta = read_gguf(path)
    assert meta.head_count == 8
    assert meta.head_count_kv == (0, 8, 0, 8)
    assert (meta.sliding_window, meta.vocab_size, meta.context_length, meta.file_type) == (512, 1000, None, None)
    assert meta.tensors == (TensorInfo("blk.0.x.weight", 99, (32,), None),)


def test_missing_kv_heads_mean_multi_head_attention(tmp_path: Path) -> None:
    path = tmp_path / "mha.gguf"
    kvs = [
        ("general.architecture", kv_str("gpt2")),
        ("gpt2.block_count", kv_u32(12)),
        ("gpt2.embedding_length", kv_u32(768)),
        ("gpt2.attention.head_count", kv_u32(12)),
    ]
    path.write_bytes(gguf_header(kvs, [], version=2))
    assert read_gguf(path).head_count_kv == 12


def test_big_endian_files_are_read(tmp_path: Path) -> None:
    keys: list[tuple[str, str | int]] = [
        ("general.architecture", "llama"),
        ("llama.block_count", 2),
        ("llama.embedding_length", 64),
        ("llama.attention.head_count", 4),
    ]
    raw = b"GGUF" + struct.pack(">IQQ", 3, 1, len(keys))
    for key, value in keys:
        raw += struct.pack(">Q", len(key)) + key.encode()
        if isinstance(value, str):
            raw += struct.pack(">IQ", STRING, len(value)) + value.encode()
        else:
            raw += struct.pack(">II", U32, value)
    raw += struct.pack(">Q", 14) + b"output.weight!" + struct.pack(">IQQIQ", 2, 64, 10, F16, 0)
    path = tmp_path / "be.gguf"
    path.write_bytes(raw)
    meta = read_gguf(path)
    assert (meta.block_count, meta.embedding_length, meta.head_count, meta.head_count_kv) == (2, 64, 4, 4)
    assert meta.tensors == (TensorInfo("output.weight!", F16, (64, 10), 1280),)


def test_a_file_that_is_not_gguf_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the weights you are looking for\n")
    with pytest.raises(ValueError, match=r"notes\.txt: not a GGUF file"):
        read_gguf(path)
    legacy = tmp_path / "old.gguf"
    legacy.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    with pytest.raises(ValueError, match="unsupported GGUF version 1"):
        read_gguf(legacy)


def test_every_truncation_of_the_header_is_reported(tmp_path: Path) -> None:
    kvs = [
        ("general.architecture", kv_str("llama")),
        ("llama.block_count", kv_u32(2)),
        ("llama.embedding_length", kv_u32(64)),
        ("tokenizer.ggml.tokens", kv_strings([f"t{i}" for i in range(50)])),
        ("tokenizer.ggml.token_type", kv_i32s([1] * 50)),
    ]
    whole = gguf_header(kvs, [("blk.0.attn_q.weight", F16, (64, 64)), ("output.weight", Q8_0, (64, 50))])
    path = tmp_path / "cut.gguf"
    path.write_bytes(whole)
    assert read_gguf(path).vocab_size == 50
    for cut in range(4, len(whole), 7):
        path.write_bytes(whole[:cut])
        with pytest.raises(ValueError, match=r"cut\.gguf: truncated GGUF header"):
            read_gguf(path)


def test_absurd_lengths_are_errors_not_allocations(tmp_path: Path) -> None:
    path = tmp_path / "liar.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 62) + bytes(100))
    with pytest.raises(ValueError, match=r"liar\.gguf: corrupt GGUF header"):
        read_gguf(path)
    # A skipped value may be long, but not longer than the file.
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_str("k") + struct.pack("<IQ", STRING, 1 << 40))
    with pytest.raises(ValueError, match=r"liar\.gguf: truncated GGUF header"):
        read_gguf(path)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + gguf_str("t") + struct.pack("<I", 1000) + bytes(24))
    with pytest.raises(ValueError, match="claims 1000 dimensions"):
        read_gguf(path)
    # Counts that cannot fit in the file fail at once instead of walking it.
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40) + bytes(100))
    with pytest.raises(ValueError, match="truncated GGUF header"):
        read_gguf(path)
    strings = gguf_str("k") + struct.pack("<IIQ", ARRAY, STRING, 1 << 40)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + strings + bytes(100))
    with pytest.raises(ValueError, match="truncated GGUF header"):
        read_gguf(path)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_str("k") + struct.pack("<I", 77) + bytes(100))
    with pytest.raises(ValueError, match=r"liar\.gguf: corrupt GGUF header \(unknown value type 77"):
        read_gguf(path)


# -- /api/show ---------------------------------------------------------------------------------


def show_body(*, verbose: bool) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((DATA / "show-llama3.2-3b.json").read_text())
    if verbose:
        names = {kind: name for name, kind in (("F32", F32), ("Q4_K", Q4_K), ("Q6_K", Q6_K))}
        body["tensors"] = [{"name": n, "type": names[k], "shape": list(s)} for n, k, s in LLAMA32_3B_ROWS]
    return body


def test_metadata_from_a_verbose_show_body() -> None:
    meta = metadata_from_show(show_body(verbose=True))
    assert meta == LLAMA32_3B
    assert ollama_gib(estimate(meta, num_ctx=8192).total_bytes) == "3.7 GiB"


def test_metadata_from_a_plain_show_body_needs_the_file_size() -> None:
    meta = metadata_from_show(show_body(verbose=False), file_size=2_019_377_696)
    assert meta.tensors == ()
    assert dataclasses.replace(meta, file_size=None, tensors=LLAMA32_3B.tensors) == LLAMA32_3B
    result = estimate(meta, num_ctx=8192)
    assert result.weights_bytes == 2_019_377_696
    # Without the tensor table the whole file is counted on the GPU: a little over the logged 3.7 GiB.
    assert result.total_bytes == pytest.approx(3.7 * GiB, rel=0.05)


def test_show_body_with_emptied_per_layer_arrays() -> None:
    body = show_body(verbose=False)
    body["model_info"]["llama.attention.head_count_kv"] = []  # more than five entries, not verbose
    meta = metadata_from_show(body)
    assert meta.head_count_kv == 24  # the cautious reading: as many KV heads as query heads
    body["model_info"]["llama.attention.head_count"] = []
    with pytest.raises(ValueError, match="ask with verbose"):
        metadata_from_show(body)
    with pytest.raises(ValueError, match="no model_info"):
        metadata_from_show({"details": {}})


# -- the cache ---------------------------------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32


def test_cache_round_trip(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path / "gguf-meta")
    assert cache.get(DIGEST) is None
    meta = dataclasses.replace(LLAMA31_8B, file_size=4_920_733_888)
    cache.put(DIGEST, meta)
    assert cache.get(DIGEST) == meta
    assert cache.get(DIGEST.replace(":", "-")) == meta  # the blob file name spells it with a dash
    files = sorted(p.name for p in (tmp_path / "gguf-meta").iterdir())
    assert files == ["sha256-" + "ab" * 32 + ".json"]  # no temp file left behind
    assert (tmp_path / "gguf-meta" / files[0]).stat().st_size < 40_000
    hybrid = attention_model(head_count_kv=(0, 8, 0, 8), tensors=(TensorInfo("blk.0.x", 99, (32,), None),))
    cache.put("sha256-other", hybrid)
    assert cache.get("sha256-other") == hybrid


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        "[]",
        '{"format": 99}',
        '{"format": 1, "architecture": "llama"}',
        '{"format": 1, "architecture": "llama", "file_type": 15, "block_count": "32", "context_length": null,'
        ' "embedding_length": 4096, "head_count": 32, "head_count_kv": 8, "key_length": null,'
        ' "value_length": null, "vocab_size": null, "sliding_window": null, "file_size": null, "tensors": []}',
    ],
)
def test_corrupt_cache_entries_are_misses(tmp_path: Path, content: str) -> None:
    cache = MetadataCache(tmp_path)
    (tmp_path / ("sha256-" + "ab" * 32 + ".json")).write_text(content)
    assert cache.get(DIGEST) is None
    cache.put(DIGEST, LLAMA32_3B)  # and a new entry replaces the corrupt one
    assert cache.get(DIGEST) == LLAMA32_3B


def test_cache_rejects_path_like_digests_and_survives_unwritable_dirs(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path)
    with pytest.raises(ValueError, match="not a blob digest"):
        cache.put("../../etc/passwd", LLAMA32_3B)
    assert cache.get("../../etc/passwd") is None
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    MetadataCache(blocked).put(DIGEST, LLAMA32_3B)  # a cache that cannot be written is only slower
    assert MetadataCache(blocked).get(DIGEST) is None


def test_llama_server_runtime_has_no_spare_layer_and_a_flash_attention_graph() -> None:
    from sourceprep_models.memory.formula import LLAMA_SERVER

    short = estimate(LLAMA31_8B, num_ctx=2048, backend="cpu", runtime=LLAMA_SERVER)
    long = estimate(LLAMA31_8B, num_ctx=8192, backend="cpu", runtime=LLAMA_SERVER)
    ollama = estimate(LLAMA31_8B, num_ctx=8192, backend="cpu")

    assert short.spare_bytes == 0 and ollama.spare_bytes > 0
    assert short.reserve_bytes == LLAMA_SERVER.process_bytes  # the child process itself, no GPU reserve on the CPU
    # With flash attention only the f16 mask (batch x context) grows with the context.
    assert long.graph_bytes - short.graph_bytes == 2 * 512 * (8192 - 2048)
    assert long.graph_bytes < ollama.graph_bytes
    assert long.weights_bytes == ollama.weights_bytes and long.kv_bytes == ollama.kv_bytes
