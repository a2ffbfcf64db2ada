"""Parsed GGUF headers cached as small JSON files named by blob digest (hardware.md §4.2).

Ollama blobs are content-addressed and never change, so an entry never goes stale.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sourceprep_models.errors import SourceprepError
from sourceprep_models.fs import write_atomic
from sourceprep_models.memory.gguf import GGUFMetadata, TensorInfo

__all__ = ["MetadataCache"]

_CACHE_FORMAT = 1
_DIGEST_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


def _counts_from_json(value: object) -> int | tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise ValueError("bad head count")


def _opt_int(value: object) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError("expected an integer or null")


def _req_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("expected an integer")


def _to_json(meta: GGUFMetadata) -> dict[str, object]:
    def counts(value: int | tuple[int, ...]) -> int | list[int]:
        return value if isinstance(value, int) else list(value)

    return {
        "format": _CACHE_FORMAT,
        "architecture": meta.architecture,
        "file_type": meta.file_type,
        "block_count": meta.block_count,
        "context_length": meta.context_length,
        "embedding_length": meta.embedding_length,
        "head_count": counts(meta.head_count),
        "head_count_kv": counts(meta.head_count_kv),
        "key_length": meta.key_length,
        "value_length": meta.value_length,
        "vocab_size": meta.vocab_size,
        "sliding_window": meta.sliding_window,
        "file_size": meta.file_size,
        # Compact rows keep a 300-tensor model at about 20 kB.
        "tensors": [[t.name, t.ggml_type, list(t.shape), t.n_bytes] for t in meta.tensors],
    }


def _from_json(raw: object) -> GGUFMetadata:
    if not isinstance(raw, dict) or raw.get("format") != _CACHE_FORMAT:
        raise ValueError("not a metadata cache entry of this format")
    architecture = raw["architecture"]
    if not isinstance(architecture, str):
        raise ValueError("bad architecture")
    tensors = []
    rows = raw["tensors"]
    if not isinstance(rows, list):
        raise ValueError("bad tensor list")
    for row in rows:
        if not isinstance(row, list) or len(row) != 4 or not isinstance(row[0], str) or not isinstance(row[2], list):
            raise ValueError("bad tensor row")
        shape = tuple(_req_int(dim) for dim in row[2])
        tensors.append(TensorInfo(row[0], _req_int(row[1]), shape, _opt_int(row[3])))
    return GGUFMetadata(
        architecture=architecture,
        file_type=_opt_int(raw["file_type"]),
        block_count=_req_int(raw["block_count"]),
        context_length=_opt_int(raw["context_length"]),
        embedding_length=_req_int(raw["embedding_length"]),
        head_count=_counts_from_json(raw["head_count"]),
        head_count_kv=_counts_from_json(raw["head_count_kv"]),
        key_length=_opt_int(raw["key_length"]),
        value_length=_opt_int(raw["value_length"]),
        vocab_size=_opt_int(raw["vocab_size"]),
        sliding_window=_opt_int(raw["sliding_window"]),
        tensors=tuple(tensors),
        file_size=_opt_int(raw["file_size"]),
    )


class MetadataCache:
    """Parsed GGUF headers as one small JSON file per blob digest (hardware.md §4.2).

    A digest may be written ``sha256:<hex>`` or ``sha256-<hex>``. Unreadable or corrupt entries
    count as misses; a failed write is silently dropped, since the cache only saves time.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, digest: str) -> Path:
        name = digest.strip().replace(":", "-")
        if not _DIGEST_RE.match(name):
            raise ValueError(f"not a blob digest: {digest!r}")
        return self.directory / f"{name}.json"

    def get(self, digest: str) -> GGUFMetadata | None:
        try:
            raw = json.loads(self._path(digest).read_text(encoding="utf-8"))
            return _from_json(raw)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, digest: str, meta: GGUFMetadata) -> None:
        path = self._path(digest)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Readers see the old entry or the new one, never half a file.
            write_atomic(path, json.dumps(_to_json(meta), separators=(",", ":")))
        except (OSError, SourceprepError):
            pass  # the cache only saves time; a write it cannot make is a miss next time
