"""The index manifest: one typed model, format versions, old indexes still load, readers do not import writers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rag_support import tiny_model, write_corpus, write_spec  # noqa: F401

from llmops.errors import CorruptArtifact
from llmops.rag.manifest import FORMAT, FORMAT_VERSION, Manifest, read_manifest


def v1_manifest(current: dict) -> dict:
    """A manifest in the shape published before format versions: `format: llmops.rag.index/1`, no version."""
    old = {k: v for k, v in current.items() if k != "format_version"}
    return {**old, "format": "llmops.rag.index/1"}


OLD = {  # as stored by llmops before this module (from a real handbook ingestion, one source kept)
    "format": "llmops.rag.index/1", "name": "handbook", "spec_file": "rag/handbook.yaml",
    "ingest_spec": {"name": "handbook", "sources": [{"glob": "handbook/**/*.md"}], "on_error": "stop"},
    "embedder": {"model": "default", "fingerprint": "torch-fp32-64b85aa6", "dim": 384, "max_seq_length": 256,
                 "backend": "torch", "precision": "fp32"},
    "chunker": {"kind": "markdown", "chunk_size": 200, "chunk_overlap": 30, "headers": [1, 2, 3]},
    "index": {"type": "hnsw", "factory": "IDMap2,HNSW32", "build_params": {"M": 32, "efConstruction": 40},
              "search_params": {"efSearch": 24}, "metric": "inner_product",
              "tuning": {"param": "efSearch", "value": 24, "recall": 0.97, "target": 0.95, "k": 10, "queries": 44,
                         "reached": True, "curve": [[16, 0.93], [24, 0.97]], "queries_from": "chunk text spans",
                         "seed": 0, "tuned_from": "index/handbook@1"}},
    "sources": [{"path": "rag/handbook/architecture.md", "digest": "06b9" * 16, "bytes": 6465, "documents": 1,
                 "chunks": 19, "loader": {"format": "markdown", "encoding": "utf-8", "id_field": None,
                                          "text_field": "text", "title_field": None}}],
    "skipped": [], "counts": {"files": 1, "skipped_files": 0, "documents": 1, "chunks": 19, "occurrences": 19},
    "content_digest": "bd17" * 16,
}


def test_a_format_1_manifest_reads_as_the_typed_model():
    m = read_manifest(OLD, ref="index/handbook@2")
    assert (m.format, m.format_version) == (FORMAT, 1)
    assert m.embedder.fingerprint == "torch-fp32-64b85aa6" and m.embedder.load_options() == {
        "max_seq_length": 256, "backend": "torch", "precision": "fp32"}
    assert m.index.plan().factory == "IDMap2,HNSW32" and m.index.tuning.tuned_from == "index/handbook@1"
    assert m.sources[0].digest == "06b9" * 16 and m.counts["chunks"] == 19
    # written back, it is format 2 with the same content
    again = read_manifest(m.model_copy(update={"format_version": FORMAT_VERSION}).to_spec())
    assert again.format_version == FORMAT_VERSION and again.model_dump(exclude={"format_version"}) == m.model_dump(
        exclude={"format_version"})


@pytest.mark.parametrize("change, words", [
    ({"format": "something/else"}, "is not an llmops index (format 'something/else')"),
    ({"format": FORMAT, "format_version": FORMAT_VERSION + 1}, "newer than this llmops reads"),
    ({"counts": "many"}, "manifest field counts"),
])
def test_unreadable_manifests_are_refused_by_name(change, words):
    with pytest.raises(CorruptArtifact) as exc:
        read_manifest({**OLD, **change}, ref="index/handbook@2")
    assert str(exc.value).startswith("index/handbook@2") and words in str(exc.value)


def test_an_index_published_in_format_1_still_opens_searches_and_reingests_unchanged(ws, tiny_model):  # noqa: F811
    write_corpus(ws.root)
    spec = write_spec(ws.root, tiny_model)
    res = ws.rag.ingest(spec)
    new = ws.registry.get(res.ref, record=False)
    assert (new.spec["format"], new.spec["format_version"]) == (FORMAT, FORMAT_VERSION)
    files = {name: ws.registry.file_path(new, name) for name in new.files}
    old = ws.registry.push("index", "kb", spec=v1_manifest(new.spec), files=files)  # as an older llmops wrote it
    assert old.outcome == "new" and old.version == 2
    index = ws.rag.index("kb@2")
    assert index.manifest.format_version == 1 and len(index.search("installing alpha", k=2)) == 2
    again = ws.rag.ingest(spec)  # the content digest recipe did not change: nothing to publish
    assert not again.published and again.ref == "index/kb@2"


def test_manifest_fields_are_typed_and_unknown_ones_refused():
    with pytest.raises(Exception, match="extra"):
        Manifest.model_validate({**read_manifest(OLD).to_spec(), "surprise": 1})


def test_readers_do_not_import_the_writer():
    code = ("import sys, llmops.rag.retrieval, llmops.rag.service; "
            "print(sorted(m for m in ('llmops.rag.ingest', 'llmops.rag.build', 'torch', 'faiss', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("'", '"')) == ["numpy"]  # retrieval works on arrays; nothing else heavy
