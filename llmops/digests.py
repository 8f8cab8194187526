"""Content digests: canonical JSON and sha256 of bytes, text and files.

One definition each, because a digest is only useful if every writer and every reader computes it
the same way (registry versions, chunk ids, manifests, model fingerprints).

    >>> canonical_json({"b": 1, "a": [1.5, "é"]})
    '{"a":[1.5,"é"],"b":1}'
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["canonical_json", "sha256_file", "sha256_hex", "sha256_json"]


def canonical_json(obj) -> str:
    """Sorted keys, no spaces, no NaN: the same content always gives the same text, so the same digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(data: bytes | str) -> str:
    """sha256 of bytes, or of text encoded as UTF-8."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def sha256_json(obj) -> str:
    """sha256 of `canonical_json(obj)`."""
    return sha256_hex(canonical_json(obj))


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks (hashlib.file_digest), so big weights never sit in memory."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
