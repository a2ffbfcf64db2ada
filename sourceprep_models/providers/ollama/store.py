"""Find the weight files of an Ollama model on disk, so they can be warmed into the page cache.

The layout is described in ollama.md §6: a store root holding ``manifests/<host>/<namespace>/
<model>/<tag>`` (Docker-v2-style JSON) and content-addressed ``blobs/sha256-<hex>``. Nothing here
talks to a server; this only works when the store is on this machine and readable by us.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
PROJECTOR_MEDIA_TYPE = "application/vnd.ollama.image.projector"

# Where the Linux install script's systemd service (user ``ollama``) keeps its store (ollama.md §6).
LINUX_SERVICE_ROOT = Path("/usr/share/ollama/.ollama/models")

# Ollama itself only accepts sha256 digests, written with ':' in manifests and '-' on disk. Checking
# the shape also keeps a hand-edited manifest from pointing outside ``blobs/``.
_DIGEST_RE = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")
_FROM_RE = re.compile(r"^\s*FROM\s+(.+?)\s*$", re.IGNORECASE)


class StoreError(ValueError):
    """A model's files cannot be found or read from the store; the message is one line."""


@dataclass(frozen=True)
class WeightFile:
    """One blob the runner maps: the GGUF weights or a vision projector."""

    path: Path
    digest: str
    size: int
    media_type: str


def store_roots(environ: Mapping[str, str], home: Path | None = None) -> list[Path]:
    """Candidate store roots in the order to try them; the caller checks which exist.

    ``OLLAMA_MODELS`` replaces the per-user default, as it does for the server. The Linux
    service's root is always offered last, since the server usually runs as another user than us.
    """
    roots: list[Path] = []
    override = environ.get("OLLAMA_MODELS", "").strip()
    if override:
        roots.append(Path(override).expanduser())
    else:
        base = home if home is not None else _home(environ)
        if base is not None:
            roots.append(base / ".ollama" / "models")
    if LINUX_SERVICE_ROOT not in roots:
        roots.append(LINUX_SERVICE_ROOT)
    return roots


def split_name(name: str) -> tuple[str, str, str, str]:
    """``(host, namespace, model, tag)`` of a model name, with Ollama's defaults filled in.

    Accepts ``model``, ``model:tag``, ``user/model:tag``, ``host/namespace/model:tag`` (for example
    ``hf.co/org/repo:Q4_K_M``), an ``http(s)://`` prefix, and ignores a ``+build`` or ``@digest``
    suffix, which are not part of the manifest path. Raises ``StoreError`` for anything else.
    """
    text = name.strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.split("@", 1)[0]
    segments = text.split("/")
    if len(segments) > 3 or any(not part for part in segments):
        raise StoreError(f"{name!r} is not a model name of the form [host/][namespace/]model[:tag]")
    last = segments[-1].split("+", 1)[0]
    model, sep, tag = last.partition(":")
    if not model or (sep and not tag) or ":" in tag:
        raise StoreError(f"{name!r} is not a model name of the form [host/][namespace/]model[:tag]")
    host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    if len(segments) == 3:
        host, namespace = segments[0], segments[1]
    elif len(segments) == 2:
        namespace = segments[0]
    parts = (host, namespace, model, tag or DEFAULT_TAG)
    if any(part in (".", "..") for part in parts):
        raise StoreError(f"{name!r} is not a model name of the form [host/][namespace/]model[:tag]")
    return parts


def manifest_path(root: Path, name: str) -> Path | None:
    """The manifest file of ``name`` under ``root``, or None when there is none (or the name is invalid).

    Each path part is matched case-insensitively against what exists, as the server does
    (ollama.md §6); an exact match wins when several entries differ only in case.
    """
    try:
        parts = split_name(name)
    except StoreError:
        return None
    current = root / "manifests"
    for part in parts:
        found = _child_ignoring_case(current, part)
        if found is None:
            return None
        current = found
    return current if current.is_file() else None


