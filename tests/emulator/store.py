"""On-disk Ollama model store for the emulator (test infrastructure, not product code).

Lays out a real store the way Ollama does (ollama.md §6): Docker-v2 manifests under
``manifests/<host>/<namespace>/<model>/<tag>`` and content-addressed blobs under
``blobs/sha256-<hex>``, with the weights as a GGUF v3 file. The product reads this
store directly (to find and page-cache a model's GGUF), so it must be the real thing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .gguf import KV, ValueType, read_gguf, write_gguf

MIB = 1024 * 1024
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
TEMPLATE_TEXT = "{{ .Prompt }}"

# ggml file_type codes written to general.file_type (GGUF convention).
_FILE_TYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16,
    "Q5_K_M": 17, "Q6_K": 18, "BF16": 32,
}  # fmt: skip

# Name parts (ollama.md §2.2/§6): host may carry a port; tags allow dots and underscores.
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,349}$")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")


@dataclass
class EmulatedModel:
    """A model to place in the store. With ``blob_of`` set, the model is a Modelfile
    variant of that model: it shares the GGUF blob (and so the runner, ollama.md §4.1)
    and takes every other field from it; only its manifest differs (an extra system layer)."""

    name: str
    file_mib: float = 8
    capabilities: list[str] = field(default_factory=lambda: ["completion"])
    family: str = "llama"
    context_length: int = 32768
    block_count: int = 8
    embedding_length: int = 512
    head_count: int = 8
    head_count_kv: int = 2
    parameter_size: str = "1.0B"
    quantization_level: str = "Q4_K_M"
    blob_of: str | None = None


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def short(self) -> str:
        """Display form: default host/namespace dropped, tag always shown (ollama.md §2.2)."""
        if self.host.casefold() == DEFAULT_HOST:
            prefix = "" if self.namespace.casefold() == DEFAULT_NAMESPACE else f"{self.namespace}/"
        else:
            prefix = f"{self.host}/{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def key(self) -> tuple[str, str, str, str]:
        # ollama.md §6: each part is matched case-insensitively.
        return (self.host.casefold(), self.namespace.casefold(), self.model.casefold(), self.tag.casefold())

    def manifest_relpath(self) -> Path:
        return Path("manifests", self.host, self.namespace, self.model, self.tag)


def parse_name(text: str) -> ModelName | None:
    """Parse ``[host/][namespace/]model[:tag]`` with Ollama's defaults; None when invalid."""
    text = text.strip()
    if not text:
        return None
    tag = DEFAULT_TAG
    colon = text.rfind(":")
    if colon > text.rfind("/"):
        text, tag = text[:colon], text[colon + 1 :]
    parts = text.split("/")
    if len(parts) > 3:
        return None
    parts = [DEFAULT_HOST, DEFAULT_NAMESPACE][: 3 - len(parts)] + parts
    host, namespace, model = parts
    checks = ((_HOST_RE, host), (_NAMESPACE_RE, namespace), (_MODEL_RE, model), (_TAG_RE, tag))
    if not all(rx.match(value) for rx, value in checks):
        return None
    return ModelName(host, namespace, model, tag)


def normalize(text: str) -> str:
    """Short normalized name (``qwen3`` -> ``qwen3:latest``); unparsable input is returned as is."""
    parsed = parse_name(text)
    return parsed.short if parsed else text


def _parameter_count(size: str) -> int:
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMBT]?)\s*", size, re.IGNORECASE)
    if not match:
        return 0
    scale = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


