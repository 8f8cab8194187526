"""Loaders: every supported format parses, and every bad file gets its own clear reason."""

from __future__ import annotations

import json

import pytest
from rag_support import make_pdf

from llmops.rag.loaders import SourceProblem, load_file
from llmops.rag.spec import SourceSpec


def src(**kw) -> SourceSpec:
    return SourceSpec(glob="*", **kw)


def test_markdown_and_text(tmp_path):
    (tmp_path / "a.md").write_text("\ufeff# Title\n\nBody text.\n")
    (tmp_path / "b.txt").write_text("just text\n")
    [md] = load_file(tmp_path / "a.md", src(), display="a.md")
    assert (md.doc_id, md.source, md.text, md.format) == ("a.md", "a.md", "# Title\n\nBody text.", "markdown")
    [txt] = load_file(tmp_path / "b.txt", src())
    assert txt.text == "just text" and txt.format == "text"


def test_html_drops_scripts_and_keeps_title(tmp_path):
    (tmp_path / "p.html").write_text("<html><head><title>T</title><style>p{}</style></head><body><h1>Head</h1>"
                                     "<p>First <b>para</b>.</p><script>var x = 1;</script><p>Second.</p></body></html>")
    [doc] = load_file(tmp_path / "p.html", src())
    assert "var x" not in doc.text and "p{}" not in doc.text
    assert "Head" in doc.text and "First" in doc.text and "Second." in doc.text
    assert doc.metadata == {"title": "T"}


def test_pdf_one_document_per_page(tmp_path):
    (tmp_path / "r.pdf").write_bytes(make_pdf(["Page one talks about cats.", "Page two (dogs)."]))
    docs = load_file(tmp_path / "r.pdf", src(), display="r.pdf")
    assert [d.doc_id for d in docs] == ["r.pdf#page=1", "r.pdf#page=2"]
    assert "cats" in docs[0].text and "dogs" in docs[1].text and docs[1].metadata == {"page": 2}


def test_jsonl_beir_style(tmp_path):
    rows = [{"_id": "d1", "title": "Title", "text": "Body."}, {"_id": 7, "title": "", "text": " Only body "},
            {"_id": "d3", "title": "Only title", "text": ""}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = load_file(tmp_path / "c.jsonl", src(id_field="_id", title_field="title"), display="c.jsonl")
    assert [(d.doc_id, d.text) for d in docs] == [("d1", "Title Body."), ("7", "Only body"), ("d3", "Only title")]
    assert docs[0].metadata == {"line": 1, "title": "Title"}
    no_ids = load_file(tmp_path / "c.jsonl", src(), display="c.jsonl")
    assert [d.doc_id for d in no_ids] == ["c.jsonl#L1", "c.jsonl#L2"]  # empty text lines are left out


@pytest.mark.parametrize("name, data, reason", [
    ("empty.md", b"", "empty file"),
    ("blank.txt", b"  \n\n ", "empty file"),
    ("bin.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    ("latin1.md", "caf\u00e9 cr\u00e8me".encode("latin-1"), "encoding error: not valid utf-8 at byte 3"),
    ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "unreadable PDF"),
    ("zero.pdf", b"", "empty file"),
    ("empty.html", b"<html><body><script>x()</script></body></html>", "empty file (no text)"),
    ("data.csv", b"a,b\n1,2\n", "unsupported file type '.csv'"),
    ("bad.jsonl", b'{"text": "ok"}\n{not json}\n', "line 2: not valid JSON"),
    ("nofield.jsonl", b'{"body": "x"}\n', "line 1: no string field 'text'"),
    ("dup.jsonl", b'{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', "line 2: duplicate id '1'"),
    ("list.jsonl", b'[1, 2]\n', "line 1: expected a JSON object"),
])
def test_bad_files_have_clear_reasons(tmp_path, name, data, reason):
    (tmp_path / name).write_bytes(data)
    spec = src(id_field="id") if name == "dup.jsonl" else src()
    with pytest.raises(SourceProblem) as exc:
        load_file(tmp_path / name, spec, display=f"rag/{name}")
    assert exc.value.file == f"rag/{name}"
    assert reason in exc.value.reason


def test_pdf_without_text_and_encoding_option(tmp_path):
    (tmp_path / "blank.pdf").write_bytes(make_pdf([""]))
    with pytest.raises(SourceProblem, match="no extractable text"):
        load_file(tmp_path / "blank.pdf", src())
    (tmp_path / "l.txt").write_bytes("caf\u00e9".encode("latin-1"))
    assert load_file(tmp_path / "l.txt", src(encoding="latin-1"))[0].text == "caf\u00e9"
    (tmp_path / "x.log").write_text("forced text")
    assert load_file(tmp_path / "x.log", src(format="text"))[0].text == "forced text"
