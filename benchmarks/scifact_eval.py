"""Reproduce all-MiniLM-L6-v2's published nDCG@10 on BEIR SciFact through the llmops RAG pipeline.

    .venv/bin/python benchmarks/scifact_eval.py [--workspace DIR] [--index-type flat|hnsw|ivf]

Ingests rag/scifact.yaml (one chunk per document, (title + " " + text).strip(), max_seq_length 256,
flat inner-product index over normalised vectors) into a workspace, then evaluates it with
`ws.rag.eval` on the 300 test queries. The published figures (MTEB paper results, see
../shared/data/ir/scifact/SOURCE.md) are nDCG@10 0.64508, recall@10 0.78333, recall@100 0.925.
Writes benchmarks/out/scifact.json. Encoding the 5,183 abstracts takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ir" / "scifact"
PUBLISHED = {"ndcg_at_10": 0.64508, "recall_at_10": 0.78333, "recall_at_100": 0.925}
TOLERANCE = 0.02


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", help="workspace folder (default: a temporary one)")
    ap.add_argument("--data", default=str(DATA), help="folder with corpus.jsonl, queries.jsonl, qrels.tsv")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(ROOT))
    import llmops

    data = Path(args.data)
    ws_dir = Path(args.workspace) if args.workspace else Path(tempfile.mkdtemp(prefix="scifact-ws-"))
    (ws_dir / "rag").mkdir(parents=True, exist_ok=True)
    spec = (ROOT / "rag" / "scifact.yaml").read_text().replace(
        "../../shared/data/ir/scifact/corpus.jsonl", str(data / "corpus.jsonl"))
    (ws_dir / "rag" / "scifact.yaml").write_text(spec)
    ws = llmops.Workspace(ws_dir)
    t0 = time.perf_counter()
    res = ws.rag.ingest(ws_dir / "rag" / "scifact.yaml", progress=True)
    ingest_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    ev = ws.rag.eval("scifact", queries=data / "queries.jsonl", qrels=data / "qrels.tsv")
    eval_s = time.perf_counter() - t1
    embedder = ws.registry.get(res.ref, record=False).spec["embedder"]
    out = {"ingest": res.to_dict(), "eval": ev.to_dict(), "embedder": embedder, "published": PUBLISHED,
           "delta": {k: round(ev.metrics[k] - v, 5) for k, v in PUBLISHED.items()},
           "ingest_seconds": round(ingest_s, 1), "eval_seconds": round(eval_s, 1), "cpu_count": os.cpu_count()}
    (ROOT / "benchmarks" / "out").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "out" / "scifact.json").write_text(json.dumps(out, indent=2))
    for k, v in ev.metrics.items():
        ref = PUBLISHED.get(k)
        print(f"{k:14s} {v:.5f}" + (f"   published {ref:.5f}  delta {v - ref:+.5f}" if ref is not None else ""))
    print(f"ingest {ingest_s:.0f}s ({res.counts['embedded']} embedded), eval {eval_s:.0f}s, workspace {ws_dir}, "
          f"embedder {embedder.get('backend')}/{embedder.get('precision')}")
    ok = abs(ev.metrics["ndcg_at_10"] - PUBLISHED["ndcg_at_10"]) <= TOLERANCE
    print("nDCG@10 within ±0.02 of the published figure" if ok else "nDCG@10 OFF by more than 0.02")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
