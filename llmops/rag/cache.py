"""Embedding cache keyed by (chunk id, embedder fingerprint): embed a chunk once, reuse it in every ingestion.

Layout, one folder per embedder under `<ws.home>/cache/embeddings/`:

    <fingerprint>/index.db            SQLite: chunk_id -> (batch file, row)
    <fingerprint>/batches/<uuid>.npy  one float32 array per embedded batch (np.save, never pickle)

A batch becomes visible in two steps, each atomic: the .npy is written to a temporary name and renamed
into place, then its rows are inserted in one SQLite transaction. A process killed between the two
leaves an unreferenced file (harmless; `prune` removes it), never a row pointing at a half-written file.
"""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np

from llmops.atomic import atomic_path
from llmops.digests import sha256_hex

_SQL_BATCH = 500


def _folder_name(fingerprint: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9._-]{1,80}", fingerprint) and fingerprint not in (".", ".."):
        return fingerprint
    return "fp-" + sha256_hex(fingerprint)[:40]


class EmbeddingCache:
    """Vectors of one embedder, by chunk id. Safe to share between processes and to kill at any point."""

    def __init__(self, root: Path, fingerprint: str, dim: int):
        self.fingerprint, self.dim = fingerprint, int(dim)
        self.dir = Path(root) / _folder_name(fingerprint)
        self.batches = self.dir / "batches"
        self.batches.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.dir / "index.db", timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (chunk_id TEXT PRIMARY KEY, file TEXT NOT NULL, "
                         "row INTEGER NOT NULL)")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('fingerprint', ?), ('dim', ?)", (fingerprint, str(self.dim)))
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if stored["fingerprint"] != fingerprint or int(stored["dim"]) != self.dim:
            raise ValueError(f"embedding cache {self.dir} belongs to {stored['fingerprint']} (dim {stored['dim']}), "
                             f"not {fingerprint} (dim {self.dim}); delete the folder to rebuild it")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def _locate(self, ids: list[str]) -> dict[str, tuple[str, int]]:
        where: dict[str, tuple[str, int]] = {}
        for i in range(0, len(ids), _SQL_BATCH):
            part = ids[i:i + _SQL_BATCH]
            marks = ",".join("?" * len(part))
            for cid, file, row in self._db.execute(
                    f"SELECT chunk_id, file, row FROM vectors WHERE chunk_id IN ({marks})", part):
                where[cid] = (file, row)
        return where

    def get(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, found): vectors is (len(ids), dim) float32, rows of ids not cached are zeros and found False."""
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        found = np.zeros(len(ids), dtype=bool)
        where = self._locate(list(dict.fromkeys(ids)))
        by_file: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for pos, cid in enumerate(ids):
            if cid in where:
                file, row = where[cid]
                by_file[file].append((pos, row))
        broken: list[str] = []
        for file, pairs in by_file.items():
            try:
                arr = np.load(self.batches / file, mmap_mode="r", allow_pickle=False)
                if arr.ndim != 2 or arr.shape[1] != self.dim or max(r for _, r in pairs) >= arr.shape[0]:
                    raise ValueError("shape")
            except (OSError, ValueError):
                broken.append(file)  # lost or damaged batch file: forget it and embed those chunks again
                continue
            pos = np.fromiter((p for p, _ in pairs), dtype=np.int64)
            rows = np.fromiter((r for _, r in pairs), dtype=np.int64)
            out[pos] = arr[rows]
            found[pos] = True
        if broken:
            self._db.executemany("DELETE FROM vectors WHERE file = ?", [(f,) for f in broken])
        return out, found

    def put(self, ids: list[str], vectors: np.ndarray) -> None:
        """Store one batch: atomic file write, then one transaction for its rows."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        if not ids:
            return
        name = f"{uuid.uuid4().hex}.npy"
        with atomic_path(self.batches / name) as tmp, open(tmp, "wb") as f:
            np.save(f, vectors, allow_pickle=False)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                                 [(cid, name, row) for row, cid in enumerate(ids)])

    def prune(self, older_than_s: float = 3600.0) -> int:
        """Delete batch files no row points at (left by a killed run); returns how many were removed.

        Only files older than `older_than_s` go, so a batch another process is committing right now stays.
        """
        used = {f for (f,) in self._db.execute("SELECT DISTINCT file FROM vectors")}
        cutoff, removed = time.time() - older_than_s, 0
        for p in self.batches.iterdir():
            name = p.name  # a temp file (.<name>.<random>.tmp) is never in `used`
            if name not in used and p.stat().st_mtime < cutoff:
                p.unlink(missing_ok=True)
                removed += 1
        return removed
