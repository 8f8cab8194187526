"""Chunking: sizes in the embedder's tokens, overlap, Markdown sections, stable content ids."""

from __future__ import annotations

import pytest

from llmops.errors import SpecError
from llmops.rag.chunking import Chunker, check_chunk_size, chunk_hash, faiss_id
from llmops.rag.loaders import Document
from llmops.rag.spec import ChunkerSpec

LONG = " ".join(f"Sentence number {i} explains one more detail of the ingestion pipeline." for i in range(60))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from llmops.rag.embedder import default_embedder_path

    return AutoTokenizer.from_pretrained(str(default_embedder_path()))


def test_recursive_chunks_fit_the_token_budget_and_overlap(tokenizer):
    chunker = Chunker(ChunkerSpec(kind="recursive", chunk_size=40, chunk_overlap=10), tokenizer, "fp")
    doc = Document("d", LONG, "d.txt")
    chunks = chunker.split(doc)
    assert len(chunks) > 10
    assert all(len(tokenizer.tokenize(c.text)) <= 40 for c in chunks)
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    for c in chunks:  # start offsets point at the chunk in the document
        assert doc.text[c.start:c.start + len(c.text)] == c.text
    assert any(a.start + len(a.text) > b.start for a, b in zip(chunks, chunks[1:]))  # neighbours overlap
    assert " ".join(chunks[0].text.split()) in LONG


def test_markdown_chunks_keep_the_heading_path(tokenizer):
    text = "# Guide\n\nIntro paragraph.\n\n## Install\n\nStep one.\n\nStep two.\n\n```sh\n# not a heading\nmake\n```\n\n## Remove\n\nDelete it."
    chunker = Chunker(ChunkerSpec(kind="markdown", chunk_size=100, chunk_overlap=0), tokenizer, "fp")
    chunks = chunker.split(Document("g.md", text, "g.md", format="markdown"))
    assert [c.metadata["headers"] for c in chunks] == [["Guide"], ["Guide", "Install"], ["Guide", "Remove"]]
    assert chunks[1].text.startswith("## Install") and "Step one.\n\nStep two." in chunks[1].text
    assert "# not a heading" in chunks[1].text
    # Markdown splitting applies to Markdown documents only; other formats are split recursively.
    plain = chunker.split(Document("g.txt", text, "g.txt", format="text"))
    assert len(plain) == 1 and "headers" not in plain[0].metadata


def test_none_keeps_one_chunk_per_document(tokenizer):
    chunker = Chunker(ChunkerSpec(kind="none"), tokenizer, "fp")
    [chunk] = chunker.split(Document("d1", LONG, "c.jsonl", {"title": "T"}, "jsonl"))
    assert chunk.text == LONG and chunk.doc_id == "d1" and chunk.metadata == {"title": "T"}


def test_chunk_ids_hash_text_config_and_embedder():
    cfg = {"kind": "recursive", "chunk_size": 40, "chunk_overlap": 10}
    a = chunk_hash("hello", cfg, "fp1")
    assert a == chunk_hash("hello", dict(reversed(cfg.items())), "fp1") and len(a) == 64
    assert len({a, chunk_hash("hello!", cfg, "fp1"), chunk_hash("hello", {**cfg, "chunk_overlap": 5}, "fp1"),
                chunk_hash("hello", cfg, "fp2")}) == 4
    assert faiss_id("f" * 64) == 2**60 - 1 and faiss_id("0" * 64) == 0


def test_same_document_gives_same_ids(tokenizer):
    spec = ChunkerSpec(kind="recursive", chunk_size=40, chunk_overlap=10)
    one = [c.id for c in Chunker(spec, tokenizer, "fp").split(Document("d", LONG, "d"))]
    two = [c.id for c in Chunker(spec, tokenizer, "fp").split(Document("d", LONG, "d"))]
    assert one == two


def test_chunk_size_above_the_model_window_is_refused(tokenizer):
    check_chunk_size(ChunkerSpec(chunk_size=254, chunk_overlap=0), tokenizer, 256)
    check_chunk_size(ChunkerSpec(kind="none", chunk_size=5000, chunk_overlap=0), tokenizer, 256)
    with pytest.raises(SpecError) as exc:
        check_chunk_size(ChunkerSpec(chunk_size=300, chunk_overlap=0), tokenizer, 256, file="rag/h.yaml")
    assert exc.value.field == "chunker.chunk_size"
    assert "larger than the embedder's max sequence length (256 tokens, 254 without special tokens)" in str(exc.value)
    assert "set chunk_size to 254 or less" in str(exc.value)
