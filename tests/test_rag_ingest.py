"""Ingestion: versions, incremental re-embedding, content digests, manifests and bad input."""

from __future__ import annotations

import json

import pytest
from rag_support import make_pdf, tiny_embedder, tiny_model, write_corpus, write_spec  # noqa: F401

from llmops.errors import IngestError, SpecError


@pytest.fixture
def kb(ws, tiny_model):  # noqa: F811
    write_corpus(ws.root)
    return write_spec(ws.root, tiny_model)


def test_first_ingest_publishes_a_complete_version(ws, kb):
    events = []
    res = ws.rag.ingest(kb, on_progress=lambda stage, done, total: events.append((stage, done, total)))
    assert res.published and res.ref == "index/kb@1" and res.version == 1
    assert res.files["added"] == ["rag/docs/alpha.md", "rag/docs/beta.md", "rag/docs/cooking.txt"]
    assert res.counts["files"] == 3 and res.counts["documents"] == 3
    assert res.counts["chunks"] == res.counts["embedded"] > 3 and res.counts["cached"] == 0
    json.dumps(res.to_dict())  # the --json summary
    stages = [s for s, _, _ in events]
    for stage in ("files", "chunks", "embedding batches", "build", "verify", "publish"):
        assert stage in stages
    assert ("embedding batches", -(-res.counts["embedded"] // 4), -(-res.counts["embedded"] // 4)) in events

    av = ws.registry.get("index/kb@1", record=False)
    m = av.spec
    assert set(av.files) == {"index.faiss", "chunks.jsonl"} and av.run_id == res.run_id
    assert m["embedder"]["fingerprint"] == ws.rag.index("kb").embedder.fingerprint and m["embedder"]["dim"] == 32
    assert m["chunker"] == {"kind": "recursive", "chunk_size": 24, "chunk_overlap": 4}
    assert m["index"]["factory"] == "IDMap2,Flat" and m["index"]["metric"] == "inner_product"
    assert [s["path"] for s in m["sources"]] == res.files["added"]
    assert all(len(s["digest"]) == 64 and s["chunks"] > 0 for s in m["sources"])
    assert m["counts"]["chunks"] == res.counts["chunks"] and res.av.meta["build"]["seconds"] > 0
    assert "build" not in m  # timings stay out of the digest
    assert m["content_digest"] == res.content_digest

    records = [json.loads(line) for line in ws.registry.read_file(av, "chunks.jsonl").decode().splitlines()]
    assert len(records) == res.counts["chunks"] == len({r["id"] for r in records})
    assert records[0]["occurrences"][0] == {"source": "rag/docs/alpha.md", "doc_id": "rag/docs/alpha.md",
                                            "seq": 0, "start": 0, "n": 0}
    run = ws.get_run(res.run_id)
    assert run.kind == "ingest" and run.status == "finished" and run.tags["index_version"] == "index/kb@1"
    assert run.params["embedder_fingerprint"] == m["embedder"]["fingerprint"]


def test_reingest_unchanged_embeds_nothing_and_publishes_nothing(ws, kb):
    first = ws.rag.ingest(kb)
    again = ws.rag.ingest(kb)
    assert not again.published and again.ref == first.ref and again.counts["embedded"] == 0
    assert again.content_digest == first.content_digest
    assert again.files["unchanged"] == first.files["added"] and again.files["added"] == []
    assert [v.version for v in ws.registry.versions("index/kb")] == [1]
    assert ws.get_run(again.run_id).tags["published"] == "false"


def test_changed_file_reembeds_only_changed_chunks_and_deleted_files_leave(ws, kb):
    first = ws.rag.ingest(kb)
    old = {r["id"] for r in _records(ws, first.ref)}
    alpha = ws.root / "rag/docs/alpha.md"
    alpha.write_text(alpha.read_text().replace("Delete the folder", "Remove the folder"))
    (ws.root / "rag/docs/cooking.txt").unlink()
    res = ws.rag.ingest(kb)
    assert res.published and res.version == 2
    assert res.files == {"added": [], "changed": ["rag/docs/alpha.md"], "unchanged": ["rag/docs/beta.md"],
                         "deleted": ["rag/docs/cooking.txt"]}
    new = {r["id"] for r in _records(ws, res.ref)}
    assert 0 < res.counts["embedded"] == len(new - old) < len(new)
    assert res.counts["cached"] == len(new & old)
    assert all(o["source"] != "rag/docs/cooking.txt" for r in _records(ws, res.ref) for o in r["occurrences"])
    assert [s["path"] for s in ws.registry.get(res.ref, record=False).spec["sources"]] == [
        "rag/docs/alpha.md", "rag/docs/beta.md"]
    # the same content again is still no new version
    assert not ws.rag.ingest(kb).published


def test_chunker_change_rechunks_everything(ws, kb, tiny_model):  # noqa: F811
    ws.rag.ingest(kb)
    write_spec(ws.root, tiny_model, chunk_size=30)
    res = ws.rag.ingest(kb)
    assert res.published and res.files["unchanged"] == ["rag/docs/alpha.md", "rag/docs/beta.md", "rag/docs/cooking.txt"]
    assert res.counts["cached"] == 0 and res.counts["embedded"] == res.counts["chunks"]  # new chunk ids throughout


def test_repeated_text_is_one_chunk_with_every_occurrence(ws, tiny_model):  # noqa: F811
    write_corpus(ws.root, {"docs/a.md": "Shared boilerplate paragraph.", "docs/b.md": "Shared boilerplate paragraph."})
    res = ws.rag.ingest(write_spec(ws.root, tiny_model))
    [rec] = _records(ws, res.ref)
    assert [o["source"] for o in rec["occurrences"]] == ["rag/docs/a.md", "rag/docs/b.md"]
    hit = ws.rag.index("kb").search("boilerplate", k=1)[0]
    assert hit.doc_ids == ["rag/docs/a.md", "rag/docs/b.md"]


def test_formats_together(ws, tiny_model):  # noqa: F811
    write_corpus(ws.root, {"docs/a.md": "# A\n\nMarkdown text.", "docs/b.html": "<p>HTML text.</p>",
                           "data/c.jsonl": '{"id": "x1", "title": "T", "body": "JSON text."}\n'})
    (ws.root / "rag/docs/d.pdf").write_bytes(make_pdf(["PDF text on page one.", "And page two."]))
    spec = write_spec(ws.root, tiny_model, body=f"""\
sources:
  - docs/*
  - {{glob: data/*.jsonl, text_field: body, id_field: id, title_field: title}}
chunker: {{kind: markdown, chunk_size: 60, chunk_overlap: 0}}
embedder: {{model: "{tiny_model}"}}
""")
    res = ws.rag.ingest(spec)
    assert res.ref == "index/kb@1" and res.counts["documents"] == 5
    docs = {o["doc_id"]: r["text"] for r in _records(ws, res.ref) for o in r["occurrences"]}
    assert docs == {"rag/docs/a.md": "# A\n\nMarkdown text.", "rag/docs/b.html": "HTML text.",
                    "rag/docs/d.pdf#page=1": "PDF text on page one.", "rag/docs/d.pdf#page=2": "And page two.",
                    "x1": "T JSON text."}


BAD = {"docs/empty.md": "", "docs/latin.txt": None, "docs/broken.pdf": None}


def _write_bad(root):
    write_corpus(root)
    (root / "rag/docs/empty.md").write_text("")
    (root / "rag/docs/latin.txt").write_bytes("na\u00efve caf\u00e9".encode("latin-1"))
    (root / "rag/docs/broken.pdf").write_bytes(b"%PDF-1.7 garbage")
    (root / "rag/docs/blob.txt").write_bytes(b"\x00\x01\x02binary")


def test_bad_files_stop_the_ingestion_by_default(ws, tiny_model):  # noqa: F811
    _write_bad(ws.root)
    spec = write_spec(ws.root, tiny_model, body=f"""\
sources: ["docs/*", "missing/*.md"]
embedder: {{model: "{tiny_model}"}}
chunker: {{chunk_size: 24, chunk_overlap: 4}}
""")
    with pytest.raises(IngestError) as exc:
        ws.rag.ingest(spec)
    problems = dict(exc.value.problems)
    assert problems == {
        "missing/*.md": problems["missing/*.md"],
        "rag/docs/blob.txt": "binary file (contains NUL bytes), not text: remove it from the glob",
        "rag/docs/broken.pdf": problems["rag/docs/broken.pdf"],
        "rag/docs/empty.md": "empty file",
        "rag/docs/latin.txt": "encoding error: not valid utf-8 at byte 2; convert the file or set `encoding:` on its source",
    }
    assert problems["missing/*.md"].startswith("glob matched no files")
    assert problems["rag/docs/broken.pdf"].startswith("unreadable PDF")
    text = str(exc.value)
    assert "5 source problem(s) in rag/kb.yaml; nothing was published" in text and "on_error: skip" in text
    assert ws.registry.list("index") == []
    [run] = ws.search_runs("attributes.kind = 'ingest'")
    assert run.status == "failed"


def test_on_error_skip_ingests_the_rest_and_lists_the_skipped(ws, tiny_model):  # noqa: F811
    _write_bad(ws.root)
    spec = write_spec(ws.root, tiny_model, body=f"""\
sources: ["docs/*"]
embedder: {{model: "{tiny_model}"}}
chunker: {{chunk_size: 24, chunk_overlap: 4}}
on_error: skip
""")
    res = ws.rag.ingest(spec)
    assert res.published and res.counts["files"] == 3 and res.counts["skipped_files"] == 4
    skipped = ws.registry.get(res.ref, record=False).spec["skipped"]
    assert [s["path"] for s in skipped] == [s["path"] for s in res.skipped] == [
        "rag/docs/blob.txt", "rag/docs/broken.pdf", "rag/docs/empty.md", "rag/docs/latin.txt"]


def test_nothing_readable_is_an_error_even_with_skip(ws, tiny_model):  # noqa: F811
    (ws.root / "rag/docs").mkdir(parents=True)
    (ws.root / "rag/docs/empty.md").write_text("")
    spec = write_spec(ws.root, tiny_model, on_error="skip")
    with pytest.raises(IngestError, match="empty file"):
        ws.rag.ingest(spec)


def test_chunk_size_beyond_the_model_window(ws, tiny_model):  # noqa: F811
    write_corpus(ws.root)
    spec = write_spec(ws.root, tiny_model, chunk_size=500)  # the tiny model reads 128 tokens
    with pytest.raises(SpecError, match=r"rag/kb.yaml: chunker.chunk_size: chunk_size 500 is larger than the "
                                        r"embedder's max sequence length \(128 tokens"):
        ws.rag.ingest(spec)
    assert ws.registry.list("index") == []


def test_hnsw_spec_with_tune_records_the_choice(ws, tiny_model):  # noqa: F811
    write_corpus(ws.root)
    spec = write_spec(ws.root, tiny_model, body=f"""\
sources: ["docs/*"]
embedder: {{model: "{tiny_model}"}}
chunker: {{chunk_size: 16, chunk_overlap: 2}}
index: {{type: hnsw, params: {{M: 8, efSearch: 1}}, tune: {{target: 1.0, queries: 5, k: 3}}}}
""")
    res = ws.rag.ingest(spec)
    index = ws.registry.get(res.ref, record=False).spec["index"]
    assert index["factory"] == "IDMap2,HNSW8" and index["tuning"]["param"] == "efSearch"
    assert index["search_params"]["efSearch"] == index["tuning"]["value"]
    assert index["tuning"]["recall"] == 1.0 and index["tuning"]["reached"]


def _records(ws, ref):
    av = ws.registry.get(ref, record=False)
    return [json.loads(line) for line in ws.registry.read_file(av, "chunks.jsonl").decode().splitlines()]


def test_progress_bars_go_to_a_terminal_stderr_and_stay_off_logs(ws, kb, capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats stderr as a terminal
    ws.rag.ingest(kb, progress=True)
    err = capsys.readouterr().err
    for stage in ("files", "chunks", "embedding batches", "publish"):
        assert stage in err
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    (kb.parent / "docs" / "extra.md").write_text("# Extra\n\nOne more page about tuning.\n")
    events = []
    ws.rag.ingest(kb, progress=True, on_progress=lambda *e: events.append(e))
    assert capsys.readouterr().err == "" and events  # callbacks still fire; no bar frames in a log


def test_unchanged_reingest_loads_no_model_and_imports_nothing_heavy(ws, kb):
    import subprocess
    import sys

    first = ws.rag.ingest(kb)
    code = ("import json, sys, llmops; r = llmops.Workspace(sys.argv[1]).rag.ingest(sys.argv[2]); "
            "print(json.dumps([r.published, r.ref, r.counts['chunks'], sorted(m for m in "
            "('torch', 'sentence_transformers', 'transformers', 'faiss', 'langchain_text_splitters') if m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code, str(ws.root), str(kb)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [False, first.ref, first.counts["chunks"], []]


def test_a_changed_embedder_setting_is_not_mistaken_for_no_change(ws, kb, tiny_model):  # noqa: F811
    first = ws.rag.ingest(kb)
    kb.write_text(kb.read_text().replace("batch_size: 4}", "batch_size: 4, max_seq_length: 64}"))
    res = ws.rag.ingest(kb)
    assert res.published and res.version == 2 and res.counts["embedded"] == res.counts["chunks"]
    assert ws.registry.get(res.ref, record=False).spec["embedder"]["fingerprint"] != \
        ws.registry.get(first.ref, record=False).spec["embedder"]["fingerprint"]


@pytest.mark.parametrize("form", ["dotdot", "absolute", "symlink"])
def test_sources_outside_the_spec_folder_need_allow_outside(ws, tiny_model, tmp_path, form):  # noqa: F811
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    (secret / "secret.md").write_text("# Secret\n\nNot for the index.")
    write_corpus(ws.root)
    glob = {"dotdot": "../../elsewhere/*.md", "absolute": str(secret / "*.md"), "symlink": "docs/**/*.md"}[form]
    if form == "symlink":
        (ws.root / "rag/docs/link.md").symlink_to(secret / "secret.md")
    spec = write_spec(ws.root, tiny_model, body=f"""\
sources: ["{glob}"]
embedder: {{model: "{tiny_model}"}}
chunker: {{chunk_size: 24, chunk_overlap: 4}}
""")
    with pytest.raises(SpecError) as exc:
        ws.rag.ingest(spec)
    text = str(exc.value)
    assert exc.value.field == "sources[0]" and "outside the spec's folder" in text and "allow_outside: true" in text
    assert ws.registry.list("index") == [] and repr(glob) in text
    assert form != "symlink" or "matches a link to" in text and "secret.md" in text
    spec.write_text(spec.read_text() + "allow_outside: true\n")
    res = ws.rag.ingest(spec)
    assert any("secret" in r["text"].lower() for r in _records(ws, res.ref))


def test_glob_matching_nothing_is_reported_before_the_chunk_size_check(ws, tiny_model):  # noqa: F811
    write_corpus(ws.root)
    spec = write_spec(ws.root, tiny_model, body=f"""\
sources: ["nothing/*.md"]
embedder: {{model: "{tiny_model}"}}
chunker: {{chunk_size: 500, chunk_overlap: 4}}
""")  # 500 is also beyond the tiny model's 128 tokens: the missing files are the first thing to fix
    with pytest.raises(IngestError, match="nothing/\\*.md: glob matched no files"):
        ws.rag.ingest(spec)
