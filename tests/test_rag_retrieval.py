"""Search, LangChain retriever, lineage recording, embedder mismatch, eval and tune through ws.rag."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rag_support import build_tiny_model, tiny_embedder, tiny_model, write_corpus, write_spec  # noqa: F401

from llmops.errors import EmbedderMismatch, InvalidValue, SpecError


@pytest.fixture
def kb(ws, tiny_model):  # noqa: F811
    write_corpus(ws.root)
    return ws.rag.ingest(write_spec(ws.root, tiny_model))


def test_search_returns_scored_chunks_with_source_and_position(ws, kb, tiny_embedder):  # noqa: F811
    ws.registry.set_alias("index/kb", "production", 1)
    index = ws.rag.index("kb@production")
    assert index.ref == "index/kb@1" and len(index) == kb.counts["chunks"]
    # the stored text of a chunk finds itself first, with cosine ~1
    target = index.records[3]
    hits = index.search(target["text"], k=3)
    assert [h.rank for h in hits] == [1, 2, 3] and hits[0].chunk_id == target["id"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-4) and hits[0].score >= hits[1].score >= hits[2].score
    occ = target["occurrences"][0]
    assert (hits[0].source, hits[0].doc_id, hits[0].seq, hits[0].index) == (occ["source"], occ["doc_id"], occ["seq"], "index/kb@1")
    # scores are the inner products of normalised vectors, i.e. exact cosine search
    q = tiny_embedder.encode(["bread and yeast"])
    vecs = tiny_embedder.encode([r["text"] for r in index.records])
    best = np.argsort(-(vecs @ q[0]))[:3]
    assert [h.chunk_id for h in index.search("bread and yeast", k=3)] == [index.records[i]["id"] for i in best]
    assert index.search("anything", k=1000)[-1].rank == len(index)
    json.dumps([h.to_dict() for h in hits])


def test_retriever_is_a_langchain_retriever(ws, kb):
    from langchain_core.retrievers import BaseRetriever

    retriever = ws.rag.index("index/kb@1").as_retriever(k=2)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("installing alpha")
    assert len(docs) == 2 and all(d.page_content for d in docs)
    meta = docs[0].metadata
    assert meta["index"] == "index/kb@1" and meta["rank"] == 1 and meta["source"].startswith("rag/docs/")
    assert docs[0].id == meta["chunk_id"] and isinstance(meta["score"], float)


def test_search_in_a_run_records_the_version_and_chunk_ids(ws, kb):
    index = ws.rag.index("kb")
    with ws.start_run("chain call", kind="chain") as run:
        hits = index.as_retriever(k=3).invoke("bugs in beta")
    info = ws.get_run(run.id)
    assert info.tags["rag.index"] == "index/kb@1"
    assert json.loads(info.tags["rag.chunk_ids"]) == [d.metadata["chunk_id"] for d in hits]
    graph = ws.lineage(run.id)
    assert (run.id, "used", "index/kb@1") in graph.upstream + graph.downstream


def test_querying_with_another_embedder_is_a_clear_error(ws, kb, tmp_path):
    from llmops.rag.embedder import Embedder

    other = Embedder(build_tiny_model(tmp_path / "other", seed=1))
    with pytest.raises(EmbedderMismatch) as exc:
        ws.rag.index("kb", embedder=other)
    text = str(exc.value)
    assert "index/kb@1 was built with embedder" in text and other.fingerprint in text and "re-ingest" in text


def test_eval_logs_ir_metrics_on_an_eval_run(ws, kb, tmp_path):
    index = ws.rag.index("kb")
    # queries are chunk texts; the relevant "document" is the file the chunk came from
    picks = index.records[:4]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": r["text"]}) + "\n"
                                              for i, r in enumerate(picks)))
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\t{r['occurrences'][0]['doc_id']}\t1\n" for i, r in enumerate(picks)) + "q9\tnowhere\t1\n")
    ev = ws.rag.eval("kb", queries=tmp_path / "q.jsonl", qrels=tmp_path / "qrels.tsv")
    assert ev.queries == 4 and ev.skipped_queries == 1 and ev.index == "index/kb@1"
    assert ev.metrics["mrr_at_10"] == 1.0 and ev.metrics["recall_at_10"] == 1.0 and ev.metrics["ndcg_at_10"] == 1.0
    run = ws.get_run(ev.run_id)
    assert run.kind == "eval" and run.metrics["ndcg_at_10"] == 1.0 and run.params["index"] == "index/kb@1"
    assert set(ev.to_dict()["metrics"]) == {"ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10"}
    graph = ws.lineage(ev.run_id)
    assert (ev.run_id, "used", "index/kb@1") in graph.upstream + graph.downstream


def test_tune_publishes_the_choice_over_the_same_index_file(ws, tiny_model):  # noqa: F811
    write_corpus(ws.root)
    spec = write_spec(ws.root, tiny_model, chunk_size=12, index="hnsw")
    first = ws.rag.ingest(spec)
    out = ws.rag.tune("kb", target=0.99, k=5, sample=20)
    assert out.published and out.tuned_from == "index/kb@1" and out.ref == "index/kb@2"
    old, new = ws.registry.get("index/kb@1", record=False), ws.registry.get("index/kb@2", record=False)
    assert new.files == old.files and new.parent == 1
    tuning = new.spec["index"]["tuning"]
    assert tuning["param"] == "efSearch" and new.spec["index"]["search_params"]["efSearch"] == tuning["value"]
    assert tuning["recall"] >= 0.99 and tuning["tuned_from"] == "index/kb@1"
    import faiss

    assert faiss.downcast_index(ws.rag.index("kb@2").faiss.index).hnsw.efSearch == tuning["value"]
    # tuning again to the same result publishes nothing, from the tuned or the ingested version
    for ref in ("kb", "kb@1", "kb@2"):
        again = ws.rag.tune(ref, target=0.99, k=5, sample=20)
        assert (again.published, again.outcome, again.ref) == (False, "unchanged", "index/kb@2")
    # an unchanged re-ingest keeps the tuned version
    again = ws.rag.ingest(spec)
    assert not again.published and again.ref == "index/kb@2" and first.content_digest == again.content_digest
    assert [v.version for v in ws.registry.versions("index/kb")] == [1, 2]


@pytest.mark.parametrize("kwargs, words", [
    ({"sample": 0}, "sample must be a whole number from 1 to 100000, got 0"),
    ({"k": 0}, "k must be a whole number from 1 to 1000, got 0"),
    ({"k": 10**6}, "k must be a whole number from 1 to 1000"),
    ({"target": 0.0}, "target must be in (0, 1]"),
    ({"target": float("nan")}, "target must be in (0, 1]"),
])
def test_tune_refuses_bad_arguments_and_publishes_nothing(ws, tiny_model, kwargs, words):  # noqa: F811
    write_corpus(ws.root)
    ws.rag.ingest(write_spec(ws.root, tiny_model, chunk_size=12, index="hnsw"))
    with pytest.raises(InvalidValue) as exc:
        ws.rag.tune("kb", **kwargs)
    assert words in str(exc.value)
    assert [v.version for v in ws.registry.versions("index/kb")] == [1]
    assert ws.search_runs("attributes.kind = 'tune'") == []


def test_a_flat_index_has_nothing_to_tune(ws, tiny_model):  # noqa: F811
    write_corpus(ws.root)
    ws.rag.ingest(write_spec(ws.root, tiny_model, name="flat"))
    with pytest.raises(SpecError, match="index/flat@1 is a flat index: exact search, nothing to tune"):
        ws.rag.tune("flat")


def test_precision_is_part_of_the_embedder_identity(ws, tiny_model):  # noqa: F811
    from llmops.rag.embedder import load_embedder

    write_corpus(ws.root)
    spec = write_spec(ws.root, tiny_model, body=f"""\
sources: ["docs/*"]
embedder: {{model: "{tiny_model}", precision: fp32}}
chunker: {{chunk_size: 24, chunk_overlap: 4}}
""")
    res = ws.rag.ingest(spec)
    built = ws.registry.get(res.ref, record=False).spec["embedder"]
    assert (built["backend"], built["precision"]) == ("torch", "fp32")
    assert ws.rag.index("kb").embedder.precision == "fp32"  # reloaded with the settings it was built with
    with pytest.raises(EmbedderMismatch):
        ws.rag.index("kb", embedder=load_embedder(tiny_model, precision="bf16"))


def test_an_index_and_its_embedder_load_once_per_process(ws, kb):
    import llmops

    first = ws.rag.index("kb")
    with llmops.Workspace(ws.root) as other:  # another workspace object, as a server request would open
        second = other.rag.index("kb@1")
        assert second is not first and second.ws is other
        assert second.faiss is first.faiss and second.records is first.records and second.embedder is first.embedder
        assert second.search("installing alpha", k=2) == first.search("installing alpha", k=2)