def _gguf_metadata(spec: EmulatedModel, name: ModelName) -> list[KV]:
    arch = spec.family
    meta = [
        KV("general.architecture", ValueType.STRING, arch),
        # general.name makes every model's weights unique: only blob_of shares a blob.
        KV("general.name", ValueType.STRING, name.short),
        KV("general.alignment", ValueType.UINT32, 32),
        KV("general.parameter_count", ValueType.UINT64, _parameter_count(spec.parameter_size)),
        KV("general.file_type", ValueType.UINT32, _FILE_TYPES.get(spec.quantization_level.upper(), 15)),
        KV(f"{arch}.context_length", ValueType.UINT32, spec.context_length),
        KV(f"{arch}.block_count", ValueType.UINT32, spec.block_count),
        KV(f"{arch}.embedding_length", ValueType.UINT32, spec.embedding_length),
        KV(f"{arch}.attention.head_count", ValueType.UINT32, spec.head_count),
        KV(f"{arch}.attention.head_count_kv", ValueType.UINT32, spec.head_count_kv),
        KV("tokenizer.ggml.model", ValueType.STRING, "gpt2"),
        # More than 5 entries: /api/show returns it empty unless verbose (ollama.md §2.3).
        KV("tokenizer.ggml.tokens", ValueType.ARRAY, [f"<t{i}>" for i in range(8)], ValueType.STRING),
    ]
    if "embedding" in spec.capabilities:
        meta.append(KV(f"{arch}.pooling_type", ValueType.UINT32, 1))
    return meta


@dataclass
class StoredModel:
    """One manifest in the store, with what the API handlers need about it."""

    name: ModelName
    spec: EmulatedModel  # effective spec (a blob_of variant carries its owner's fields)
    owner: str  # short name of the model that owns the GGUF blob
    manifest_path: Path
    manifest_digest: str  # sha256 of the manifest bytes, no prefix (ollama.md §2.2)
    blob_path: Path
    size: int  # all layers + config blob (ollama.md §2.2)

    @property
    def short(self) -> str:
        return self.name.short

    @property
    def capabilities(self) -> list[str]:
        return list(self.spec.capabilities)

    def modified_at(self) -> datetime:
        # ollama.md §2.2: modified_at is the manifest file's mtime, in the local zone.
        return datetime.fromtimestamp(self.manifest_path.stat().st_mtime).astimezone()

    def details(self, *, with_lengths: bool) -> dict[str, Any]:
        spec = self.spec
        out: dict[str, Any] = {
            "parent_model": "",
            "format": "gguf",
            "family": spec.family,
            "families": [spec.family],
            "parameter_size": spec.parameter_size,
            "quantization_level": spec.quantization_level,
        }
        if with_lengths:  # ollama.md §2.2: tags/show carry these since v0.30, omitted when 0
            if spec.context_length:
                out["context_length"] = spec.context_length
            if spec.embedding_length:
                out["embedding_length"] = spec.embedding_length
        return out


