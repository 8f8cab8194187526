"""FAISS indexes: flat equals exact search, files round-trip, tuning picks the smallest knob reaching the target."""

from __future__ import annotations

import numpy as np
import pytest

from llmops.errors import SpecError
from llmops.rag.index import (auto_nlist, build_index, exact_search, index_ids, plan_index, read_index, recall_at_k,
                              tune_index, write_index)
from llmops.rag.spec import IndexSpec


def data(n=1500, dim=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.choice(2**60, size=n, replace=False).astype(np.int64)
    return x, ids


def test_plans():
    assert plan_index(IndexSpec(), 10).factory == "IDMap2,Flat"
    h = plan_index(IndexSpec(type="hnsw", params={"M": 16, "efSearch": 8}), 10)
    assert (h.factory, h.build_params, h.search_params) == ("IDMap2,HNSW16", {"M": 16, "efConstruction": 40}, {"efSearch": 8})
    i = plan_index(IndexSpec(type="ivf"), 5183)
    assert (i.factory, i.search_params) == ("IDMap2,IVF72,Flat", {"nprobe": 8})
    assert auto_nlist(5183) == 72 and auto_nlist(50) == 1 and auto_nlist(1) == 1
    with pytest.raises(SpecError, match="nlist=64 needs at least 64 chunks"):
        plan_index(IndexSpec(type="ivf", params={"nlist": 64}), 10, file="rag/x.yaml")


def test_flat_is_exact_and_round_trips(tmp_path):
    x, ids = data()
    index = build_index(x, ids, plan_index(IndexSpec(), len(x)))
    q = x[:20] + 0.1
    scores, found = index.search(q, 5)
    want = ids[np.argsort(-(q @ x.T), axis=1)[:, :5]]
    assert (found == want).all()
    assert np.allclose(scores[:, 0], np.max(q @ x.T, axis=1), atol=1e-5)
    write_index(index, tmp_path / "i.faiss")
    again = read_index(tmp_path / "i.faiss")
    assert (index_ids(again) == ids).all() and (again.search(q, 5)[1] == found).all()


@pytest.mark.parametrize("spec", [IndexSpec(type="hnsw", params={"M": 8, "efSearch": 1}),
                                  IndexSpec(type="ivf", params={"nlist": 32, "nprobe": 1})])
def test_tune_picks_the_smallest_value_reaching_the_target(spec):
    x, ids = data()
    plan = plan_index(spec, len(x))
    index = build_index(x, ids, plan)
    result = tune_index(index, plan, target=0.9, k=10, sample=100)
    assert result.reached and result.recall >= 0.9 and result.queries == 100
    values = [v for v, _ in result.curve]
    assert values[-1] == result.value and values == sorted(values)
    assert all(r < 0.9 for _, r in result.curve[:-1])  # every smaller value fell short
    # the recall it reports is what a fresh search at that setting measures
    rng = np.random.default_rng(0)
    q = x[np.sort(rng.choice(len(x), 100, replace=False))]
    assert recall_at_k(index.search(q, 10)[1], exact_search(x, ids, q, 10)) == pytest.approx(result.recall)


def test_tune_reports_when_target_is_out_of_reach():
    x, ids = data(n=300)
    plan = plan_index(IndexSpec(type="hnsw", params={"M": 4}), len(x))
    index = build_index(x, ids, plan)
    result = tune_index(index, plan, target=1.0, k=10, queries=-x[:30])
    assert result.value == max(v for v, _ in result.curve) or result.reached
    with pytest.raises(SpecError, match="nothing to tune"):
        tune_index(build_index(x, ids, plan_index(IndexSpec(), len(x))), plan_index(IndexSpec(), len(x)))


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 4, 5]])) == pytest.approx(1 / 3)
    assert recall_at_k(np.array([[1, -1], [5, 6]]), np.array([[1, -1], [6, 5]])) == 1.0


def test_sample_queries_are_seeded_spans_of_chunk_text():
    from llmops.rag.index import sample_queries

    texts = [" ".join(f"w{i}_{j}" for j in range(40)) for i in range(10)] + ["short one"]
    qs = sample_queries(texts, 5, words=6, seed=1)
    assert qs == sample_queries(texts, 5, words=6, seed=1) and len(qs) == 5
    for q in qs:
        assert q in texts or (len(q.split()) == 6 and any(q in t for t in texts))
    assert sorted(sample_queries(["short one"], 5)) == ["short one"]


def test_hnsw_search_explores_at_least_k_candidates():
    from llmops.rag.index import search_params_for

    x, ids = data(n=2000, dim=16)
    index = build_index(x, ids, plan_index(IndexSpec(type="hnsw", params={"M": 4, "efSearch": 1}), len(x)))
    q = x[:40] + 0.2
    truth = exact_search(x, ids, q, 100)
    plain = recall_at_k(index.search(q, 100)[1], truth)
    wide = recall_at_k(index.search(q, 100, params=search_params_for("hnsw", {"efSearch": 1}, 100))[1], truth)
    assert wide > plain and wide > 0.8
    assert search_params_for("hnsw", {"efSearch": 200}, 100) is None and search_params_for("ivf", {"nprobe": 1}, 100) is None
