"""Split documents into chunks sized in the embedder's own tokens, and name each chunk by its content.

A chunk id is sha256 over (text, chunker config, embedder fingerprint): the same text cut the same way
for the same model has the same id in every ingestion, which is what lets the embedding cache and the
version diff skip work. `faiss_id` folds that id into the int64 FAISS stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmops.digests import sha256_json
from llmops.errors import SpecError
from llmops.rag.loaders import Document
from llmops.rag.spec import ChunkerSpec


@dataclass(frozen=True)
class Chunk:
    """A piece of a document. `seq` is its position within the document, `start` its character offset when known."""

    id: str
    text: str
    source: str
    doc_id: str
    seq: int
    start: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def occurrence(self) -> dict[str, Any]:
        """Where this chunk sits, as stored in chunks.jsonl (a chunk whose text repeats has several)."""
        occ: dict[str, Any] = {"source": self.source, "doc_id": self.doc_id, "seq": self.seq}
        if self.start is not None:
            occ["start"] = self.start
        if self.metadata:
            occ["metadata"] = self.metadata
        return occ


def chunk_hash(text: str, chunker_config: dict[str, Any], embedder_fingerprint: str) -> str:
    """Content id of a chunk, e.g. chunk_hash("hi", {"kind": "none"}, "st-1") -> 64 hex chars, same on every run."""
    return sha256_json({"text": text, "chunker": chunker_config, "embedder": embedder_fingerprint})


def faiss_id(chunk_id: str) -> int:
    """The int64 FAISS id of a chunk: its first 60 bits, so always positive (faiss_id("f"*64) == 2**60 - 1)."""
    return int(chunk_id[:15], 16)


def check_chunk_size(spec: ChunkerSpec, tokenizer: Any, max_seq_length: int, *, file: str | None = None) -> None:
    """A chunk longer than the model's window would be silently cut at embedding time: refuse it up front."""
    if spec.kind == "none":
        return
    special = int(tokenizer.num_special_tokens_to_add()) if hasattr(tokenizer, "num_special_tokens_to_add") else 0
    limit = max_seq_length - special
    if spec.chunk_size > limit:
        raise SpecError(
            f"chunk_size {spec.chunk_size} is larger than the embedder's max sequence length "
            f"({max_seq_length} tokens, {limit} without special tokens)",
            file=file, field="chunker.chunk_size", fix=f"set chunk_size to {limit} or less")


class Chunker:
    """Cuts documents per a ChunkerSpec; lengths are counted with the embedder's tokenizer."""

    def __init__(self, spec: ChunkerSpec, tokenizer: Any, embedder_fingerprint: str):
        self.spec = spec
        self.config = spec.config()
        self.fingerprint = embedder_fingerprint
        self._splitter = None
        if spec.kind != "none":
            from langchain_text_splitters import RecursiveCharacterTextSplitter

            def n_tokens(text: str) -> int:  # verbose=False: whole documents exceed the model length, by design
                return len(tokenizer.encode(text, add_special_tokens=False, verbose=False))

            self._splitter = RecursiveCharacterTextSplitter(
                length_function=n_tokens, chunk_size=spec.chunk_size, chunk_overlap=spec.chunk_overlap)

    def _pieces(self, doc: Document) -> list[tuple[str, int | None, dict[str, Any]]]:
        if self.spec.kind == "none":
            return [(doc.text, 0, {})]
        if self.spec.kind == "markdown" and doc.format == "markdown":
            return self._markdown_pieces(doc.text)
        out, cursor = [], 0
        for piece in self._splitter.split_text(doc.text):
            # Located here rather than with add_start_index: langchain offsets the search by the overlap
            # in length-function units (tokens here), which overshoots and loses overlapping chunks.
            start = doc.text.find(piece, cursor)
            if start < 0:
                start = doc.text.find(piece)
            out.append((piece, start if start >= 0 else None, {}))
            if start >= 0:
                cursor = start + 1
        return out

    def _markdown_pieces(self, text: str) -> list[tuple[str, int | None, dict[str, Any]]]:
        from langchain_text_splitters import MarkdownHeaderTextSplitter

        levels = sorted(set(self.spec.headers))
        md = MarkdownHeaderTextSplitter([("#" * n, f"h{n}") for n in levels], strip_headers=False)
        out: list[tuple[str, int | None, dict[str, Any]]] = []
        for section in md.split_text(text):
            # The header splitter marks paragraph breaks as "  \n"; put the blank lines back so the
            # recursive splitter can still cut between paragraphs.
            body = section.page_content.replace("  \n", "\n\n")
            headers = [section.metadata[f"h{n}"] for n in levels if f"h{n}" in section.metadata]
            meta = {"headers": headers} if headers else {}
            for piece in self._splitter.split_text(body):
                out.append((piece, None, dict(meta)))
        return out

    def split(self, doc: Document) -> list[Chunk]:
        chunks = []
        for seq, (text, start, meta) in enumerate(p for p in self._pieces(doc) if p[0].strip()):
            metadata = {**doc.metadata, **meta}
            chunks.append(Chunk(chunk_hash(text, self.config, self.fingerprint), text, doc.source, doc.doc_id,
                                seq, start, metadata))
        return chunks
