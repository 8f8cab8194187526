"""A model's identity as a digest of its files, so lineage can name the exact base model.

The fingerprint is sha256 over the canonical JSON of `{relative file name: sha256}` for
every file that changes what the model says: weights, tokenizer files, the chat
template, and the model and generation configs. A GGUF file carries its tokenizer and
chat template inside, so for GGUF models the one file is the whole fingerprint.

Hashing a ~100 MB GGUF takes a fraction of a second, so `model_spec` keeps the sha256 of
big files in a cache folder (the per-user cache unless told otherwise) keyed by
(path, size, mtime). Registering is the caller's: this layer builds the spec, the
registry stores it:

    ws.registry.push("model", "smollm2", spec=model_spec("smollm2"))
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.atomic import atomic_write
from llmops.digests import sha256_file, sha256_json
from llmops.models.sources import DEFAULT_MODEL, SMOLLM2_ALIASES, resolve_source

__all__ = ["ModelFingerprint", "fingerprint", "model_spec"]

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin")
MODEL_FILES = (
    "config.json", "generation_config.json", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
)
# Files smaller than this are rehashed every time: cheaper than a cache lookup that may be stale.
CACHE_MIN_BYTES = 1 << 20
CACHE_FILE = "sha256.json"


@dataclass(frozen=True)
class ModelFingerprint:
    digest: str
    files: dict[str, str] = field(default_factory=dict)


class _HashCache:
    """sha256 of big files, keyed by (absolute path, size, mtime_ns), in one JSON file."""

    def __init__(self, folder: Path | None):
        self.path = folder / CACHE_FILE if folder is not None else None
        self.entries: dict[str, Any] = {}
        self.dirty = False
        if self.path is not None and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                log.warning("ignoring unreadable fingerprint cache %s", self.path)

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        if self.path is None or stat.st_size < CACHE_MIN_BYTES:
            return sha256_file(path)
        key = str(path.resolve())
        hit = self.entries.get(key)
        if isinstance(hit, dict) and hit.get("size") == stat.st_size and hit.get("mtime_ns") == stat.st_mtime_ns:
            return str(hit["sha256"])
        digest = sha256_file(path)
        self.entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        try:  # a concurrent reader sees the old file or the new one, never half of one
            atomic_write(self.path, json.dumps(self.entries, sort_keys=True, indent=1))
        except OSError as exc:  # a read-only cache only costs the time to hash again
            log.warning("could not save the fingerprint cache %s: %s", self.path, exc)


def fingerprint(source: str | os.PathLike[str] = DEFAULT_MODEL, *,
                cache_dir: str | os.PathLike[str] | None = None) -> ModelFingerprint:
    """Hash the files of a local model (see the module docstring); `cache_dir` keeps big-file hashes.

    >>> fingerprint("smollm2").files            # doctest: +SKIP
    {'SmolLM2-135M-Instruct.Q4_1.gguf': '5a1c...'}
    """
    src = resolve_source(source)
    if src.gguf_file:
        names = [src.gguf_file]
    else:
        names = sorted(p.name for p in src.folder.iterdir()
                       if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name in MODEL_FILES))
    cache = _HashCache(Path(cache_dir) if cache_dir is not None else None)
    files = {name: cache.sha256(src.folder / name) for name in names}
    cache.save()
    return ModelFingerprint(digest=sha256_json({"files": files}), files=files)


def model_spec(source: str | os.PathLike[str] = DEFAULT_MODEL, *,
               cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The spec of a `model/<name>` asset for a local model; it loads back with `load_backend(spec)`.

    Weights stay where they are (a model is not copied into the store); the spec pins them by
    fingerprint, so pushing it again for unchanged files gives the existing version. `cache_dir`
    keeps big-file hashes (default: the per-user cache, llmops.cachedir).

    >>> model_spec("smollm2")                   # doctest: +SKIP
    {'backend': 'transformers', 'source': 'smollm2', 'fingerprint': '5a1c...'}
    """
    text = os.fspath(source)
    src = resolve_source(text)
    # The embedded model keeps its name (portable across machines); paths are made absolute.
    if text.lower() in SMOLLM2_ALIASES:
        spec_source = text.lower()
    else:
        spec_source = str(src.folder / src.gguf_file) if src.gguf_file else str(src.folder)
    if cache_dir is None:
        from llmops.cachedir import user_cache_dir

        cache_dir = user_cache_dir("fingerprints")
    fp = fingerprint(spec_source, cache_dir=cache_dir)
    return {"backend": "transformers", "source": spec_source, "fingerprint": fp.digest}
