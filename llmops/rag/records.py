"""Chunk records: chunks.jsonl rows (one per distinct chunk text, with every place it occurs).

    {"id": "<sha256>", "text": "...", "occurrences": [{"source": "rag/docs/a.md", "doc_id": "...", "seq": 0, "n": 0}]}

`n` is the chunk's position within its source file, so the chunks of an unchanged file can be taken
back from the previous version in their order instead of parsing and chunking the file again.
"""

from __future__ import annotations

from typing import Any

from llmops.errors import LLMOpsError
from llmops.rag.chunking import Chunk, faiss_id


def merge_chunks(chunks: list[Chunk]) -> list[dict[str, Any]]:
    """Chunk records, one per distinct id in first-seen order; a text that repeats lists every occurrence."""
    records: dict[str, dict[str, Any]] = {}
    counters: dict[str, int] = {}
    for c in chunks:
        n = counters.get(c.source, 0)
        counters[c.source] = n + 1
        occ = {**c.occurrence(), "n": n}
        rec = records.get(c.id)
        if rec is None:
            records[c.id] = {"id": c.id, "text": c.text, "occurrences": [occ]}
        else:
            rec["occurrences"].append(occ)
    return list(records.values())


def chunks_by_source(records: list[dict[str, Any]]) -> dict[str, list[Chunk]]:
    """The inverse of merge_chunks: each source's chunks in their original order."""
    by_source: dict[str, list[tuple[int, Chunk]]] = {}
    for rec in records:
        for occ in rec["occurrences"]:
            by_source.setdefault(occ["source"], []).append((occ["n"], Chunk(
                rec["id"], rec["text"], occ["source"], occ["doc_id"], occ["seq"], occ.get("start"),
                occ.get("metadata", {}))))
    return {s: [c for _, c in sorted(pairs, key=lambda p: p[0])] for s, pairs in by_source.items()}


def faiss_ids(records: list[dict[str, Any]]):
    """The int64 FAISS ids of the records, refusing a collision (60-bit prefixes of sha256: practically never)."""
    import numpy as np

    ids = np.array([faiss_id(r["id"]) for r in records], dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise LLMOpsError("two chunk ids share a FAISS id; change the chunker settings slightly and ingest again")
    return ids
