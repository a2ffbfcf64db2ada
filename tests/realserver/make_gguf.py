"""Write small, real, loadable GGUF models: llama architecture, random weights, a real vocabulary.

llama.cpp needs more than a valid header to load a model (real-engine.md §4): every tensor of the
architecture with the right shapes, a tokenizer it can build (SentencePiece "llama" tokens, scores
and types, with byte-fallback tokens so any text tokenizes), and special-token ids. The output is
gibberish, as random weights give, but load times are real and grow with the file size, which is
what the tests and benchmarks measure. Output is deterministic for a given shape and seed.

    python -m tests.realserver.make_gguf OUT.gguf [--preset tiny|50M|500M] [--seed N]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# Words whose every prefix becomes a piece, so ordinary English prompts tokenize into whole words.
_WORDS = (
    "hello",
    "world",
    "the",
    "model",
    "answer",
    "code",
    "test",
    "load",
    "swap",
    "fast",
    "slow",
    "memory",
    "token",
    "stage",
    "group",
    "reason",
    "catalogue",
    "embed",
    "rerank",
    "verify",
    "debug",
    "context",
    "pipeline",
    "file",
    "function",
    "class",
    "return",
    "value",
    "error",
    "a",
    "an",
    "and",
    "of",
    "to",
    "in",
    "is",
    "it",
    "for",
    "on",
    "with",
    "as",
    "at",
    "by",
    "this",
    "that",
    "from",
    "or",
    "be",
    "are",
    "was",
    "were",
    "not",
    "you",
    "we",
    "they",
)
_SPECIALS = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Shape:
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 128
    context: int = 2048
    f16: bool = False  # F16 weights (norms stay F32); the tiny default is all F32


PRESETS: dict[str, Shape] = {
    "tiny": Shape(),  # about 0.6 MB
    "50M": Shape(n_embd=1024, n_layer=2, n_head=16, n_head_kv=16, n_ff=2816, f16=True),  # about 54 MB
    "500M": Shape(n_embd=1024, n_layer=19, n_head=16, n_head_kv=16, n_ff=2816, f16=True),  # about 490 MB
}


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types (gguf TokenType values) of a small SentencePiece vocabulary."""
    normal, unknown, control, byte = 1, 2, 3, 6
    tokens = list(_SPECIALS)
    types = [unknown, control, control, control, control]
    scores = [0.0] * len(tokens)
    for value in range(256):  # byte fallback: any UTF-8 text can be tokenized
        tokens.append(f"<0x{value:02X}>")
        types.append(byte)
        scores.append(0.0)
    pieces: list[str] = []
    for word in _WORDS:
        for end in range(1, len(word) + 1):
            for piece in (word[:end], "\u2581" + word[:end]):
                if piece not in pieces:
                    pieces.append(piece)
    pieces += [p for p in ("\u2581", ",", ".", "\u2581,", "\u2581.") if p not in pieces]
    for piece in pieces:
        tokens.append(piece)
        types.append(normal)
        # Longer pieces score higher, so the tokenizer prefers whole words.
        scores.append(float(len(piece)) - 100.0)
    return tokens, scores, types


def write_model(path: Path, shape: Shape = PRESETS["tiny"], *, seed: int = 0, name: str | None = None) -> Path:
    """Write one model to ``path`` (tensors streamed one at a time: memory stays low for big files)."""
    import gguf
    import numpy as np

    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    head_dim = shape.n_embd // shape.n_head
    n_embd_kv = head_dim * shape.n_head_kv
    weight_type = np.float16 if shape.f16 else np.float32

    tensors: list[tuple[str, tuple[int, ...], Any]] = [("token_embd.weight", (n_vocab, shape.n_embd), weight_type)]
    for layer in range(shape.n_layer):
        blk = f"blk.{layer}"
        tensors += [
            (f"{blk}.attn_norm.weight", (shape.n_embd,), np.float32),
            (f"{blk}.attn_q.weight", (shape.n_embd, shape.n_embd), weight_type),
            (f"{blk}.attn_k.weight", (n_embd_kv, shape.n_embd), weight_type),
            (f"{blk}.attn_v.weight", (n_embd_kv, shape.n_embd), weight_type),
            (f"{blk}.attn_output.weight", (shape.n_embd, shape.n_embd), weight_type),
            (f"{blk}.ffn_norm.weight", (shape.n_embd,), np.float32),
            (f"{blk}.ffn_gate.weight", (shape.n_ff, shape.n_embd), weight_type),
            (f"{blk}.ffn_up.weight", (shape.n_ff, shape.n_embd), weight_type),
            (f"{blk}.ffn_down.weight", (shape.n_embd, shape.n_ff), weight_type),
        ]
    tensors += [
        ("output_norm.weight", (shape.n_embd,), np.float32),
        ("output.weight", (n_vocab, shape.n_embd), weight_type),
    ]

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name or path.stem)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if shape.f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template(_CHATML)
    for tensor_name, dims, dtype in tensors:
        nbytes = int(np.prod(dims)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(tensor_name, dims, np.dtype(dtype), nbytes)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for tensor_name, dims, dtype in tensors:
        writer.write_tensor_data(_weights(rng, tensor_name, dims, dtype))
    writer.close()
    return path


def _weights(rng: np.random.Generator, name: str, dims: tuple[int, ...], dtype: Any) -> Any:
    import numpy as np

    if name.endswith("norm.weight"):
        return np.ones(dims, dtype=np.float32)
    # Small values keep activations finite through every layer.
    return (rng.standard_normal(dims, dtype=np.float32) * 0.02).astype(dtype)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a small random-weight llama GGUF that llama.cpp loads.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_model(args.out, PRESETS[args.preset], seed=args.seed)
    print(f"{path} {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
