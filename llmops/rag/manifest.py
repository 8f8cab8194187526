"""The index manifest: the spec of every `index/NAME@N` version, one typed model read and written here.

Ingestion writes it (`Manifest(...).to_spec()` is what `registry.push` stores), retrieval and tuning
read it (`read_manifest(av.spec)`), and nothing else touches the dict. The two files of a version sit
beside it in the registry: `index.faiss` (faiss.write_index) and `chunks.jsonl` (one chunk record a line).

Format versions:
    1  `format: llmops.rag.index/1`, no `format_version` (indexes published before this module); read as is.
    2  `format: llmops.rag.index`, `format_version: 2`; the fields are those of version 1.

`content_digest` names what an ingestion produced (embedder fingerprint, chunker and index settings,
every source file's digest, the chunk records), never timings: an ingestion whose content digest
equals the latest version's publishes nothing. Its recipe is frozen (`CONTENT_RECIPE`) so indexes
published in format 1 re-ingest as unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops.digests import canonical_json, sha256_json
from llmops.errors import CorruptArtifact

__all__ = ["CHUNKS_FILE", "FORMAT", "FORMAT_VERSION", "INDEX_FILE", "EmbedderRecord", "IndexRecord", "Manifest",
           "SourceRecord", "TuningRecord", "content_digest", "read_manifest", "read_records", "records_bytes"]

FORMAT = "llmops.rag.index"
FORMAT_VERSION = 2
_FORMAT_V1 = "llmops.rag.index/1"
CONTENT_RECIPE = "llmops.rag.index/1"  # part of every content digest: never change it
INDEX_FILE, CHUNKS_FILE = "index.faiss", "chunks.jsonl"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedderRecord(_Record):
    """Enough to load the very same embedder again at query time, and to refuse another one."""

    model: str = Field(description="The spec's `embedder.model`: 'default' or a folder relative to the spec file.")
    fingerprint: str = Field(description="Names the vectors: model files + settings (llmops.rag.fingerprint).")
    dim: int
    max_seq_length: int
    backend: str | None = None
    precision: str | None = None

    def load_options(self) -> dict[str, Any]:
        return {k: v for k, v in (("max_seq_length", self.max_seq_length), ("backend", self.backend),
                                  ("precision", self.precision)) if v is not None}


class TuningRecord(_Record):
    """What `tune` picked (at ingest time or by `rag tune`) and the recall curve it measured."""

    param: str
    value: int
    recall: float
    target: float
    k: int
    queries: int
    reached: bool
    curve: list[tuple[int, float]] = []
    queries_from: str = "chunk text spans"
    seed: int = 0
    tuned_from: str | None = None


class IndexRecord(_Record):
    type: str
    factory: str
    build_params: dict[str, int] = {}
    search_params: dict[str, int] = {}
    metric: str = "inner_product"
    tuning: TuningRecord | None = None

    def plan(self):
        """The IndexPlan this index was built from (llmops.rag.index)."""
        from llmops.rag.index import IndexPlan

        return IndexPlan(self.type, self.factory, dict(self.build_params), dict(self.search_params), self.metric)


class SourceRecord(_Record):
    """One ingested file: its digest decides whether the next ingestion can reuse its chunks."""

    path: str = Field(description="Relative to the workspace (`../shared/x` too), POSIX separators.")
    digest: str
    bytes: int
    loader: dict[str, Any]
    documents: int
    chunks: int


class Manifest(_Record):
    """The spec of one index version."""

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    name: str
    spec_file: str
    ingest_spec: dict[str, Any]
    embedder: EmbedderRecord
    chunker: dict[str, Any]
    index: IndexRecord
    sources: list[SourceRecord]
    skipped: list[dict[str, str]] = []
    counts: dict[str, int]
    content_digest: str

    def to_spec(self) -> dict[str, Any]:
        """The JSON-ready dict `registry.push` stores (and digests)."""
        return self.model_dump(mode="json")

    def with_tuning(self, search_params: dict[str, int], tuning: TuningRecord) -> "Manifest":
        """The same index with other search-time settings (what `rag tune` publishes)."""
        index = self.index.model_copy(update={"search_params": dict(search_params), "tuning": tuning})
        return self.model_copy(update={"index": index, "format": FORMAT, "format_version": FORMAT_VERSION})


def read_manifest(spec: dict[str, Any], *, ref: str = "index") -> Manifest:
    """Validate a stored manifest of any known format version; raise CorruptArtifact naming the ref otherwise."""
    data = dict(spec)
    fmt, version = data.get("format"), data.get("format_version")
    if fmt == _FORMAT_V1 and version is None:
        data.update(format=FORMAT, format_version=1)
    elif fmt != FORMAT or not isinstance(version, int):
        raise CorruptArtifact(f"{ref} is not an llmops index (format {fmt!r}); re-ingest it from its spec")
    elif version > FORMAT_VERSION:
        raise CorruptArtifact(f"{ref} has manifest format {version}, newer than this llmops reads "
                              f"({FORMAT_VERSION}); upgrade llmops")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        raise CorruptArtifact(f"{ref}: manifest field {field}: {err['msg']}; re-ingest it from its spec") from None


def content_digest(*, embedder_fingerprint: str, chunker: dict[str, Any], plan: dict[str, Any],
                   tune: dict[str, Any] | None, sources: list[SourceRecord], chunks_digest: str) -> str:
    """sha256 of what an ingestion produced; `chunks_digest` is the sha256 of chunks.jsonl."""
    return sha256_json({
        "format": CONTENT_RECIPE, "embedder": embedder_fingerprint, "chunker": chunker, "index": plan,
        "tune": tune, "sources": [{"path": s.path, "digest": s.digest, "loader": s.loader} for s in sources],
        "chunks": chunks_digest,
    })


def records_bytes(records: list[dict[str, Any]]) -> bytes:
    """chunks.jsonl: one canonical JSON chunk record a line."""
    return "".join(canonical_json(r) + "\n" for r in records).encode("utf-8")


def read_records(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
