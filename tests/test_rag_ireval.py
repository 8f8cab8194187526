"""IR metrics: hand-worked examples, trec_eval tie order, and agreement with pytrec_eval itself."""

from __future__ import annotations

import math
import random

import pytest

from llmops.errors import SpecError
from llmops.rag.ireval import evaluate, load_qrels, load_queries, mrr_at_k, ndcg_at_k, rank, recall_at_k


def test_worked_example_from_the_docstring():
    ranking, rels = ["d1", "d2", "d3"], {"d2": 1, "d9": 1}
    assert recall_at_k(ranking, rels, 10) == 0.5
    assert mrr_at_k(ranking, rels, 10) == 0.5
    assert ndcg_at_k(ranking, rels, 10) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(ranking, rels, 10) == pytest.approx(0.3869, abs=1e-4)


def test_graded_ndcg_uses_the_grade_as_gain():
    # ranking grades 1, 2, 0 ; ideal 2, 1
    ranking, rels = ["a", "b", "c"], {"a": 1, "b": 2, "z": 0}
    dcg = 1 / math.log2(2) + 2 / math.log2(3)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(ranking, rels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranking, rels, 1) == pytest.approx(1 / 2)


def test_cutoffs_and_non_relevant_grades():
    rels = {"a": 1, "b": 1, "x": 0}
    assert recall_at_k(["x", "c", "a", "b"], rels, 3) == 0.5
    assert mrr_at_k(["x", "c", "a"], rels, 2) == 0.0 and mrr_at_k(["x", "c", "a"], rels, 3) == pytest.approx(1 / 3)
    assert ndcg_at_k(["x"], rels, 10) == 0.0 and recall_at_k([], {"x": 0}, 10) == 0.0


def test_ties_break_by_doc_id_descending_like_trec_eval():
    assert rank({"a": 1.0, "c": 1.0, "b": 2.0}) == ["b", "c", "a"]
    means, per_query = evaluate({"q": {"a": 1.0, "b": 1.0}}, {"q": {"a": 1}})
    assert per_query["q"]["mrr_at_10"] == 0.5


def test_means_skip_queries_without_relevant_docs_and_count_missing_runs_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    means, per_query = evaluate({"q1": {"a": 0.9}}, qrels, ("recall_at_10", "ndcg_at_10"))
    assert set(per_query) == {"q1", "q2"} and means == {"recall_at_10": 0.5, "ndcg_at_10": 0.5}
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate({}, qrels, ("map_at_10",))


def test_agrees_with_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(60)]
    qrels = {f"q{i}": {d: rng.choice([1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 6))} for i in range(40)}
    run = {q: {d: round(rng.random(), 2) for d in rng.sample(docs, 30)} for q in qrels}  # rounding makes ties
    ours, per_query = evaluate(run, qrels, ("ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10"))
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100"}).evaluate(run)
    # trec_eval's recip_rank has no cutoff: give it the top 10 only (in trec_eval's own order) for MRR@10
    top10 = {q: {d: r[d] for d in rank(r)[:10]} for q, r in run.items()}
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    for q in qrels:
        assert per_query[q]["ndcg_at_10"] == pytest.approx(full[q]["ndcg_cut_10"], abs=1e-9)
        assert per_query[q]["recall_at_10"] == pytest.approx(full[q]["recall_10"], abs=1e-9)
        assert per_query[q]["recall_at_100"] == pytest.approx(full[q]["recall_100"], abs=1e-9)
        assert per_query[q]["mrr_at_10"] == pytest.approx(mrr[q]["recip_rank"], abs=1e-9)


def test_readers(tmp_path):
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t2\n2\td3\t1\n")
    assert load_qrels(tmp_path / "qrels.tsv") == {"1": {"d1": 1, "d2": 2}, "2": {"d3": 1}}
    (tmp_path / "trec.txt").write_text("1 0 d1 1\n1 0 d2 0\n")
    assert load_qrels(tmp_path / "trec.txt") == {"1": {"d1": 1, "d2": 0}}
    (tmp_path / "q.jsonl").write_text('{"_id": "1", "text": "what?"}\n\n{"id": 2, "query": "why?"}\n')
    assert load_queries(tmp_path / "q.jsonl") == {"1": "what?", "2": "why?"}
    (tmp_path / "bad.tsv").write_text("h\th\th\n1\td1\tx\n")
    with pytest.raises(SpecError, match=r"bad.tsv:2: score 'x' is not a number"):
        load_qrels(tmp_path / "bad.tsv")
    (tmp_path / "bad.jsonl").write_text('{"text": "no id"}\n')
    with pytest.raises(SpecError, match=r"bad.jsonl:1: each line needs"):
        load_queries(tmp_path / "bad.jsonl")
