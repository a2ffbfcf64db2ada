"""A header-only GGUF reader: the architecture numbers the memory formula needs (hardware.md §4.2).

``read_gguf`` walks the key/value section and the tensor table and stops there, seeking over big
arrays instead of decoding them, so a 128k-entry token list costs milliseconds; ``metadata_from_show``
builds the same record from an Ollama ``/api/show`` body. Standard library only.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "GGML_TYPE_NAMES",
    "GGML_TYPE_SIZES",
    "GGUFMetadata",
    "TensorInfo",
    "metadata_from_show",
    "read_gguf",
    "tensor_bytes",
]

# ggml type id -> (elements per block, bytes per block); the values of gguf-py 0.19's
# GGML_QUANT_SIZES (hardware.md §4.2), except Q8_1, which gguf-py still lists at its old 40-byte
# size while ggml's block is 36 bytes today (it is a scratch type, never stored in model files).
# Ids 4, 5, 31-33 and 36-38 were removed from ggml.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 36),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
}

# The names Ollama prints for tensor types in /api/show, upper-cased.
GGML_TYPE_NAMES: dict[str, int] = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q5_0": 6,
    "Q5_1": 7,
    "Q8_0": 8,
    "Q8_1": 9,
    "Q2_K": 10,
    "Q3_K": 11,
    "Q4_K": 12,
    "Q5_K": 13,
    "Q6_K": 14,
    "Q8_K": 15,
    "IQ2_XXS": 16,
    "IQ2_XS": 17,
    "IQ3_XXS": 18,
    "IQ1_S": 19,
    "IQ4_NL": 20,
    "IQ3_S": 21,
    "IQ2_S": 22,
    "IQ4_XS": 23,
    "I8": 24,
    "I16": 25,
    "I32": 26,
    "I64": 27,
    "F64": 28,
    "IQ1_M": 29,
    "BF16": 30,
    "TQ1_0": 34,
    "TQ2_0": 35,
    "MXFP4": 39,
    "NVFP4": 40,
    "Q1_0": 41,
}


# Per-architecture keys the reader keeps (everything else is skipped unread).
_ARCH_KEYS = (
    "block_count",
    "context_length",
    "embedding_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.sliding_window",
    "vocab_size",
)
_TOKENS_KEY = "tokenizer.ggml.tokens"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ggml_type: int
    shape: tuple[int, ...]  # GGUF order: the fastest-varying dimension first
    n_bytes: int | None  # None when the type is not in GGML_TYPE_SIZES


@dataclass(frozen=True)
class GGUFMetadata:
    """The few header facts the memory estimate needs (hardware.md §4.2)."""

    architecture: str
    file_type: int | None
    block_count: int
    context_length: int | None  # trained context
    embedding_length: int
    head_count: int | tuple[int, ...]  # may be per layer
    head_count_kv: int | tuple[int, ...]  # may be per layer; 0 in a layer = recurrent, no KV
    key_length: int | None
    value_length: int | None
    vocab_size: int | None
    sliding_window: int | None
    tensors: tuple[TensorInfo, ...] = ()
    file_size: int | None = None


def tensor_bytes(ggml_type: int, shape: Sequence[int]) -> int | None:
    """Bytes a tensor occupies, or None for a ggml type this module does not know."""
    sizes = GGML_TYPE_SIZES.get(ggml_type)
    if sizes is None:
        return None
    elements = 1
    for dim in shape:
        elements *= dim
    block_elements, block_bytes = sizes
    return -(-elements // block_elements) * block_bytes


# -- header-only GGUF reader -------------------------------------------------------------------

# GGUF value type id -> struct code for the fixed-size ones. 8 = string, 9 = array.
_SCALAR_CODES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 8  # ggml uses 4; anything far above that is a corrupt header
_MAX_KEPT_ARRAY = 1 << 16  # per-layer arrays are a few hundred entries at most
_MAX_STRING = 1 << 20  # for keys, tensor names and the values we decode


class _Cursor:
    """A forward-only window over a file: small reads come from a 1 MiB buffer, big skips seek.

    Every read checks the file size first, so a corrupt length can neither allocate gigabytes nor
    run past the end unnoticed.
    """

    _CHUNK = 1 << 20

    def __init__(self, handle: BinaryIO, path: Path, size: int, order: str) -> None:
        self._handle = handle
        self._path = path
        self._size = size
        self._buf = b""
        self._pos = 0  # next unread byte inside _buf
        self._base = 0  # file offset of _buf[0]
        self.order = order
        self._u32 = struct.Struct(order + "I")
        self._u64 = struct.Struct(order + "Q")

    def require(self, n: int, what: str) -> None:
        """Fail early when the next ``n`` bytes cannot all be in the file (a corrupt count)."""
        if self._base + self._pos + n > self._size:
            raise self.truncated(what)

    def corrupt(self, problem: str) -> ValueError:
        return ValueError(f"{self._path}: corrupt GGUF header ({problem})")

    def truncated(self, what: str) -> ValueError:
        return ValueError(
            f"{self._path}: truncated GGUF header ({what} runs past the end of the {self._size}-byte file)"
        )

    def _fill(self, n: int, what: str) -> None:
        available = len(self._buf) - self._pos
        if available >= n:
            return
        offset = self._base + self._pos
        if offset + n > self._size:
            raise self.truncated(what)
        self._handle.seek(self._base + len(self._buf))
        parts = [self._buf[self._pos :]]
        wanted = max(n - available, self._CHUNK)
        while wanted > 0:
            more = self._handle.read(wanted)
            if not more:
                break
            parts.append(more)
            wanted -= len(more)
        self._buf = b"".join(parts)
        self._base, self._pos = offset, 0
        if len(self._buf) < n:  # the file shrank under us
            raise self.truncated(what)

    def take(self, n: int, what: str) -> bytes:
        self._fill(n, what)
        start = self._pos
        self._pos += n
        return self._buf[start : self._pos]

    def unpack(self, code: str, what: str) -> object:
        codec = struct.Struct(self.order + code)
        self._fill(codec.size, what)
        (value,) = codec.unpack_from(self._buf, self._pos)
        self._pos += codec.size
        return value

    def _integer(self, codec: struct.Struct, what: str) -> int:
        self._fill(codec.size, what)
        (value,) = codec.unpack_from(self._buf, self._pos)
        self._pos += codec.size
        return int(value)

    def u32(self, what: str) -> int:
        return self._integer(self._u32, what)

    def u64(self, what: str) -> int:
        return self._integer(self._u64, what)

    def string(self, what: str) -> str:
        """A string that is decoded (keys, names, short values); longer ones are always skipped."""
        length = self.u64(what)
        if length > _MAX_STRING:
            raise self.corrupt(f"{what} claims to be {length} bytes long")
        return self.take(length, what).decode("utf-8", errors="replace")

    def skip(self, n: int, what: str) -> None:
        available = len(self._buf) - self._pos
        if n <= available:
            self._pos += n
            return
        target = self._base + self._pos + n
        if target > self._size:
            raise self.truncated(what)
        self._buf, self._pos, self._base = b"", 0, target

    def skip_strings(self, count: int, what: str) -> None:
        """Step over ``count`` length-prefixed strings without decoding any of them."""
        unpack = self._u64.unpack_from
        remaining = count
        while remaining:
            self._fill(8, what)
            buf, pos, end = self._buf, self._pos, len(self._buf)
            while remaining and pos + 8 <= end:
                (length,) = unpack(buf, pos)
                pos += 8 + length
                remaining -= 1
            if pos > end:  # the last string continues past the buffer
                self._pos = end
                self.skip(pos - end, what)
            else:
                self._pos = pos


def _wanted_key(key: str) -> bool:
    if key in ("general.architecture", "general.file_type"):
        return True
    _, _, suffix = key.partition(".")
    return suffix in _ARCH_KEYS


def _read_value(cursor: _Cursor, value_type: int, key: str, keep: bool, counts: dict[str, int]) -> object:
    """One value; returns None for everything skipped rather than decoded."""
    code = _SCALAR_CODES.get(value_type)
    if code is not None:
        if keep:
            return cursor.unpack(code, key)
        cursor.skip(struct.calcsize(code), key)
        return None
    if value_type == _STRING:
        if keep:
            return cursor.string(key)
        cursor.skip(cursor.u64(key), key)
        return None
    if value_type != _ARRAY:
        raise cursor.corrupt(f"unknown value type {value_type} for key {key!r}")
    element_type = cursor.u32(key)
    count = cursor.u64(key)
    if key == _TOKENS_KEY:
        counts[key] = count
    element_code = _SCALAR_CODES.get(element_type)
    if element_code is not None:
        size = struct.calcsize(element_code) * count
        if keep and count <= _MAX_KEPT_ARRAY:
            data = cursor.take(size, key)
            return tuple(struct.unpack(f"{cursor.order}{count}{element_code}", data))
        cursor.skip(size, key)
    elif element_type == _STRING:
        cursor.require(8 * count, key)  # every string has at least its length
        cursor.skip_strings(count, key)
    elif element_type == _ARRAY:
        cursor.require(12 * count, key)  # every inner array has at least its type and count
        for _ in range(count):
            _read_value(cursor, element_type, key, False, counts)
    else:
        raise cursor.corrupt(f"unknown array element type {element_type} for key {key!r}")
    return None


def read_gguf(path: Path) -> GGUFMetadata:
    """The estimate's inputs from a GGUF file's header; the tensor data is never read.

    Raises ``ValueError`` (naming the file) for anything that is not a complete GGUF v2/v3 header.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(24)
        if len(head) < 4 or head[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file (it does not start with the magic bytes 'GGUF')")
        if len(head) < 24:
            raise ValueError(f"{path}: truncated GGUF header ({size} bytes, the fixed part alone needs 24)")
        # Big-endian files exist (for s390x); their version reads as a huge number little-endian.
        order = "<"
        (version,) = struct.unpack_from("<I", head, 4)
        if version not in (2, 3):
            (swapped,) = struct.unpack_from(">I", head, 4)
            if swapped not in (2, 3):
                raise ValueError(f"{path}: unsupported GGUF version {version} (only 2 and 3 are read)")
            order, version = ">", swapped
        tensor_count, kv_count = struct.unpack_from(order + "QQ", head, 8)
        cursor = _Cursor(handle, path, size, order)
        cursor.skip(24, "fixed header")
        # Smallest possible entries: a key/value is 13 bytes, a tensor info 24.
        cursor.require(13 * kv_count + 24 * tensor_count, f"{kv_count} keys and {tensor_count} tensor infos")

        values: dict[str, object] = {}
        counts: dict[str, int] = {}
        for _ in range(kv_count):
            key = cursor.string("metadata key")
            value_type = cursor.u32(key)
            keep = _wanted_key(key)
            value = _read_value(cursor, value_type, key, keep, counts)
            if keep:
                values[key] = value

        tensors = []
        for _ in range(tensor_count):
            name = cursor.string("tensor name")
            n_dims = cursor.u32(name)
            if n_dims > _MAX_DIMS:
                raise cursor.corrupt(f"tensor {name!r} claims {n_dims} dimensions")
            shape = tuple(cursor.u64(name) for _ in range(n_dims))
            ggml_type = cursor.u32(name)
            cursor.skip(8, name)  # data offset: not needed for sizes
            tensors.append(TensorInfo(name, ggml_type, shape, tensor_bytes(ggml_type, shape)))

    try:
        return _metadata_from_kv(values, counts.get(_TOKENS_KEY), tuple(tensors), size)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_counts(value: object) -> int | tuple[int, ...] | None:
    """A scalar or a per-layer array of counts; None when absent or emptied (as /api/show does)."""
    scalar = _as_int(value)
    if scalar is not None:
        return scalar
    if isinstance(value, (list, tuple)) and value:
        items = [_as_int(item) for item in value]
        if all(item is not None for item in items):
            return tuple(item for item in items if item is not None)
    return None


def _token_embd_vocab(tensors: Sequence[TensorInfo]) -> int | None:
    for tensor in tensors:
        if tensor.name == "token_embd.weight" and len(tensor.shape) >= 2:
            return tensor.shape[1]
    return None


def _metadata_from_kv(
    values: Mapping[str, object], token_count: int | None, tensors: tuple[TensorInfo, ...], file_size: int | None
) -> GGUFMetadata:
    architecture = values.get("general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise ValueError("no general.architecture key")

    def arch(key: str) -> object:
        return values.get(f"{architecture}.{key}")

    block_count = _as_int(arch("block_count"))
    embedding_length = _as_int(arch("embedding_length"))
    if block_count is None or embedding_length is None:
        raise ValueError(f"no {architecture}.block_count / embedding_length keys (not a language model?)")
    # Absent head counts follow llama.cpp: no query heads means no attention (a pure SSM), and the
    # KV heads default to the query heads (multi-head attention).
    head_count = _as_counts(arch("attention.head_count"))
    if head_count is None:
        head_count = 0
    head_count_kv = _as_counts(arch("attention.head_count_kv"))
    if head_count_kv is None:
        head_count_kv = head_count
    vocab = token_count or _as_int(arch("vocab_size")) or _token_embd_vocab(tensors)
    return GGUFMetadata(
        architecture=architecture,
        file_type=_as_int(values.get("general.file_type")),
        block_count=block_count,
        context_length=_as_int(arch("context_length")) or None,
        embedding_length=embedding_length,
        head_count=head_count,
        head_count_kv=head_count_kv,
        key_length=_as_int(arch("attention.key_length")) or None,
        value_length=_as_int(arch("attention.value_length")) or None,
        vocab_size=vocab or None,
        sliding_window=_as_int(arch("attention.sliding_window")) or None,
        tensors=tensors,
        file_size=file_size,
    )


def metadata_from_show(show: Mapping[str, object], *, file_size: int | None = None) -> GGUFMetadata:
    """The same record from an Ollama ``/api/show`` body (ollama.md §2.3).

    ``model_info`` holds the GGUF keys, with arrays longer than 5 emptied unless the request was
    verbose; ``tensors`` (verbose only) gives names, type names and shapes, enough for exact weight
    bytes. Without tensors, pass ``file_size`` (from ``/api/tags``) so the estimate has weights.
    """
    info = show.get("model_info")
    if not isinstance(info, Mapping):
        raise ValueError("/api/show body has no model_info")
    tensors: list[TensorInfo] = []
    raw_tensors = show.get("tensors")
    if isinstance(raw_tensors, list):
        for raw in raw_tensors:
            if not isinstance(raw, Mapping):
                continue
            name, kind, shape = raw.get("name"), raw.get("type"), raw.get("shape")
            if not isinstance(name, str) or not isinstance(shape, list):
                continue
            dims = tuple(_as_int(dim) or 0 for dim in shape)
            ggml_type = GGML_TYPE_NAMES.get(kind.upper(), -1) if isinstance(kind, str) else _as_int(kind)
            if ggml_type is None:
                ggml_type = -1
            tensors.append(TensorInfo(name, ggml_type, dims, tensor_bytes(ggml_type, dims)))
    # Per-layer query heads emptied by a non-verbose /api/show cannot be guessed safely: zero would
    # mean "no attention". (Emptied KV heads fall back to the query heads, an overestimate.)
    if info.get(f"{info.get('general.architecture')}.attention.head_count") == []:
        raise ValueError("/api/show emptied the per-layer attention.head_count array: ask with verbose")
    tokens = info.get(_TOKENS_KEY)
    token_count = len(tokens) if isinstance(tokens, list) and tokens else None
    return _metadata_from_kv(info, token_count, tuple(tensors), file_size)
