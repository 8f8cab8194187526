"""Retrieval metrics as pure functions, with pytrec_eval's (trec_eval's) conventions, and BEIR file readers.

Conventions, so figures compare with published BEIR/MTEB numbers:
- A ranking is sorted by score descending, ties by document id descending (trec_eval's order).
- A document is relevant when its qrels grade is >= 1; recall@k divides by the query's number of relevant documents.
- nDCG uses gain = grade (not 2**grade - 1) and discount log2(rank + 1), as trec_eval's ndcg_cut does.
- Means are over the queries that have at least one relevant document; a query with no results scores 0.

Worked example: ranking [d1, d2, d3], qrels {d2: 1, d9: 1}, k=10:
    recall = 1/2 = 0.5;  MRR = 1/2;  nDCG = (1/log2(3)) / (1/log2(2) + 1/log2(3)) = 0.3869
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from llmops.errors import SpecError

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


def rank(scores: Mapping[str, float]) -> list[str]:
    """Doc ids best first: score descending, then doc id descending (rank({"a": 1, "b": 1}) == ["b", "a"])."""
    return [d for d, _ in sorted(scores.items(), key=lambda ds: (ds[1], ds[0]), reverse=True)]


def recall_at_k(ranking: list[str], rels: Mapping[str, int], k: int) -> float:
    relevant = {d for d, g in rels.items() if g >= 1}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: list[str], rels: Mapping[str, int], k: int) -> float:
    for i, d in enumerate(ranking[:k], start=1):
        if rels.get(d, 0) >= 1:
            return 1.0 / i
    return 0.0


def ndcg_at_k(ranking: list[str], rels: Mapping[str, int], k: int) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 1) for i, d in enumerate(ranking[:k], start=1) if rels.get(d, 0) > 0)
    ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


METRICS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}
DEFAULT_METRICS = ("ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10")


def evaluate(run: Run, qrels: Qrels, metrics: tuple[str, ...] = DEFAULT_METRICS) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(means, per_query) for metric names like "ndcg_at_10", "recall_at_100", "mrr_at_10"."""
    parsed = []
    for name in metrics:
        kind, _, k = name.partition("_at_")
        if kind not in METRICS or not k.isdigit():
            raise ValueError(f"unknown metric {name!r}: use ndcg_at_K, recall_at_K or mrr_at_K")
        parsed.append((name, METRICS[kind], int(k)))
    per_query: dict[str, dict[str, float]] = {}
    for qid, rels in qrels.items():
        if not any(g >= 1 for g in rels.values()):
            continue
        ranking = rank(run.get(qid, {}))
        per_query[qid] = {name: fn(ranking, rels, k) for name, fn, k in parsed}
    n = len(per_query)
    means = {name: (sum(q[name] for q in per_query.values()) / n if n else 0.0) for name, _, _ in parsed}
    return means, per_query


def load_qrels(path: str | Path) -> Qrels:
    """BEIR qrels TSV (`query-id  corpus-id  score`, header optional) or TREC qrels (`qid 0 docid grade`)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("no such file", file=str(path), fix="give a BEIR qrels .tsv (query-id, corpus-id, score)")
    qrels: Qrels = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        if len(cols) == 4:
            cols = [cols[0], cols[2], cols[3]]
        if len(cols) != 3:
            raise SpecError(f"expected 3 columns (query-id, corpus-id, score), got {len(cols)}", file=str(path), line=lineno)
        qid, did, grade = (c.strip() for c in cols)
        try:
            g = int(float(grade))
        except ValueError:
            if lineno == 1:
                continue  # header
            raise SpecError(f"score {grade!r} is not a number", file=str(path), line=lineno) from None
        qrels.setdefault(qid, {})[did] = g
    if not qrels:
        raise SpecError("no qrels rows", file=str(path))
    return qrels


def load_queries(path: str | Path) -> dict[str, str]:
    """BEIR queries JSONL: one `{"_id": ..., "text": ...}` per line (`id`/`query` are accepted too)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("no such file", file=str(path), fix='give a queries .jsonl with {"_id", "text"} per line')
    queries: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecError(f"not valid JSON ({exc.msg})", file=str(path), line=lineno) from None
        qid = next((row[k] for k in ("_id", "id", "query_id", "qid") if k in row), None)
        text = next((row[k] for k in ("text", "query") if isinstance(row.get(k), str)), None)
        if qid is None or text is None:
            raise SpecError('each line needs "_id" and "text"', file=str(path), line=lineno)
        queries[str(qid)] = text
    if not queries:
        raise SpecError("no queries", file=str(path))
    return queries
