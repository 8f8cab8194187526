"""`ws.rag`: ingest, open, evaluate and tune retrieval indexes. The CLI's `llmops rag …` calls these.

    res = ws.rag.ingest("rag/handbook.yaml", progress=True)       # IngestResult, .to_dict() for --json
    hits = ws.rag.index("handbook@production").search("how are versions published?", k=5)
    ev = ws.rag.eval("scifact", queries="q.jsonl", qrels="qrels.tsv")   # EvalResult, logged as an eval run
    tr = ws.rag.tune("handbook", target=0.95)                       # TuneOutcome, publishes the tuned manifest
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.errors import InvalidValue, SpecError
from llmops.rag.ireval import DEFAULT_METRICS
from llmops.store.refs import parse_ref

log = logging.getLogger(__name__)

MAX_TUNE_K, MAX_SAMPLE = 1000, 100_000
_lock = threading.Lock()
_embedders_by_fingerprint: dict[str, Any] = {}  # fingerprint -> Embedder, for the life of the process


def _whole(value: Any, name: str, low: int, high: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidValue(f"{name} must be a whole number from {low} to {high}, got {value!r} ({fix})")
    return value


@dataclass
class EvalResult:
    """Retrieval metrics of one index version on a BEIR-style query set."""

    index: str
    run_id: str
    metrics: dict[str, float]
    queries: int
    skipped_queries: int
    per_query: dict[str, dict[str, float]]

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        d = {"index": self.index, "run_id": self.run_id, "metrics": {k: round(v, 5) for k, v in self.metrics.items()},
             "queries": self.queries, "skipped_queries": self.skipped_queries}
        if per_query:
            d["per_query"] = self.per_query
        return d


@dataclass
class TuneOutcome:
    """The knob `rag tune` picked, the version it tuned and the version that records the choice."""

    tuned_from: str
    ref: str
    published: bool
    run_id: str
    result: Any  # llmops.rag.index.TuneResult
    outcome: str = "new"  # the registry push's: new, unchanged or revert

    def to_dict(self) -> dict[str, Any]:
        return {"tuned_from": self.tuned_from, "ref": self.ref, "published": self.published, "run_id": self.run_id,
                "outcome": self.outcome, **self.result.to_dict()}


class RagService:
    """The RAG side of a workspace. Loaded embedders and indexes are kept for reuse within the process."""

    def __init__(self, ws):
        self.ws = ws
        self._indexes: dict[tuple[str, str], Any] = {}

    def ingest(self, spec_path: str | Path, *, progress: bool = False, on_progress=None, embedder=None):
        """Ingest a spec as an `ingest` run; returns an IngestResult (`.to_dict()` is the --json summary).

        A relative `spec_path` is looked up in the workspace first ("rag/handbook.yaml"), then in the cwd.
        `progress=True` shows progress bars on stderr; `on_progress(stage, done, total)` is called at each step.
        """
        from llmops.rag.ingest import ingest

        return ingest(self.ws, spec_path, embedder=embedder, progress=progress, on_progress=on_progress)

    def index(self, ref: str, *, embedder=None):
        """Open an index version ("handbook", "handbook@production", "index/handbook@3") for search.

        A bare name is the latest version. Raises EmbedderMismatch when `embedder` is not the one the
        index was built with. The embedder is loaded on the first search that needs it, once per process.
        """
        from llmops.rag.manifest import read_manifest
        from llmops.rag.retrieval import Index

        av = self.ws.registry.get(str(parse_ref(ref, default_kind="index", kinds=("index",))))
        manifest = read_manifest(av.spec, ref=av.ref)
        if embedder is None:  # the same model and settings the index was built with
            embedder = self._embedder(manifest)
        key = (av.ref, embedder.fingerprint)
        if key not in self._indexes:
            self._indexes[key] = Index(self.ws, av, embedder, manifest)
        return self._indexes[key]

    def _embedder(self, manifest):
        """The embedder a manifest records, loaded once per process (keyed by its fingerprint)."""
        from llmops.rag.embedder import load_spec_embedder

        built = manifest.embedder
        with _lock:
            found = _embedders_by_fingerprint.get(built.fingerprint)
        if found is None:
            base = (self.ws.root / manifest.spec_file).parent
            found = load_spec_embedder(built.model, base, built.load_options())
            with _lock:
                _embedders_by_fingerprint.setdefault(found.fingerprint, found)
        return found

    def eval(self, ref: str, queries: str | Path, qrels: str | Path, *,
             metrics: tuple[str, ...] = DEFAULT_METRICS, batch_size: int = 64) -> EvalResult:
        """nDCG@10, recall@10, recall@100 and MRR@10 (by default) of an index on BEIR queries + qrels,
        logged as metrics of an `eval` run that used the index version."""
        from llmops.rag.ireval import evaluate, load_qrels, load_queries

        qtext, rels = load_queries(queries), load_qrels(qrels)
        depth = max(int(m.rpartition("_at_")[2]) for m in metrics)
        with self.ws.start_run(f"rag eval {ref}", kind="eval") as run:
            idx = self.index(ref)
            qids = [q for q in rels if q in qtext]
            skipped = len(rels) - len(qids)
            if not qids:
                raise SpecError("no query in the qrels has a text in the queries file", file=str(qrels),
                                fix="check that both files use the same query ids")
            if skipped:
                log.warning("%d qrels queries have no text in %s and are left out", skipped, queries)
            run.log_params({"index": idx.ref, "queries": str(queries), "qrels": str(qrels), "metrics": list(metrics),
                            "evaluated_queries": len(qids)})
            counts = idx.manifest.counts
            per_doc = counts.get("occurrences", 1) / max(counts.get("documents", 1), 1)
            k_chunks = depth if per_doc <= 1 else int(depth * max(2.0, per_doc * 2))
            hits = idx.search_many([qtext[q] for q in qids], k=k_chunks, batch_size=batch_size)
            run_scores: dict[str, dict[str, float]] = {}
            for qid, row in zip(qids, hits):
                docs: dict[str, float] = {}
                for h in row:  # a document scores as its best chunk
                    for d in h.doc_ids:
                        if d not in docs or h.score > docs[d]:
                            docs[d] = h.score
                top = sorted(docs.items(), key=lambda ds: (ds[1], ds[0]), reverse=True)[:depth]
                run_scores[qid] = dict(top)
            means, per_query = evaluate(run_scores, {q: rels[q] for q in qids}, metrics)
            run.log_metrics(means)
            run.log_artifact(json.dumps(per_query, sort_keys=True).encode(), name="per_query.json")
            return EvalResult(idx.ref, run.id, means, len(qids), skipped, per_query)

    def tune(self, ref: str, *, target: float = 0.95, k: int = 10, sample: int = 200,
             queries: str | Path | None = None, seed: int = 0) -> TuneOutcome:
        """Pick the smallest efSearch (hnsw) / nprobe (ivf) whose recall@k against exact search reaches
        `target`, and publish it as a new version of the index (same files, manifest with the choice).
        Tuning again to the same choice publishes nothing (`published` False, `ref` the current version).

        Queries are the texts of a BEIR queries file or, by default, 16-word spans of `sample` chunks
        (seeded; see llmops.rag.index.sample_queries).
        """
        from llmops.rag.index import read_index, sample_queries, tune_index
        from llmops.rag.ireval import load_queries
        from llmops.rag.manifest import CHUNKS_FILE, INDEX_FILE, TuningRecord

        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
            raise InvalidValue(f"target must be in (0, 1], got {target!r} (e.g. 0.95)")
        _whole(k, "k", 1, MAX_TUNE_K, "the k of recall@k, e.g. 10")
        _whole(sample, "sample", 1, MAX_SAMPLE, "how many chunks to draw queries from, e.g. 200")
        _whole(seed, "seed", 0, 2**32 - 1, "any whole number")
        with self.ws.start_run(f"rag tune {ref}", kind="tune") as run:
            idx = self.index(ref)
            info = idx.manifest.index
            if info.type not in ("hnsw", "ivf"):
                raise SpecError(f"{idx.ref} is a {info.type} index: exact search, nothing to tune",
                                fix="set `index: {type: hnsw}` or ivf in the spec and ingest again")
            if queries is not None:
                texts = list(load_queries(queries).values())
            else:
                texts = sample_queries([r["text"] for r in idx.records], sample, seed=seed)
            qvec = idx.embedder.encode(texts)
            # Tune a private copy: the loaded Index keeps serving with the manifest's own settings.
            private = read_index(self.ws.registry.file_path(idx.av, INDEX_FILE), info.search_params)
            result = tune_index(private, info.plan(), target=target, k=k, queries=qvec, sample=sample, seed=seed)
            # Always name the ingested version, so tuning a tuned version to the same choice is no change.
            origin = info.tuning.tuned_from if info.tuning and info.tuning.tuned_from else idx.ref
            tuning = TuningRecord(**result.to_dict(), queries_from=str(queries) if queries else "chunk text spans",
                                  seed=seed, tuned_from=origin)
            manifest = idx.manifest.with_tuning({**info.search_params, result.param: result.value}, tuning)
            av = self.ws.registry.push(
                "index", idx.av.name, spec=manifest.to_spec(),
                files={INDEX_FILE: self.ws.registry.file_path(idx.av, INDEX_FILE),
                       CHUNKS_FILE: self.ws.registry.file_path(idx.av, CHUNKS_FILE)},
                parent=idx.av.version,
                message=f"tune {result.param}={result.value}: recall@{result.k}={result.recall:.4f} (target {target})")
            run.log_params({"index": idx.ref, "target": target, "k": k, "param": result.param})
            run.log_metrics({f"recall_at_{result.k}": result.recall, result.param: result.value})
            run.set_tags({"index_version": av.ref, "reached": str(result.reached).lower(), "outcome": av.outcome})
            if not result.reached:
                log.warning("recall target %.3f not reached; best %s=%d gives %.4f", target, result.param,
                            result.value, result.recall)
            return TuneOutcome(idx.ref, av.ref, av.outcome != "unchanged", run.id, result, av.outcome)
