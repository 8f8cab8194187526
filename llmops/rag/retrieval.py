"""Search a published index version: `ws.rag.index("handbook@production").search("query", k=5)`.

An Index refuses a query embedder whose fingerprint differs from the one the index was built with
(vectors from two models are not comparable, and the scores would look plausible while being noise).
Inside an active run, a search records the index version it used and the chunk ids it returned, so
lineage can tell which chunks fed an answer.

Loaded FAISS indexes and chunk records are kept for the life of the process, keyed by the version's
digest (content-addressed, so never stale): a server or a chain opening `handbook@production` for
every request reads the files once.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from llmops.errors import CorruptArtifact, EmbedderMismatch, InvalidValue
from llmops.rag.chunking import faiss_id
from llmops.rag.manifest import CHUNKS_FILE, INDEX_FILE, Manifest, read_manifest, read_records

MAX_K = 10_000
_lock = threading.Lock()
_loaded: dict[str, tuple[Any, list[dict[str, Any]]]] = {}


def _load_files(ws, av, manifest: Manifest) -> tuple[Any, list[dict[str, Any]]]:
    """(FAISS index with the manifest's search settings, chunk records) of a version, once per process."""
    from llmops.rag.index import read_index

    with _lock:
        if av.digest not in _loaded:
            index = read_index(ws.registry.file_path(av, INDEX_FILE), manifest.index.search_params)
            _loaded[av.digest] = (index, read_records(ws.registry.read_file(av, CHUNKS_FILE)))
        return _loaded[av.digest]


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: its text, score (cosine similarity), source file and position in it."""

    chunk_id: str
    score: float
    text: str
    source: str
    doc_id: str
    seq: int
    rank: int
    index: str
    start: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    also_in: list[dict[str, Any]] = field(default_factory=list)

    @property
    def doc_ids(self) -> list[str]:
        """Every document holding this exact chunk text (usually one)."""
        return [self.doc_id] + [o["doc_id"] for o in self.also_in]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Index:
    """A loaded index version: FAISS index, chunk records and the embedder it was built with."""

    def __init__(self, ws, av, embedder, manifest: Manifest | None = None):
        self.ws, self.av = ws, av
        self.manifest = manifest or read_manifest(av.spec, ref=av.ref)
        built = self.manifest.embedder
        if embedder.fingerprint != built.fingerprint or int(embedder.dim) != built.dim:
            raise EmbedderMismatch(
                f"{av.ref} was built with embedder {built.model!r} (fingerprint {built.fingerprint}, "
                f"dim {built.dim}), but the query embedder has fingerprint {embedder.fingerprint} (dim {embedder.dim}); "
                "query with the index's own embedder, or re-ingest the index with this one")
        self.embedder = embedder
        self.faiss, self.records = _load_files(ws, av, self.manifest)
        self._by_fid = {faiss_id(r["id"]): r for r in self.records}
        self._by_id = {r["id"]: r for r in self.records}
        if self.faiss.ntotal != len(self.records) or self.faiss.d != built.dim:
            raise CorruptArtifact(f"{av.ref}: index holds {self.faiss.ntotal} vectors of dim {self.faiss.d}, but "
                                  f"{len(self.records)} chunk records of dim {built.dim}; re-ingest it")

    def __repr__(self) -> str:
        return f"<Index {self.ref} {len(self)} chunks {self.manifest.index.factory}>"

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ref(self) -> str:
        return self.av.ref

    def chunk(self, chunk_id: str) -> dict[str, Any]:
        return self._by_id[chunk_id]

    def search_vectors(self, vectors: np.ndarray, k: int = 4) -> list[list[Hit]]:
        check_k(k)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.faiss.d)
        if len(self.records) == 0 or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        from llmops.rag.index import search_params_for

        k = min(int(k), len(self.records))
        params = search_params_for(self.manifest.index.type, self.manifest.index.search_params, k)
        scores, ids = self.faiss.search(vectors, k, params=params)
        out = []
        for row_s, row_i in zip(scores, ids):
            hits = []
            for s, i in zip(row_s, row_i):
                if i < 0:
                    continue
                rec = self._by_fid[int(i)]
                first, *rest = rec["occurrences"]
                hits.append(Hit(rec["id"], float(s), rec["text"], first["source"], first["doc_id"], first["seq"],
                                len(hits) + 1, self.ref, first.get("start"), first.get("metadata", {}), rest))
            out.append(hits)
        return out

    def search_many(self, queries: list[str], k: int = 4, *, batch_size: int = 64) -> list[list[Hit]]:
        """Batch search; records nothing (used by evals, which record the version on their own run)."""
        return self.search_vectors(self.embedder.encode(list(queries), batch_size=batch_size), k)

    def search(self, query: str, k: int = 4) -> list[Hit]:
        """Top-k chunks for one query, best first; records the version and chunk ids on the active run."""
        check_k(k)
        hits = self.search_vectors(self.embedder.encode([query]), k)[0]
        self._record(hits)
        return hits

    def _record(self, hits: list[Hit]) -> None:
        run = self.ws.active_run()
        if run is not None:
            run.record_used(self.av)
            run.set_tags({"rag.index": self.ref, "rag.chunk_ids": json.dumps([h.chunk_id for h in hits])})

    def as_retriever(self, k: int = 4):
        """A LangChain BaseRetriever over this index; documents carry chunk_id, score, source and position."""
        return retriever_class()(index=self, k=k)


def check_k(k: Any) -> int:
    """k is how many chunks to return: 1 .. MAX_K."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= MAX_K:
        raise InvalidValue(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
    return int(k)


@functools.cache
def retriever_class():
    """The IndexRetriever class, defined on first use: langchain_core is a heavy import."""
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict

    class IndexRetriever(BaseRetriever):
        """LangChain retriever over an llmops Index (`index.as_retriever(k=4)`)."""

        model_config = ConfigDict(arbitrary_types_allowed=True)
        index: Any
        k: int = 4

        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            return [Document(page_content=h.text, id=h.chunk_id, metadata={
                "chunk_id": h.chunk_id, "score": h.score, "source": h.source, "doc_id": h.doc_id, "seq": h.seq,
                "start": h.start, "rank": h.rank, "index": h.index, **h.metadata})
                for h in self.index.search(query, k=self.k)]

    return IndexRetriever
