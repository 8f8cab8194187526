"""Training examples from a JSONL dataset, rendered the way serving renders them.

Three record formats:

- `messages`: `{"messages": [{"role": "user", "content": ...}, ..., {"role": "assistant", "content": ...}]}`;
  the last turn (an assistant turn) is the completion, the turns before it the prompt.
- `prompt_completion`: `{"prompt": ..., "completion": ...}`; a text prompt is encoded as a completion
  request, a list of chat turns as a chat.
- `template`: fields rendered through a prompt version (`ws.prompts.get(ref).render_vars`), optionally
  with one variable filled by retrieval from an index, exactly as a chain's `retrieve` and `prompt`
  steps do at serving time.

Why one encoder: training must see the very token ids serving sends. A chat goes through the
tokenizer's chat template with `add_generation_prompt=True` and is tokenized without special tokens;
a text prompt is tokenized with them, as `TransformersBackend.encode` does (a test holds the two equal).
The completion's tokens, then EOS, follow; the loss covers only them unless `completion_only_loss: false`.
An example over `max_seq_len` is cut at the end (counted as truncated).

Bad records (not JSON, empty, a repeat of an earlier record, a field the template needs missing) are a
SpecError naming the file, the line and the field; nothing is built from a dataset with a bad record.
Building reads and tokenizes; it writes nothing (`Dataset.push` stores a path dataset as a version).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.errors import LLMOpsError, SpecError

__all__ = ["DataSource", "DataStats", "Dataset", "Example", "build_dataset", "encode_prompt", "read_records"]

IGNORE = -100            # the label PyTorch's cross-entropy skips
MAX_RECORDS = 1_000_000
MAX_PROBLEMS = 20        # bad records listed before giving up
ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    """One tokenized example: `labels` is `input_ids` with IGNORE on prompt tokens (when completion-only)."""

    input_ids: list[int]
    labels: list[int]
    line: int
    truncated: bool = False
    prompt_tokens: int = 0          # before truncation
    completion_tokens: int = 0      # before truncation, EOS included

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass
class DataSource:
    """One JSONL file's bytes, from a path (pushed as a `dataset` version by `push`) or a dataset version."""

    name: str
    label: str              # what errors call it: the path, or the version ref
    data: bytes
    file_name: str
    digest: str             # the digest the registry gives (or gave) this content
    av: Any = None          # the AssetVersion, once pushed or when resolved from a ref

    def push(self, ws: Any) -> Any:
        """The dataset version holding these bytes; pushed once (the same content is the same version)."""
        if self.av is None:
            found = ws.registry.find("dataset", self.name, self.digest)
            self.av = found or ws.registry.push("dataset", self.name, {"format": "jsonl"},
                                                files={self.file_name: self.data},
                                                message=f"fine-tuning dataset {self.file_name}")
        return self.av


