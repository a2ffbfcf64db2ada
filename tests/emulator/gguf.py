"""Minimal GGUF v3 writer/reader for the Ollama emulator (test infrastructure, not product code).

The emulator needs real weight files on disk: the product reads them to warm the page
cache (ollama.md §6) and the emulator reads them on every load (ollama.md §4.9). A file
written here is a structurally valid GGUF v3 file: header, metadata key/values, one
tensor-info record and an aligned data section. The single tensor ("emulator.filler",
type I8) owns all the padding bytes, so a GGUF reader accounts for every byte of the file.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32  # GGUF default general.alignment
GGML_TYPE_I8 = 24
FILLER_TENSOR = "emulator.filler"
_FILL_BLOCK = 1 << 20


class ValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR_FORMATS: dict[ValueType, str] = {
    ValueType.UINT8: "<B",
    ValueType.INT8: "<b",
    ValueType.UINT16: "<H",
    ValueType.INT16: "<h",
    ValueType.UINT32: "<I",
    ValueType.INT32: "<i",
    ValueType.FLOAT32: "<f",
    ValueType.BOOL: "<?",
    ValueType.UINT64: "<Q",
    ValueType.INT64: "<q",
    ValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class KV:
    """One metadata entry with an explicit GGUF type (arrays carry their element type)."""

    key: str
    type: ValueType
    value: Any
    element_type: ValueType | None = None


@dataclass
class TensorInfo:
    name: str
    shape: list[int]
    ggml_type: int
    offset: int


@dataclass
class GGUFFile:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0


def _gguf_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _encode_value(vtype: ValueType, value: Any, element_type: ValueType | None) -> bytes:
    if vtype is ValueType.STRING:
        return _gguf_string(str(value))
    if vtype is ValueType.ARRAY:
        if element_type is None:
            raise ValueError("array metadata needs an element type")
        items = list(value)
        body = b"".join(_encode_value(element_type, item, None) for item in items)
        return struct.pack("<IQ", element_type, len(items)) + body
    return struct.pack(_SCALAR_FORMATS[vtype], value)


def _align(offset: int) -> int:
    return (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def _header(metadata: list[KV], filler_elements: int) -> bytes:
    parts = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, 1, len(metadata))]
    for kv in metadata:
        parts.append(_gguf_string(kv.key))
        parts.append(struct.pack("<I", kv.type))
        parts.append(_encode_value(kv.type, kv.value, kv.element_type))
    # tensor info: name, n_dims, dims..., ggml type, offset within the data section
    parts.append(_gguf_string(FILLER_TENSOR))
    parts.append(struct.pack("<IQIQ", 1, filler_elements, GGML_TYPE_I8, 0))
    return b"".join(parts)


def write_gguf(path: Path, metadata: list[KV], total_bytes: int) -> None:
    """Write a GGUF v3 file of exactly ``total_bytes`` (or the smallest valid size above it).

    The header length does not depend on the tensor's element count (a fixed-width
    uint64), so the header is sized once and the filler tensor takes the remainder.
    """
    header_len = _align(len(_header(metadata, 0)))
    filler = max(total_bytes - header_len, ALIGNMENT)
    header = _header(metadata, filler)
    seed = hashlib.sha256(header).digest()
    # Non-zero, per-file content: no sparse files, no accidental dedup between models.
    block = (seed * (_FILL_BLOCK // len(seed) + 1))[:_FILL_BLOCK]
    with path.open("wb") as out:
        out.write(header)
        out.write(b"\0" * (header_len - len(header)))
        remaining = filler
        while remaining > 0:
            n = min(remaining, len(block))
            out.write(block[:n])
            remaining -= n


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ValueError("truncated GGUF file")
    return data


def _read_value(stream: BinaryIO, vtype: ValueType) -> Any:
    if vtype is ValueType.STRING:
        (length,) = struct.unpack("<Q", _read_exact(stream, 8))
        return _read_exact(stream, length).decode("utf-8")
    if vtype is ValueType.ARRAY:
        etype, count = struct.unpack("<IQ", _read_exact(stream, 12))
        return [_read_value(stream, ValueType(etype)) for _ in range(count)]
    fmt = _SCALAR_FORMATS[vtype]
    (value,) = struct.unpack(fmt, _read_exact(stream, struct.calcsize(fmt)))
    return value


def read_gguf(path: Path) -> GGUFFile:
    """Parse the header, metadata and tensor infos (the data section is not read)."""
    with path.open("rb") as stream:
        if _read_exact(stream, 4) != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file")
        version, n_tensors, n_kv = struct.unpack("<IQQ", _read_exact(stream, 20))
        result = GGUFFile(version=version)
        for _ in range(n_kv):
            key = _read_value(stream, ValueType.STRING)
            (vtype,) = struct.unpack("<I", _read_exact(stream, 4))
            result.metadata[key] = _read_value(stream, ValueType(vtype))
        for _ in range(n_tensors):
            name = _read_value(stream, ValueType.STRING)
            (n_dims,) = struct.unpack("<I", _read_exact(stream, 4))
            shape = list(struct.unpack(f"<{n_dims}Q", _read_exact(stream, 8 * n_dims)))
            ggml_type, offset = struct.unpack("<IQ", _read_exact(stream, 12))
            result.tensors.append(TensorInfo(name, shape, ggml_type, offset))
        result.data_offset = _align(stream.tell())
    return result
