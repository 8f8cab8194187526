"""`ws.rag`: ingest, open, evaluate and tune retrieval indexes. The CLI's `llmops rag …` calls these.

    res = ws.rag.ingest("rag/handbook.yaml", progress=True)       # IngestResult, .to_dict() for --json
    hits = ws.rag.index("handbook@production").search("how are versions published?", k=5)
    ev = ws.rag.eval("scifact", queries="q.jsonl", qrels="qrels.tsv")   # EvalResult, logged as an eval run
    tr = ws.rag.tune("handbook", target=0.95)                       # TuneOutcome, publishes the tuned manifest
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmops.errors import SpecError
from llmops.rag.ireval import DEFAULT_METRICS

log = logging.getLogger(__name__)


def index_ref(ref: str) -> str:
    """"handbook@production" -> "index/handbook@production"; "index/x@3" stays as is."""
    return ref if ref.startswith("index/") else f"index/{ref}"


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

    def to_dict(self) -> dict[str, Any]:
        return {"tuned_from": self.tuned_from, "ref": self.ref, "published": self.published, "run_id": self.run_id,
                **self.result.to_dict()}


class RagService:
    """The RAG side of a workspace. Loaded embedders and indexes are kept for reuse within the process."""

    def __init__(self, ws):
        self.ws = ws
        self._indexes: dict[tuple[str, str], Any] = {}

    def ingest(self, spec_path: str | Path, *, progress: bool = False, on_progress=None, embedder=None):
        """Ingest a spec as an `ingest` run; returns an IngestResult (`.to_dict()` is the --json summary).

        A relative `spec_path` is looked up in the workspace first ("rag/handbook.yaml"), then in the cwd.
        `progress=True` shows tqdm bars; `on_progress(stage, done, total)` is called at each step.
        """
        from llmops.rag.ingest import ingest

        return ingest(self.ws, spec_path, embedder=embedder, progress=progress, on_progress=on_progress)

    def index(self, ref: str, *, embedder=None):
        """Open an index version ("handbook", "handbook@production", "index/handbook@3") for search.

        Raises EmbedderMismatch when `embedder` is not the one the index was built with.
        """
        from llmops.rag.ingest import load_embedder_for, resolve_model
        from llmops.rag.retrieval import Index

        av = self.ws.registry.get(index_ref(ref))
        if embedder is None:  # the same model and settings the index was built with
            built = av.spec["embedder"]
            base = (self.ws.root / av.spec.get("spec_file", ".")).parent
            options = {k: built[k] for k in ("max_seq_length", "backend", "precision") if built.get(k) is not None}
            embedder = load_embedder_for(resolve_model(built["model"], base), options)
        key = (av.ref, embedder.fingerprint)
        if key not in self._indexes:
            self._indexes[key] = Index(self.ws, av, embedder)
        return self._indexes[key]

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
            counts = idx.manifest.get("counts", {})
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

        Queries are the texts of a BEIR queries file or, by default, 16-word spans of `sample` chunks
        (seeded; see llmops.rag.index.sample_queries).
        """
        from llmops.rag.index import IndexPlan, sample_queries, tune_index
        from llmops.rag.ingest import CHUNKS_FILE, INDEX_FILE
        from llmops.rag.ireval import load_queries

        if not 0 < target <= 1:
            raise SpecError(f"target {target} must be in (0, 1]", field="target", fix="e.g. 0.95")
        with self.ws.start_run(f"rag tune {ref}", kind="tune") as run:
            idx = self.index(ref)
            info = idx.manifest["index"]
            if info["type"] not in ("hnsw", "ivf"):
                raise SpecError(f"{idx.ref} is a {info['type']} index: exact search, nothing to tune",
                                fix="set `index: {type: hnsw}` or ivf in the spec and ingest again")
            plan = IndexPlan(info["type"], info["factory"], info["build_params"], info["search_params"])
            if queries is not None:
                texts = list(load_queries(queries).values())
            else:
                texts = sample_queries([r["text"] for r in idx.records], sample, seed=seed)
            qvec = np.asarray(idx.embedder.encode(texts))
            # Tune a private copy: the cached Index keeps serving with the manifest's own settings.
            from llmops.rag.index import read_index

            private = read_index(self.ws.registry.file_path(idx.av, INDEX_FILE), info["search_params"])
            result = tune_index(private, plan, target=target, k=k, queries=qvec, sample=sample, seed=seed)
            manifest = copy.deepcopy(idx.manifest)
            manifest["index"]["search_params"] = {**info["search_params"], result.param: result.value}
            manifest["index"]["tuning"] = {**result.to_dict(), "queries_from": str(queries) if queries else "chunk text spans",
                                           "seed": seed, "tuned_from": idx.ref}
            before = self.ws.registry.versions(index_ref(idx.av.name))[-1].version
            av = self.ws.registry.push(
                "index", idx.av.name, spec=manifest,
                files={INDEX_FILE: self.ws.registry.file_path(idx.av, INDEX_FILE),
                       CHUNKS_FILE: self.ws.registry.file_path(idx.av, CHUNKS_FILE)},
                parent=idx.av.version,
                message=f"tune {result.param}={result.value}: recall@{result.k}={result.recall:.4f} (target {target})")
            run.log_params({"index": idx.ref, "target": target, "k": k, "param": result.param})
            run.log_metrics({f"recall_at_{result.k}": result.recall, result.param: result.value})
            run.set_tags({"index_version": av.ref, "reached": str(result.reached).lower()})
            if not result.reached:
                log.warning("recall target %.3f not reached; best %s=%d gives %.4f", target, result.param,
                            result.value, result.recall)
            return TuneOutcome(idx.ref, av.ref, av.version > before, run.id, result)