def weight_files(root: Path, name: str) -> list[WeightFile]:
    """The model layer and any projector layers of ``name`` in the store at ``root``.

    Raises ``StoreError`` when the name is invalid, the manifest is missing or unreadable, it has
    no model layer, or a referenced blob is absent.
    """
    split_name(name)  # raises on an invalid name, before the weaker "not found" below
    path = manifest_path(root, name)
    if path is None:
        raise StoreError(f"no manifest for {name} under {root / 'manifests'}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"cannot read manifest {path}: {_one_line(exc)}") from exc
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list):
        raise StoreError(f"manifest {path} has no layers list")

    found: list[WeightFile] = []
    for layer in layers:
        if not isinstance(layer, dict):
            raise StoreError(f"manifest {path} has a layer that is not an object")
        media_type = layer.get("mediaType")
        if media_type not in (MODEL_MEDIA_TYPE, PROJECTOR_MEDIA_TYPE):
            continue
        digest = layer.get("digest")
        match = _DIGEST_RE.match(digest) if isinstance(digest, str) else None
        if match is None:
            raise StoreError(f"manifest {path} has a {media_type} layer with a bad digest {digest!r}")
        blob = root / "blobs" / f"sha256-{match.group(1)}"
        try:
            size = blob.stat().st_size
        except OSError as exc:
            raise StoreError(f"blob {blob.name} of {name} is missing from {root / 'blobs'}: {_one_line(exc)}") from exc
        declared = layer.get("size")
        if isinstance(declared, int) and not isinstance(declared, bool) and declared != size:
            raise StoreError(
                f"blob {blob.name} of {name} is {size} bytes but its manifest says {declared} (incomplete?)"
            )
        found.append(WeightFile(path=blob, digest=f"sha256:{match.group(1)}", size=size, media_type=media_type))

    # The weights first, projectors after, whatever order the manifest lists them in.
    found.sort(key=lambda item: item.media_type != MODEL_MEDIA_TYPE)
    if not found or found[0].media_type != MODEL_MEDIA_TYPE:
        raise StoreError(f"manifest {path} has no {MODEL_MEDIA_TYPE} layer (not a GGUF model?)")
    return found


def find_weight_files(name: str, environ: Mapping[str, str], roots: Iterable[Path] | None = None) -> list[WeightFile]:
    """``weight_files`` from the first root that has a manifest for ``name``.

    ``roots`` defaults to ``store_roots(environ)``. When a root has the manifest but it is broken,
    later roots are still tried; if none works, the first such error is raised, otherwise a
    "not found" ``StoreError`` naming the roots searched.
    """
    candidates = list(roots) if roots is not None else store_roots(environ)
    split_name(name)
    first_error: StoreError | None = None
    for root in candidates:
        if manifest_path(root, name) is None:
            continue
        try:
            return weight_files(root, name)
        except StoreError as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    searched = ", ".join(str(root) for root in candidates) or "(no store roots)"
    raise StoreError(f"{name} is not in any Ollama store searched: {searched}")


def blob_from_modelfile(modelfile: str) -> Path | None:
    """The absolute blob path on the ``FROM`` line of ``/api/show``'s modelfile (ollama.md §2.3).

    Only meaningful on the server's own filesystem. Returns None when there is no ``FROM`` line or
    it names a model rather than a file (a relative name such as ``FROM llama3.2``).
    """
    for line in modelfile.splitlines():
        match = _FROM_RE.match(line)
        if match is None:
            continue
        target = match.group(1)
        if len(target) >= 2 and target[0] == target[-1] and target[0] in "\"'":
            target = target[1:-1]
        path = Path(target)
        if path.is_absolute() or _is_windows_absolute(target):
            return path
        return None
    return None


def _home(environ: Mapping[str, str]) -> Path | None:
    value = environ.get("HOME") or environ.get("USERPROFILE")
    if value:
        return Path(value)
    try:
        return Path.home()
    except RuntimeError:
        return None


def _child_ignoring_case(directory: Path, part: str) -> Path | None:
    exact = directory / part
    if exact.exists():
        return exact
    wanted = part.casefold()
    try:
        with os.scandir(directory) as entries:
            matches = sorted(entry.name for entry in entries if entry.name.casefold() == wanted)
    except OSError:
        return None
    return directory / matches[0] if matches else None


def _is_windows_absolute(text: str) -> bool:
    return bool(re.match(r"^[A-Za-z]:[\\/]", text)) or text.startswith("\\\\")


def _one_line(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(text.split()) or type(exc).__name__
