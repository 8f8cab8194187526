"""The generation cache: predictions kept per resolved target, keyed by the exact input.

One JSON file per target key, `.llmops/cache/evals/<key>.json`, mapping an input key to the
generated text. The target key is the digest of every version the target resolved to (their
content digests, not their aliases) and of the generation parameters, so moving an alias,
pushing a new prompt or changing `max_tokens` misses, and a re-run with nothing changed
generates nothing. Files are written atomically; a concurrent writer's entries are merged in.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from llmops.atomic import atomic_write
from llmops.digests import canonical_json, sha256_hex, sha256_json

__all__ = ["GenerationCache", "input_key", "target_key"]

log = logging.getLogger(__name__)


def target_key(versions: dict[str, str], generation: dict[str, Any]) -> str:
    """`versions`: ref -> digest of everything the target resolved to."""
    return sha256_json({"versions": versions, "generation": generation})


def input_key(inputs: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(inputs))


class GenerationCache:
    """Cached predictions of one target key."""

    def __init__(self, folder: Path, key: str):
        self.path = folder / f"{key}.json"
        self.entries: dict[str, str] = self._read()

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("ignoring an unreadable eval cache file %s", self.path)
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def update(self, new: dict[str, str]) -> None:
        """Add entries and write the file (merged with what another process may have written)."""
        if not new:
            return
        self.entries = {**self._read(), **self.entries, **new}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self.entries, ensure_ascii=False, sort_keys=True))
