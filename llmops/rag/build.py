"""From chunk records to verified index files: embed (through the cache), build, tune, write, read back.

The files are written in a private folder under `<ws.home>/cache/rag-build/` and read back before
anything is published, so the registry never holds an index whose vectors and chunk records disagree.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.errors import LLMOpsError
from llmops.rag.manifest import CHUNKS_FILE, INDEX_FILE, TuningRecord, read_records
from llmops.rag.progress import Progress
from llmops.rag.spec import TuneSpec


def embed_records(cache, embedder, records: list[dict[str, Any]], batch_size: int, progress: Progress):
    """(vectors, how many were embedded): cached vectors are reused; the rest are embedded longest first,
    one cache file per batch, so a killed run keeps what it embedded."""
    ids = [r["id"] for r in records]
    vectors, found = cache.get(ids)
    missing = [i for i in range(len(ids)) if not found[i]]
    missing.sort(key=lambda i: -len(records[i]["text"]))
    batches = [missing[i:i + batch_size] for i in range(0, len(missing), batch_size)]
    progress("embedding batches", 0, len(batches))
    for b, rows in enumerate(batches, start=1):
        vecs = embedder.encode([records[i]["text"] for i in rows], batch_size=batch_size, show_progress=False)
        cache.put([ids[i] for i in rows], vecs)
        vectors[rows] = vecs
        progress("embedding batches", b, len(batches))
    return vectors, len(missing)


@dataclass
class Built:
    index: Any
    search_params: dict[str, int]
    tuning: TuningRecord | None
    seconds: float


def build(vectors, ids, plan, tune: TuneSpec | None, embedder, records: list[dict[str, Any]]) -> Built:
    """The FAISS index, with efSearch/nprobe tuned on chunk-text queries when the spec asks for it."""
    from llmops.rag.index import build_index, sample_queries, tune_index

    t0 = time.perf_counter()
    index = build_index(vectors, ids, plan)
    search_params, tuning = dict(plan.search_params), None
    if tune is not None:
        texts = sample_queries([r["text"] for r in records], tune.queries)
        result = tune_index(index, plan, target=tune.target, k=tune.k, queries=embedder.encode(texts))
        search_params[result.param] = result.value
        tuning = TuningRecord(**result.to_dict(), queries_from="chunk text spans", seed=0)
    return Built(index, search_params, tuning, time.perf_counter() - t0)


def write_and_verify(folder: Path, index, chunk_data: bytes, *, dim: int, expected: int) -> dict[str, Path]:
    """Write index.faiss and chunks.jsonl into `folder`, read them back, and check they agree."""
    from llmops.rag.index import write_index

    paths = {INDEX_FILE: folder / INDEX_FILE, CHUNKS_FILE: folder / CHUNKS_FILE}
    write_index(index, paths[INDEX_FILE])
    paths[CHUNKS_FILE].write_bytes(chunk_data)
    verify_build(paths[INDEX_FILE], paths[CHUNKS_FILE], dim=dim, expected=expected)
    return paths


def verify_build(index_path: Path, chunks_path: Path, *, dim: int, expected: int) -> dict[str, int]:
    """Read the written files back and check they agree: same count, same ids, right dimension."""
    import numpy as np

    from llmops.rag.chunking import faiss_id
    from llmops.rag.index import index_ids, read_index

    index = read_index(index_path)
    records = read_records(chunks_path.read_bytes())
    ids = index_ids(index)
    want = np.array([faiss_id(r["id"]) for r in records], dtype=np.int64)
    problems = []
    if index.ntotal != len(records) or len(records) != expected:
        problems.append(f"index holds {index.ntotal} vectors, chunk records {len(records)}, expected {expected}")
    if index.d != dim:
        problems.append(f"index dimension {index.d} != embedder dimension {dim}")
    if len(np.unique(ids)) != len(ids):
        problems.append("index has duplicate ids")
    if set(ids.tolist()) != set(want.tolist()):
        problems.append(f"{len(set(ids.tolist()) ^ set(want.tolist()))} ids differ between index and chunk records")
    if problems:
        raise LLMOpsError("the built index and its chunk records disagree (" + "; ".join(problems)
                          + "); nothing was published: run the ingestion again")
    return {"vectors": int(index.ntotal), "chunks": len(records)}


def workdir(home: Path) -> Path:
    """A private build folder; ones left by killed runs (older than an hour) are removed first."""
    root = Path(home) / "cache" / "rag-build"
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - 3600
    for old in root.iterdir():
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix="build-", dir=root))