@dataclass
class DataStats:
    """Token counts of every example (before truncation), for the histogram and the truncation share."""

    records: int
    train: int
    validation: int
    max_seq_len: int
    lengths: list[int] = field(default_factory=list)
    truncated: int = 0
    no_completion: int = 0      # examples whose completion was cut away entirely (they teach nothing)

    @property
    def truncated_share(self) -> float:
        return self.truncated / len(self.lengths) if self.lengths else 0.0

    def histogram(self, bins: int = 10) -> list[tuple[int, int, int]]:
        """`[(low, high, count), ...]` over the token lengths, equal-width bins (high inclusive)."""
        if not self.lengths:
            return []
        low, high = min(self.lengths), max(self.lengths)
        width = max(1, -(-(high - low + 1) // bins))
        counts = [0] * (-(-(high - low + 1) // width))
        for n in self.lengths:
            counts[(n - low) // width] += 1
        return [(low + i * width, low + (i + 1) * width - 1, c) for i, c in enumerate(counts)]

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(self.lengths)
        pct = (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else (lambda q: 0)
        return {"records": self.records, "train": self.train, "validation": self.validation,
                "max_seq_len": self.max_seq_len, "truncated": self.truncated,
                "truncated_share": round(self.truncated_share, 4), "no_completion": self.no_completion,
                "tokens": {"min": ordered[0] if ordered else 0, "mean": round(sum(ordered) / len(ordered), 1)
                           if ordered else 0, "p50": pct(0.5), "p95": pct(0.95), "max": ordered[-1] if ordered else 0},
                "histogram": [{"low": lo, "high": hi, "count": c} for lo, hi, c in self.histogram()]}


@dataclass
class Dataset:
    """Train and validation examples, where they came from, and what rendered them."""

    train: list[Example]
    validation: list[Example]
    source: DataSource
    stats: DataStats
    format: str
    preview: str = ""                                  # the first record's example as the model sees it
    preview_line: int = 0                              # its line in the dataset file
    validation_source: DataSource | None = None
    uses: list[Any] = field(default_factory=list)     # prompt and index versions that rendered it

    @property
    def source_ref(self) -> Any:
        """The dataset version (None until `push` for a path dataset)."""
        return self.source.av

    def push(self, ws: Any) -> Any:
        """Store the dataset file(s) as versions (idempotent); returns the training dataset's version.

        Call it after the checks passed and before opening the job's run, then record the versions as used.
        """
        if self.validation_source is not None:
            self.validation_source.push(ws)
        return self.source.push(ws)

    @property
    def versions(self) -> list[Any]:
        """Every version the examples depend on (datasets, prompt, index), once pushed."""
        found = [self.source.av] + ([self.validation_source.av] if self.validation_source else []) + self.uses
        return [v for v in found if v is not None]


# -- reading ----------------------------------------------------------------------------------------

def _source(ws: Any, job: Any, text: str, field_name: str) -> DataSource:
    from llmops.digests import sha256_hex, sha256_json
    from llmops.store.refs import check_name

    path = job.data_path(text, field_name)
    if path is not None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise job.error(field_name, f"cannot read {path}: {exc.strerror or exc}") from None
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", path.name.rsplit(".", 1)[0]).lstrip("._-")[:128] or "dataset"
        check_name(name, "dataset")
        digest = sha256_json({"kind": "dataset", "spec": {"format": "jsonl"}, "files": {path.name: sha256_hex(data)}})
        return DataSource(name, _shown(path, job), data, path.name, digest)
    try:
        av = ws.registry.get(text, kind="dataset", record=False)
    except LLMOpsError as exc:
        raise job.error(field_name, f"cannot resolve {text!r}: {exc}",
                        fix="give a JSONL path, or push the dataset first") from None
    files = [f for f in av.files if f.endswith((".jsonl", ".json"))]
    if len(files) != 1:
        raise job.error(field_name, f"{av.ref} holds {len(files)} JSONL files ({', '.join(av.files) or 'none'}); "
                                    "a fine-tuning dataset version holds exactly one")
    return DataSource(av.name, f"{av.ref}:{files[0]}", ws.registry.read_file(av, files[0]), files[0], av.digest, av)


def _shown(path: Path, job: Any) -> str:
    for base in (job.root, Path.cwd()):
        if base is not None:
            try:
                return str(path.relative_to(Path(base).resolve()))
            except ValueError:
                pass
    return str(path)


def read_records(source: DataSource) -> list[tuple[int, dict]]:
    """`[(line, record), ...]`: JSON objects, blank lines skipped. Raises SpecError for the bad ones."""
    from llmops.digests import canonical_json

    try:
        text = source.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=source.label) from None
    out: list[tuple[int, dict]] = []
    seen: dict[str, int] = {}
    problems: list[SpecError] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            problems.append(SpecError(f"record is not valid JSON ({exc})", file=source.label, line=lineno))
            continue
        if not isinstance(record, dict):
            problems.append(SpecError(f"record is a JSON {type(record).__name__}, not an object",
                                      file=source.label, line=lineno))
            continue
        if not record:
            problems.append(SpecError("empty record {}", file=source.label, line=lineno, fix="remove the line"))
            continue
        key = canonical_json(record)
        if key in seen:
            problems.append(SpecError(f"duplicate record (same as line {seen[key]})", file=source.label,
                                      line=lineno, fix="remove the repeat: it would be trained on twice"))
            continue
        seen[key] = lineno
        out.append((lineno, record))
        if len(out) > MAX_RECORDS:
            raise SpecError(f"more than {MAX_RECORDS:,} records", file=source.label, fix="split the dataset")
        if len(problems) >= MAX_PROBLEMS:
            break
    _raise_problems(problems)
    if not out:
        raise SpecError("the dataset has no records", file=source.label, fix="add JSONL records, one object per line")
    return out


def _raise_problems(problems: list[SpecError]) -> None:
    if not problems:
        return
    first = problems[0]
    if len(problems) > 1:
        lines = ", ".join(str(p.line) for p in problems[1:6] if p.line) + (", ..." if len(problems) > 6 else "")
        more = f"(and {len(problems) - 1} more bad record{'s' if len(problems) > 2 else ''}: line {lines})"
        raise SpecError(f"{_message(first)} {more}",
                        file=first.file, field=first.field, line=first.line, fix=first.fix)
    raise first


def _message(exc: SpecError) -> str:
    """The message of a SpecError without its `file:line: field:` prefix and `(fix)` suffix."""
    text = str(exc)
    prefix = ""
    if exc.file:
        prefix = f"{exc.file}:{exc.line}: " if exc.line else f"{exc.file}: "
    if exc.field:
        prefix += f"{exc.field}: "
    text = text[len(prefix):] if text.startswith(prefix) else text
    suffix = f" ({exc.fix})" if exc.fix else ""
    return text[: len(text) - len(suffix)] if suffix and text.endswith(suffix) else text


# -- rendering --------------------------------------------------------------------------------------

class _Renderer:
    """Record -> (rendered prompt: text or chat turns, completion text), or a SpecError for the record."""

    def __init__(self, ws: Any, job: Any, fmt: str, label: str):
        self.job, self.fmt, self.label = job, fmt, label
        self.prompt = self.index = None
        self.needed: dict[str, str] = {}        # record field -> why it is needed
        self._hits: dict[str, list] = {}        # query -> hits, searched in batches by `prefetch`
        spec = job.spec
        if fmt != "template":
            return
        t = spec.template
        try:
            self.prompt = ws.prompts.get(t.prompt)
        except LLMOpsError as exc:
            raise job.error("template.prompt", f"cannot resolve {t.prompt!r}: {exc}",
                            fix="push the prompt first: llmops prompts push") from None
        variables = self.prompt.variables
        for var in t.inputs:
            if var not in variables:
                raise job.error(f"template.inputs.{var}", f"{self.prompt.label} has no variable {var!r} "
                                f"(variables: {', '.join(sorted(variables)) or 'none'})")
        into = spec.retrieval.into if spec.retrieval else None
        if spec.retrieval is not None:
            if into not in variables:
                raise job.error("retrieval.into", f"{self.prompt.label} has no variable {into!r} to fill "
                                f"(variables: {', '.join(sorted(variables)) or 'none'})")
            try:
                self.index = ws.rag.index(spec.retrieval.index)
            except LLMOpsError as exc:
                raise job.error("retrieval.index", f"cannot open index {spec.retrieval.index!r}: {exc}",
                                fix="ingest it first: llmops rag ingest rag/<spec>.yaml") from None
            self.needed[spec.retrieval.query] = "the retrieval query"
        for var, vspec in variables.items():
            if var == into:
                continue
            if var in t.inputs or vspec.required:
                self.needed.setdefault(t.inputs.get(var, var), f"prompt variable {var!r}")
        self.needed.setdefault(t.completion, "the completion")

    @property
    def uses(self) -> list[Any]:
        return [x for x in (self.prompt.asset if self.prompt else None, self.index.av if self.index else None)
                if x is not None]

    def error(self, line: int, message: str, field: str | None = None, fix: str | None = None) -> SpecError:
        return SpecError(message, file=self.label, field=field, line=line, fix=fix)

    def __call__(self, line: int, record: dict) -> tuple[Any, str]:
        return getattr(self, f"_{self.fmt}")(line, record)

    def prefetch(self, rows: list[tuple[int, dict]]) -> None:
        """Search every record's retrieval query in one batch: one MiniLM call per record cost minutes."""
        if self.index is None:
            return
        r = self.job.spec.retrieval
        queries = {q for _, rec in rows if isinstance(q := rec.get(r.query), str) and q.strip()}
        queries = sorted(queries - self._hits.keys())
        if queries:
            self._hits.update(zip(queries, self.index.search_many(queries, k=r.k)))

    def _text(self, line: int, record: dict, name: str) -> str:
        if name not in record:
            raise self.error(line, f"record has no field {name!r}; its fields: {', '.join(sorted(record))}",
                             field=name, fix=f"add `{name}` or change the job's field names")
        value = record[name]
        if not isinstance(value, str):
            raise self.error(line, f"must be text, got {type(value).__name__}", field=name)
        if not value.strip():
            raise self.error(line, "is empty", field=name, fix="remove the record or fill the field")
        return value

    def _turns(self, line: int, turns: Any, name: str) -> list[dict]:
        from pydantic import ValidationError

        from llmops.models import ChatMessage

        if not isinstance(turns, list) or not turns:
            raise self.error(line, "must be a non-empty list of {role, content} turns", field=name)
        out = []
        for i, turn in enumerate(turns):
            try:
                out.append(ChatMessage.model_validate(turn).model_dump())
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in err["loc"])
                raise self.error(line, f"{err['msg']}" + (f" ({where})" if where else ""), field=f"{name}[{i}]",
                                 fix=f"each turn is {{role: {'|'.join(ROLES)}, content: text}}") from None
        return out

    def _messages(self, line: int, record: dict) -> tuple[Any, str]:
        if "messages" not in record:
            raise self.error(line, f"record has no field 'messages'; its fields: {', '.join(sorted(record))}",
                             field="messages")
        turns = self._turns(line, record["messages"], "messages")
        if turns[-1]["role"] != "assistant":
            raise self.error(line, "the last turn must be the assistant's answer (the completion)",
                             field=f"messages[{len(turns) - 1}]")
        if len(turns) < 2:
            raise self.error(line, "needs a prompt turn before the assistant's answer", field="messages")
        if not turns[-1]["content"].strip():
            raise self.error(line, "the assistant's answer is empty", field=f"messages[{len(turns) - 1}].content")
        return turns[:-1], turns[-1]["content"]

    def _prompt_completion(self, line: int, record: dict) -> tuple[Any, str]:
        for name in ("prompt", "completion"):
            if name not in record:
                raise self.error(line, f"record has no field {name!r}; its fields: {', '.join(sorted(record))}",
                                 field=name)
        prompt = record["prompt"]
        prompt = self._turns(line, prompt, "prompt") if isinstance(prompt, list) else self._text(line, record, "prompt")
        completion = record["completion"]
        if isinstance(completion, list):
            turns = self._turns(line, completion, "completion")
            if len(turns) != 1 or turns[0]["role"] != "assistant":
                raise self.error(line, "a chat completion is one assistant turn", field="completion")
            completion = turns[0]["content"]
            if not completion.strip():
                raise self.error(line, "is empty", field="completion")
        else:
            completion = self._text(line, record, "completion")
        return prompt, completion

    def _template(self, line: int, record: dict) -> tuple[Any, str]:
        spec = self.job.spec
        for name, why in self.needed.items():
            if name not in record:
                raise self.error(line, f"record has no field {name!r} ({why}); its fields: "
                                       f"{', '.join(sorted(record))}", field=name,
                                 fix="fix the record, or map the variable to another field in template.inputs")
        values = {}
        for var in self.prompt.variables:
            src = spec.template.inputs.get(var, var)
            if src in record and (spec.retrieval is None or var != spec.retrieval.into):
                values[var] = record[src]
        if self.index is not None:
            r = spec.retrieval
            query = self._text(line, record, r.query)
            # the retrieve step's search, without its per-call run tags: the same vectors and hits
            hits = self._hits.get(query) or self.index.search_vectors(self.index.embedder.encode([query]), k=r.k)[0]
            values[r.into] = [h.to_dict() for h in hits]
        try:
            rendered = self.prompt.render_vars(values)
        except SpecError as exc:
            raise self.error(line, f"cannot render {self.prompt.label}: {_message(exc)}", field=exc.field) from None
        return rendered, self._text(line, record, spec.template.completion)


def detect_format(record: dict, label: str, line: int) -> str:
    """The format of a record from its fields: `messages` or `prompt_completion`."""
    if "messages" in record:
        return "messages"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    raise SpecError(f"cannot tell the record format from its fields ({', '.join(sorted(record))})",
                    file=label, line=line, field="format",
                    fix="records need `messages`, or `prompt` and `completion`, or give the job a `template:`")


# -- tokenizing -------------------------------------------------------------------------------------

def encode_prompt(tokenizer: Any, rendered: str | list[dict]) -> list[int]:
    """The prompt token ids serving sends for `rendered` (as `TransformersBackend.encode`)."""
    if isinstance(rendered, list):
        if not getattr(tokenizer, "chat_template", None):
            raise SpecError("the base model's tokenizer has no chat template, so chat records cannot be rendered",
                            field="base_model", fix="use a chat model, or text prompts")
        text = tokenizer.apply_chat_template(rendered, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids = list(tokenizer(rendered)["input_ids"])
    if not ids and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id]
    return ids


def _eos(tokenizer: Any) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise SpecError("the base model's tokenizer has no EOS token: the adapter could not learn to stop",
                        field="base_model")
    return int(eos)


def _example(tokenizer: Any, eos: int, line: int, rendered: Any, completion: str, spec: Any) -> Example:
    prompt_ids = encode_prompt(tokenizer, rendered)
    completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"]) + [eos]
    ids = prompt_ids + completion_ids
    limit = spec.training.max_seq_len
    labels = ([IGNORE] * len(prompt_ids) if spec.training.completion_only_loss else list(prompt_ids)) + completion_ids
    return Example(ids[:limit], labels[:limit], line, len(ids) > limit, len(prompt_ids), len(completion_ids))


def _preview(tokenizer: Any, example: Example) -> str:
    return tokenizer.decode(example.input_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def build_dataset(ws: Any, job: Any, tokenizer: Any) -> Dataset:
    """Read, check, render and tokenize the job's dataset; split off validation (seeded) or read its file."""
    spec = job.spec
    source = _source(ws, job, spec.dataset, "dataset")
    records = read_records(source)
    fmt = spec.record_format or detect_format(records[0][1], source.label, records[0][0])
    renderer = _Renderer(ws, job, fmt, source.label)
    eos = _eos(tokenizer)

    def examples(src: DataSource, rows: list[tuple[int, dict]]) -> list[Example]:
        renderer.label = src.label
        renderer.prefetch(rows)
        out, problems = [], []
        for line, record in rows:
            try:
                rendered, completion = renderer(line, record)
            except SpecError as exc:
                problems.append(exc)
                if len(problems) >= MAX_PROBLEMS:
                    break
                continue
            out.append(_example(tokenizer, eos, line, rendered, completion, spec))
        _raise_problems(problems)
        return out

    everything = examples(source, records)
    vsource = None
    if spec.validation.file is not None:
        vsource = _source(ws, job, spec.validation.file, "validation.file")
        vrecords = read_records(vsource)
        train_keys = {json.dumps(r, sort_keys=True) for _, r in records}
        for line, r in vrecords:
            if json.dumps(r, sort_keys=True) in train_keys:
                raise SpecError("this validation record is also in the training data", file=vsource.label, line=line,
                                fix="held-out records must not be trained on")
        train, validation = everything, examples(vsource, vrecords)
    else:
        order = list(range(len(everything)))
        random.Random(spec.training.seed).shuffle(order)
        n_val = int(round(len(everything) * spec.validation.fraction))
        n_val = min(max(n_val, 1), len(everything) - 1) if len(everything) > 1 else 0
        held = set(order[:n_val])
        train = [e for i, e in enumerate(everything) if i not in held]
        validation = [e for i, e in enumerate(everything) if i in held]
    if not train:
        raise job.error("dataset", "no training examples are left after the validation split",
                        fix="add records, or give validation: {file: ...}")
    all_examples = train + validation
    stats = DataStats(records=len(records), train=len(train), validation=len(validation),
                      max_seq_len=spec.training.max_seq_len,
                      lengths=[e.prompt_tokens + e.completion_tokens for e in all_examples],
                      truncated=sum(e.truncated for e in all_examples),
                      no_completion=sum(1 for e in all_examples if e.prompt_tokens >= spec.training.max_seq_len))
    return Dataset(train, validation, source, stats, fmt, _preview(tokenizer, everything[0]), everything[0].line,
                   vsource, renderer.uses)