class ModelStore:
    """Writes the store once, then answers name lookups against the manifests on disk."""

    def __init__(self, root: Path, models: list[EmulatedModel]) -> None:
        self.root = Path(root)
        self._models: list[StoredModel] = []
        self._gguf_cache: dict[Path, dict[str, Any]] = {}
        self._lock = threading.Lock()
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "manifests").mkdir(parents=True, exist_ok=True)
        self._write_all(models)

    # -- writing ---------------------------------------------------------------------------
    def _write_blob(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        path = self.blob_path(f"sha256:{digest}")
        if not path.exists():
            path.write_bytes(data)
        return f"sha256:{digest}", len(data)

    def _write_gguf_blob(self, spec: EmulatedModel, name: ModelName) -> tuple[str, int]:
        tmp = self.root / "blobs" / f".partial-{name.model}-{name.tag}"
        write_gguf(tmp, _gguf_metadata(spec, name), int(spec.file_mib * MIB))
        hasher = hashlib.sha256()
        with tmp.open("rb") as handle:
            while chunk := handle.read(MIB):
                hasher.update(chunk)
        digest = hasher.hexdigest()
        size = tmp.stat().st_size
        tmp.replace(self.blob_path(f"sha256:{digest}"))
        return f"sha256:{digest}", size

    def _write_all(self, models: list[EmulatedModel]) -> None:
        parsed: dict[str, tuple[ModelName, EmulatedModel]] = {}
        for spec in models:
            name = parse_name(spec.name)
            if name is None:
                raise ValueError(f"invalid model name {spec.name!r}")
            if name.short in parsed:
                raise ValueError(f"duplicate model {name.short!r}")
            parsed[name.short] = (name, spec)
        weights: dict[str, tuple[str, int]] = {}
        for short, (name, spec) in parsed.items():
            if spec.blob_of is None:
                weights[short] = self._write_gguf_blob(spec, name)
        base_time = time.time()
        for index, (short, (name, spec)) in enumerate(parsed.items()):
            owner, effective = short, spec
            if spec.blob_of is not None:
                owner = normalize(spec.blob_of)
                if owner not in weights:
                    raise ValueError(f"{spec.name}: blob_of {spec.blob_of!r} is not a model with its own blob")
                effective = replace(parsed[owner][1], name=spec.name, blob_of=spec.blob_of)
            model_digest, model_size = weights[owner]
            layers: list[dict[str, Any]] = [{"mediaType": MEDIA_MODEL, "digest": model_digest, "size": model_size}]
            template_digest, template_size = self._write_blob(TEMPLATE_TEXT.encode())
            layers.append({"mediaType": MEDIA_TEMPLATE, "digest": template_digest, "size": template_size})
            if spec.blob_of is not None:
                # A Modelfile variant: same weights, its own system prompt, its own manifest digest.
                sys_digest, sys_size = self._write_blob(f"You are {name.short}.".encode())
                layers.append({"mediaType": MEDIA_SYSTEM, "digest": sys_digest, "size": sys_size})
            config = {
                "model_format": "gguf",
                "model_family": effective.family,
                "model_families": [effective.family],
                "model_type": effective.parameter_size,
                "file_type": effective.quantization_level,
                "capabilities": list(effective.capabilities),
                "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
            }
            config_digest, config_size = self._write_blob(json.dumps(config, sort_keys=True).encode())
            manifest = {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
                "layers": layers,
            }
            raw = json.dumps(manifest, indent=None, separators=(",", ":")).encode()
            path = self.root / name.manifest_relpath()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw)
            # Deterministic /api/tags order (newest first): the first listed model is newest.
            stamp = base_time - index
            os.utime(path, (stamp, stamp))
            self._models.append(
                StoredModel(
                    name=name,
                    spec=effective,
                    owner=owner,
                    manifest_path=path,
                    manifest_digest=hashlib.sha256(raw).hexdigest(),
                    blob_path=self.blob_path(model_digest),
                    size=sum(layer["size"] for layer in layers) + config_size,  # ollama.md §2.2
                )
            )

    # -- reading ---------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        # ollama.md §6: digest "sha256:<hex>" is stored as blobs/sha256-<hex>.
        return self.root / "blobs" / digest.replace(":", "-")

    def models(self) -> list[StoredModel]:
        """Models whose manifest still exists, most recently modified first (ollama.md §2.2)."""
        present = [m for m in self._models if m.manifest_path.exists()]
        return sorted(present, key=lambda m: m.manifest_path.stat().st_mtime_ns, reverse=True)

    def lookup(self, name: str | ModelName) -> StoredModel | None:
        parsed = parse_name(name) if isinstance(name, str) else name
        if parsed is None:
            return None
        for model in self._models:
            # ollama.md §2.5 step 3 / §6: case-insensitive match against local manifests.
            if model.name.key == parsed.key and model.manifest_path.exists():
                return model
        return None

    def owner_of(self, name: str) -> str | None:
        model = self.lookup(name)
        return model.owner if model else None

    def gguf_metadata(self, model: StoredModel) -> dict[str, Any]:
        """GGUF key/values read back from the blob on disk (cached per blob)."""
        with self._lock:
            cached = self._gguf_cache.get(model.blob_path)
        if cached is None:
            cached = read_gguf(model.blob_path).metadata
            with self._lock:
                self._gguf_cache[model.blob_path] = cached
        return cached

    def gguf_tensors(self, model: StoredModel) -> list[dict[str, Any]]:
        return [{"name": t.name, "type": "I8", "shape": t.shape} for t in read_gguf(model.blob_path).tensors]
