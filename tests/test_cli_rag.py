"""`llmops rag …` end to end in a subprocess, on a tiny local embedder."""

import json

from rag_support import tiny_model, write_corpus, write_spec  # noqa: F401 (fixture)
from test_cli import cli


def test_ingest_query_eval_tune(tmp_path, tiny_model):
    root = tmp_path / "w"
    write_corpus(root)
    spec = write_spec(root, tiny_model, name="kb", index="hnsw")
    first = json.loads(cli("-w", str(root), "rag", "ingest", str(spec), "--json").stdout)
    assert (first["ref"], first["published"]) == ("index/kb@1", True)
    again = json.loads(cli("-w", str(root), "rag", "ingest", str(spec), "--json").stdout)
    assert (again["ref"], again["published"], again["counts"]["embedded"]) == ("index/kb@1", False, 0)

    hits = json.loads(cli("-w", str(root), "rag", "query", "kb", "how do I install alpha?", "-k", "3", "--json").stdout)
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert all(h["index"] == "index/kb@1" for h in hits)

    (root / "q.jsonl").write_text('{"_id": "q1", "text": "installing alpha"}\n')
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\trag/docs/alpha.md\t1\n")
    ev = cli("-w", str(root), "rag", "eval", "kb", "--queries", str(root / "q.jsonl"), "--qrels", str(root / "qrels.tsv"), "--json")
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)["metrics"]
    assert set(metrics) == {"ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())

    tuned = json.loads(cli("-w", str(root), "rag", "tune", "kb", "--target", "0.9", "--json").stdout)
    assert tuned["ref"] == "index/kb@2" and tuned["tuned_from"] == "index/kb@1"


def test_glob_matching_nothing_is_an_error_and_publishes_nothing(tmp_path, tiny_model):
    root = tmp_path / "w"
    write_corpus(root)
    spec = write_spec(root, tiny_model, name="kb")
    spec.write_text(spec.read_text().replace('"docs/**/*"', '"nothing/**/*.md"'))
    r = cli("-w", str(root), "rag", "ingest", str(spec))
    assert r.returncode == 2 and "glob matched no files" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(cli("-w", str(root), "assets", "list", "--json").stdout) == []
