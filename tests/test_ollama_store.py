"""Finding a model's weight files in a fake Ollama store laid out as ollama.md §6 describes."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from sourceprep_models.providers.ollama.store import (
    DEFAULT_HOST,
    LINUX_SERVICE_ROOT,
    MODEL_MEDIA_TYPE,
    PROJECTOR_MEDIA_TYPE,
    StoreError,
    WeightFile,
    blob_from_modelfile,
    find_weight_files,
    manifest_path,
    split_name,
    store_roots,
    weight_files,
)

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
TEMPLATE_TYPE = "application/vnd.ollama.image.template"
PARAMS_TYPE = "application/vnd.ollama.image.params"


def add_blob(root: Path, content: bytes) -> str:
    """Store ``content`` as a blob and return its digest in manifest form (``sha256:<hex>``)."""
    hexdigest = hashlib.sha256(content).hexdigest()
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / f"sha256-{hexdigest}").write_bytes(content)
    return f"sha256:{hexdigest}"


def layer(root: Path, media_type: str, content: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": add_blob(root, content), "size": len(content)}


def add_manifest(root: Path, parts: tuple[str, str, str, str], layers: list[dict[str, object]]) -> Path:
    """Write a Docker-v2-style manifest at ``manifests/<host>/<namespace>/<model>/<tag>``."""
    config = layer(root, CONFIG_TYPE, json.dumps({"model_format": "gguf", "model_family": "llama"}).encode())
    path = root.joinpath("manifests", *parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config, "layers": layers}))
    return path


def add_model(root: Path, parts: tuple[str, str, str, str], weights: bytes = b"GGUF weights") -> Path:
    return add_manifest(
        root,
        parts,
        [layer(root, MODEL_MEDIA_TYPE, weights), layer(root, TEMPLATE_TYPE, b"{{ .Prompt }}")],
    )


# --- store_roots ---------------------------------------------------------------------------------


def test_store_roots_default_is_home_then_linux_service(tmp_path: Path) -> None:
    assert store_roots({}, home=tmp_path) == [tmp_path / ".ollama" / "models", LINUX_SERVICE_ROOT]


def test_store_roots_home_from_environ(tmp_path: Path) -> None:
    assert store_roots({"HOME": str(tmp_path)})[0] == tmp_path / ".ollama" / "models"


def test_store_roots_ollama_models_replaces_home(tmp_path: Path) -> None:
    roots = store_roots({"OLLAMA_MODELS": str(tmp_path / "store")}, home=tmp_path)
    assert roots == [tmp_path / "store", LINUX_SERVICE_ROOT]


def test_store_roots_does_not_repeat_the_service_root() -> None:
    assert store_roots({"OLLAMA_MODELS": str(LINUX_SERVICE_ROOT)}) == [LINUX_SERVICE_ROOT]


def test_store_roots_ignores_blank_override(tmp_path: Path) -> None:
    assert store_roots({"OLLAMA_MODELS": "  "}, home=tmp_path)[0] == tmp_path / ".ollama" / "models"


# --- split_name ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("llama3.2", (DEFAULT_HOST, "library", "llama3.2", "latest")),
        ("llama3.2:1b", (DEFAULT_HOST, "library", "llama3.2", "1b")),
        ("myuser/foo:7b", (DEFAULT_HOST, "myuser", "foo", "7b")),
        ("hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M", ("hf.co", "bartowski", "Llama-3.2-1B-GGUF", "Q4_K_M")),
        ("hf.co/org/repo", ("hf.co", "org", "repo", "latest")),
        ("https://hf.co/org/repo:q8_0", ("hf.co", "org", "repo", "q8_0")),
        ("registry.ollama.ai/library/qwen3:8b", (DEFAULT_HOST, "library", "qwen3", "8b")),
        ("mistral:7b+Q4_0", (DEFAULT_HOST, "library", "mistral", "7b")),
        ("mistral:7b@sha256-" + "a" * 64, (DEFAULT_HOST, "library", "mistral", "7b")),
        ("  gemma3  ", (DEFAULT_HOST, "library", "gemma3", "latest")),
    ],
)
def test_split_name(name: str, parts: tuple[str, str, str, str]) -> None:
    assert split_name(name) == parts


@pytest.mark.parametrize("name", ["", "a/b/c/d", "a//b", "model:", ":tag", "../x", "ns/..", "a:b:c"])
def test_split_name_rejects(name: str) -> None:
    with pytest.raises(StoreError, match="not a model name"):
        split_name(name)


# --- manifest_path -------------------------------------------------------------------------------


def test_manifest_path_fills_defaults(tmp_path: Path) -> None:
    path = add_model(tmp_path, (DEFAULT_HOST, "library", "llama3.2", "latest"))
    assert manifest_path(tmp_path, "llama3.2") == path
    assert manifest_path(tmp_path, "llama3.2:latest") == path
    assert manifest_path(tmp_path, "library/llama3.2") == path


def test_manifest_path_matches_each_part_ignoring_case(tmp_path: Path) -> None:
    path = add_model(tmp_path, ("Registry.Ollama.AI", "Library", "Llama3.2", "Latest"))
    assert manifest_path(tmp_path, "llama3.2") == path
    assert manifest_path(tmp_path, "LLAMA3.2:LATEST") == path


def test_manifest_path_prefers_exact_case(tmp_path: Path) -> None:
    upper = add_model(tmp_path, (DEFAULT_HOST, "library", "Foo", "latest"))
    if (upper.parent.parent / "foo").exists():
        pytest.skip("case-insensitive file system: Foo and foo are one directory")
    lower = add_model(tmp_path, (DEFAULT_HOST, "library", "foo", "latest"))
    assert manifest_path(tmp_path, "foo") == lower
    assert manifest_path(tmp_path, "Foo") == upper
    assert manifest_path(tmp_path, "FOO") in (lower, upper)


def test_manifest_path_namespaces_and_hosts(tmp_path: Path) -> None:
    user = add_model(tmp_path, (DEFAULT_HOST, "myuser", "foo", "7b"))
    hf = add_model(tmp_path, ("hf.co", "bartowski", "Llama-3.2-1B-GGUF", "Q4_K_M"))
    assert manifest_path(tmp_path, "myuser/foo:7b") == user
    assert manifest_path(tmp_path, "foo:7b") is None  # library/foo is another model
    assert manifest_path(tmp_path, "hf.co/bartowski/llama-3.2-1b-gguf:q4_k_m") == hf


def test_manifest_path_missing(tmp_path: Path) -> None:
    add_model(tmp_path, (DEFAULT_HOST, "library", "llama3.2", "latest"))
    assert manifest_path(tmp_path, "llama3.2:1b") is None
    assert manifest_path(tmp_path, "qwen3") is None
    assert manifest_path(tmp_path / "nowhere", "llama3.2") is None
    assert manifest_path(tmp_path, "a/b/c/d") is None


def test_manifest_path_tag_must_be_a_file(tmp_path: Path) -> None:
    (tmp_path / "manifests" / DEFAULT_HOST / "library" / "odd" / "latest").mkdir(parents=True)
    assert manifest_path(tmp_path, "odd") is None


# --- weight_files --------------------------------------------------------------------------------


def test_weight_files_model_layer(tmp_path: Path) -> None:
    weights = b"GGUF" + bytes(1000)
    add_model(tmp_path, (DEFAULT_HOST, "library", "llama3.2", "latest"), weights)
    hexdigest = hashlib.sha256(weights).hexdigest()
    assert weight_files(tmp_path, "llama3.2") == [
        WeightFile(
            path=tmp_path / "blobs" / f"sha256-{hexdigest}",
            digest=f"sha256:{hexdigest}",
            size=len(weights),
            media_type=MODEL_MEDIA_TYPE,
        )
    ]


def test_weight_files_model_first_then_projectors(tmp_path: Path) -> None:
    add_manifest(
        tmp_path,
        (DEFAULT_HOST, "library", "llava", "7b"),
        [
            layer(tmp_path, PROJECTOR_MEDIA_TYPE, b"mmproj"),
            layer(tmp_path, TEMPLATE_TYPE, b"template"),
            layer(tmp_path, MODEL_MEDIA_TYPE, b"weights"),
            layer(tmp_path, PARAMS_TYPE, b"{}"),
        ],
    )
    found = weight_files(tmp_path, "llava:7b")
    assert [item.media_type for item in found] == [MODEL_MEDIA_TYPE, PROJECTOR_MEDIA_TYPE]
    assert [item.path.read_bytes() for item in found] == [b"weights", b"mmproj"]


def test_weight_files_accepts_dash_digest(tmp_path: Path) -> None:
    entry = layer(tmp_path, MODEL_MEDIA_TYPE, b"weights")
    entry["digest"] = str(entry["digest"]).replace(":", "-")
    add_manifest(tmp_path, (DEFAULT_HOST, "library", "m", "latest"), [entry])
    assert weight_files(tmp_path, "m")[0].digest.startswith("sha256:")


def test_weight_files_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=re.escape("no manifest for llama3.2")):
        weight_files(tmp_path, "llama3.2")


def test_weight_files_invalid_name(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a model name"):
        weight_files(tmp_path, "a/b/c/d")


def test_weight_files_missing_blob(tmp_path: Path) -> None:
    add_model(tmp_path, (DEFAULT_HOST, "library", "llama3.2", "latest"), b"weights")
    (tmp_path / "blobs" / f"sha256-{hashlib.sha256(b'weights').hexdigest()}").unlink()
    with pytest.raises(StoreError, match="missing") as info:
        weight_files(tmp_path, "llama3.2")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        json.dumps({"schemaVersion": 2}),
        json.dumps({"layers": ["x"]}),
        "\udcff",
    ],
    ids=["syntax", "not-object", "no-layers", "layer-not-object", "bad-utf8"],
)
def test_weight_files_corrupt_manifest(tmp_path: Path, text: str) -> None:
    path = tmp_path / "manifests" / DEFAULT_HOST / "library" / "broken" / "latest"
    path.parent.mkdir(parents=True)
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(StoreError, match="manifest") as info:
        weight_files(tmp_path, "broken")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_weight_files_without_model_layer(tmp_path: Path) -> None:
    add_manifest(
        tmp_path,
        (DEFAULT_HOST, "library", "mlx", "latest"),
        [layer(tmp_path, "application/vnd.ollama.image.tensor", b"safetensors")],
    )
    with pytest.raises(StoreError, match=re.escape(f"no {MODEL_MEDIA_TYPE} layer")):
        weight_files(tmp_path, "mlx")


def test_weight_files_projector_without_model(tmp_path: Path) -> None:
    add_manifest(tmp_path, (DEFAULT_HOST, "library", "p", "latest"), [layer(tmp_path, PROJECTOR_MEDIA_TYPE, b"x")])
    with pytest.raises(StoreError, match=re.escape(f"no {MODEL_MEDIA_TYPE} layer")):
        weight_files(tmp_path, "p")


@pytest.mark.parametrize("digest", ["sha256:../../etc/passwd", "md5:abc", "sha256:" + "z" * 64, None])
def test_weight_files_bad_digest(tmp_path: Path, digest: object) -> None:
    add_manifest(
        tmp_path, (DEFAULT_HOST, "library", "m", "latest"), [{"mediaType": MODEL_MEDIA_TYPE, "digest": digest}]
    )
    with pytest.raises(StoreError, match="bad digest"):
        weight_files(tmp_path, "m")


def test_weight_files_size_mismatch(tmp_path: Path) -> None:
    entry = layer(tmp_path, MODEL_MEDIA_TYPE, b"weights")
    entry["size"] = 10**9
    add_manifest(tmp_path, (DEFAULT_HOST, "library", "m", "latest"), [entry])
    with pytest.raises(StoreError, match="incomplete"):
        weight_files(tmp_path, "m")


# --- find_weight_files ---------------------------------------------------------------------------


def test_find_weight_files_tries_roots_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    add_model(first, (DEFAULT_HOST, "library", "other", "latest"))
    add_model(second, (DEFAULT_HOST, "library", "llama3.2", "latest"), b"second")
    found = find_weight_files("llama3.2", {}, roots=[first, tmp_path / "absent", second])
    assert found[0].path.parent == second / "blobs"
    assert found[0].path.read_bytes() == b"second"


def test_find_weight_files_first_root_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    add_model(first, (DEFAULT_HOST, "library", "m", "latest"), b"first")
    add_model(second, (DEFAULT_HOST, "library", "m", "latest"), b"second")
    assert find_weight_files("m", {}, roots=[first, second])[0].path.read_bytes() == b"first"


def test_find_weight_files_skips_a_broken_root(tmp_path: Path) -> None:
    broken, good = tmp_path / "broken", tmp_path / "good"
    add_model(broken, (DEFAULT_HOST, "library", "m", "latest"), b"gone")
    (broken / "blobs" / f"sha256-{hashlib.sha256(b'gone').hexdigest()}").unlink()
    add_model(good, (DEFAULT_HOST, "library", "m", "latest"), b"here")
    assert find_weight_files("m", {}, roots=[broken, good])[0].path.read_bytes() == b"here"
    with pytest.raises(StoreError, match="missing"):
        find_weight_files("m", {}, roots=[broken])


def test_find_weight_files_uses_ollama_models(tmp_path: Path) -> None:
    store = tmp_path / "custom-store"
    add_model(store, (DEFAULT_HOST, "sourceprep-test", "unique-model", "v1"), b"custom")
    found = find_weight_files("sourceprep-test/unique-model:v1", {"OLLAMA_MODELS": str(store)})
    assert found[0].path.read_bytes() == b"custom"


def test_find_weight_files_not_found_names_roots(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not in any Ollama store") as info:
        find_weight_files("m", {}, roots=[tmp_path / "a", tmp_path / "b"])
    assert str(tmp_path / "a") in str(info.value)
    assert str(tmp_path / "b") in str(info.value)


def test_find_weight_files_invalid_name(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a model name"):
        find_weight_files("a/b/c/d", {}, roots=[tmp_path])


# --- blob_from_modelfile -------------------------------------------------------------------------

SHOW_MODELFILE = """# Modelfile generated by "ollama show"
# To build a new Modelfile based on this, replace FROM with:
# FROM llama3.2:latest

FROM /srv/ollama/models/blobs/sha256-{hex}
TEMPLATE \"\"\"{{{{ .Prompt }}}}\"\"\"
PARAMETER stop <|eot_id|>
"""


def test_blob_from_modelfile() -> None:
    text = SHOW_MODELFILE.format(hex="ab" * 32)
    assert blob_from_modelfile(text) == Path("/srv/ollama/models/blobs/sha256-" + "ab" * 32)


def test_blob_from_modelfile_quoted_and_windows() -> None:
    assert blob_from_modelfile('FROM "/srv/with space/sha256-1"') == Path("/srv/with space/sha256-1")
    windows = r"FROM C:\Users\me\.ollama\models\blobs\sha256-1"
    assert blob_from_modelfile(windows) == Path(r"C:\Users\me\.ollama\models\blobs\sha256-1")


@pytest.mark.parametrize("text", ["", "TEMPLATE x", "# FROM /srv/x", "FROM llama3.2:latest", "FROM ./model.gguf"])
def test_blob_from_modelfile_none(text: str) -> None:
    assert blob_from_modelfile(text) is None
