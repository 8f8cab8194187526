"""The fine-tuning job spec: a YAML file in the workspace's `finetune/` folder, validated strictly.

    base_model: smollm2                        # a model ref (the embedded SmolLM2 is registered on first use)
    dataset: ../evals/data/handbook_qa.train.jsonl   # a JSONL file, or a ref: dataset/handbook_qa.train@2
    template: {prompt: rag-qa, inputs: {question: question}, completion: answer}
    retrieval: {index: handbook, k: 4, query: question, into: context}
    validation: {fraction: 0.1}
    lora: {r: 8, alpha: 16, target_modules: [q_proj, v_proj]}
    training: {max_steps: 60, lr: 2.0e-4, batch_size: 4, max_seq_len: 512}
    output: handbook-qa                        # pushed as adapter/handbook-qa

Why strict: a misspelt key (`learning_rate:` for `lr:`) would otherwise train hours with a default.
Every unknown key is an error naming its line and the field it probably meant. The job's digest is the
sha256 of the canonical JSON of the validated spec (defaults filled in), recorded on the adapter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmops.chains.spec import ref_field
from llmops.errors import InvalidRef, SpecError
from llmops.specfile import SourceMap, load_yaml_file, spec_error_from_validation

__all__ = ["Job", "JobSpec", "LoraSpec", "RetrievalSpec", "TemplateSpec", "TrainingSpec", "ValidationSpec",
           "load_job", "resolve_job_path"]

DATA_SUFFIXES = (".jsonl", ".json")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplateSpec(_Strict):
    """Records rendered through a prompt version: the very template (and chat template) serving uses."""

    prompt: ref_field("prompt") = Field(description="Prompt ref: `rag-qa`, `rag-qa@3`, `rag-qa@production`.")
    inputs: dict[str, str] = Field(default_factory=dict,
                                   description="Prompt variable -> record field; unmapped variables read the field "
                                               "of the same name.")
    completion: str = Field("completion", min_length=1, description="The record field holding the target answer.")


class RetrievalSpec(_Strict):
    """Fill one prompt variable with retrieved passages, exactly as a chain's `retrieve` step does."""

    index: ref_field("index") = Field(description="Index ref: `handbook`, `handbook@3`, `handbook@production`.")
    k: int = Field(4, ge=1, le=1000, description="How many passages to retrieve.")
    query: str = Field("question", min_length=1, description="The record field holding the query text.")
    into: str = Field("context", min_length=1, description="The prompt variable the passages fill.")


class ValidationSpec(_Strict):
    """Held-out examples for the validation loss: a seeded fraction of the dataset, or a separate file."""

    fraction: float | None = Field(None, gt=0, le=0.5, description="Share of the records held out (0 < f <= 0.5).")
    file: str | None = Field(None, min_length=1, description="A JSONL file (same format) instead of a split.")

    @model_validator(mode="after")
    def _one(self) -> ValidationSpec:
        if (self.fraction is None) == (self.file is None):
            raise ValueError("give exactly one of `fraction:` or `file:`")
        return self


class LoraSpec(_Strict):
    """The LoRA adapter (PEFT `LoraConfig`)."""

    r: int = Field(8, ge=1, le=4096, description="Rank of the update matrices.")
    alpha: float = Field(16, gt=0, description="Scaling: the update is multiplied by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: Union[Literal["all-linear"], list[str]] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description="Module names to adapt (e.g. q_proj, v_proj), or `all-linear`.")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train.")
    layers: list[int] | None = Field(
        None, description="Adapt only these decoder layers (0-based; PEFT's `layers_to_transform`). Adapting the "
                          "top layers only stops the backward pass there: fewer FLOPs per step on a CPU.")

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("name at least one module, or write `all-linear`")
            if any(not m.strip() for m in value):
                raise ValueError("a module name is empty")
            if len(set(value)) != len(value):
                raise ValueError("a module is named twice")
        return value

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value:
                raise ValueError("name at least one layer, or leave `layers` out to adapt every layer")
            if min(value) < 0 or len(set(value)) != len(value):
                raise ValueError("layers are distinct 0-based indices")
        return value


class TrainingSpec(_Strict):
    """The optimisation loop. Give exactly one of `epochs` and `max_steps`."""

    epochs: float | None = Field(None, gt=0, le=1000, description="Passes over the training examples.")
    max_steps: int | None = Field(None, ge=1, le=10_000_000, description="Optimizer steps (instead of epochs).")
    lr: float = Field(2e-4, gt=0, lt=1, description="Peak learning rate (AdamW).")
    schedule: Literal["linear", "cosine", "constant"] = Field("linear", description="Learning-rate decay after warmup.")
    warmup_steps: int = Field(0, ge=0, description="Steps of linear warmup.")
    warmup_ratio: float | None = Field(None, ge=0, lt=1, description="Warmup as a share of all steps (instead of "
                                                                      "warmup_steps).")
    batch_size: int = Field(4, ge=1, le=65536, description="Examples per forward pass; batch_size x grad_accum is "
                                                           "an optimizer step's global batch, over all processes.")
    grad_accum: int = Field(1, ge=1, le=65536, description="Forward passes per optimizer step.")
    max_grad_norm: float = Field(1.0, ge=0, description="Clip the global gradient norm to this (0: no clipping; "
                                                        "the norm is logged either way).")
    max_seq_len: int = Field(512, ge=8, le=1_048_576, description="Tokens per example; longer ones are cut at the end.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seeds the split, the shuffling, dropout and LoRA init.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 on CUDA if "
                                                                                   "supported, else fp32.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations: less memory, ~30% slower.")
    completion_only_loss: bool = Field(True, description="Loss on the completion tokens only (not the prompt).")
    eval_every: int = Field(0, ge=0, description="Validation loss every N steps (0: only at the end).")
    checkpoint_every: int = Field(50, ge=0, description="Save a checkpoint every N steps (0: only at the end).")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="How many checkpoints to keep on disk.")
    log_every: int = Field(1, ge=1, description="Log metrics every N steps.")

    @model_validator(mode="after")
    def _length(self) -> TrainingSpec:
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("give exactly one of `epochs:` or `max_steps:`")
        if self.warmup_ratio is not None and self.warmup_steps:
            raise ValueError("give `warmup_steps:` or `warmup_ratio:`, not both")
        return self


class JobSpec(_Strict):
    """A LoRA fine-tuning job: base model + dataset (+ template) -> adapter/<output>."""

    description: str = Field("", description="What the job is for.")
    base_model: ref_field("model") = Field("smollm2", description="Model ref (default: the embedded SmolLM2).")
    dataset: str = Field(min_length=1, description="A JSONL file (relative to this file's folder or the workspace) "
                                                   "or a dataset ref such as `dataset/handbook_qa.train@2`.")
    format: Literal["auto", "messages", "prompt_completion", "template"] = Field(
        "auto", description="Record format; auto: `template` when given, else from the first record's fields.")
    template: TemplateSpec | None = Field(None, description="Render records through a prompt (format: template).")
    retrieval: RetrievalSpec | None = Field(None, description="Fill a prompt variable with retrieved passages.")
    validation: ValidationSpec = Field(default_factory=lambda: ValidationSpec(fraction=0.1),
                                       description="Held-out examples (default: a seeded 10% split).")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="The adapter's shape.")
    training: TrainingSpec = Field(description="The optimisation loop.")
    output: str = Field(description="Adapter name: the result is pushed as adapter/<output>.")

    @field_validator("output")
    @classmethod
    def _name(cls, value: str) -> str:
        from llmops.store.refs import check_name

        try:
            return check_name(value, "adapter")
        except InvalidRef as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _format(self) -> JobSpec:
        if self.format == "template" and self.template is None:
            raise ValueError("format: template needs a `template:` (prompt, inputs, completion)")
        if self.template is not None and self.format not in ("auto", "template"):
            raise ValueError(f"`template:` only applies to format: template, not {self.format}")
        if self.retrieval is not None and self.template is None:
            raise ValueError("`retrieval:` fills a prompt variable, so it needs a `template:`")
        if self.retrieval is not None and self.template is not None and self.retrieval.into in self.template.inputs:
            raise ValueError(f"prompt variable {self.retrieval.into!r} is filled by retrieval; "
                             "remove it from template.inputs")
        return self

    @property
    def record_format(self) -> str | None:
        """The format when the spec decides it (None: read it from the first record)."""
        if self.template is not None:
            return "template"
        return None if self.format == "auto" else self.format

    def canonical(self) -> dict[str, Any]:
        """The validated spec with defaults, as JSON data: what the digest covers."""
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class Job:
    """A loaded job file: the spec, where it is, its digest, and its line map for errors."""

    spec: JobSpec
    path: Path
    digest: str
    where: SourceMap | None = None
    root: Path | None = None      # the workspace folder (relative data paths fall back to it)

    @property
    def file(self) -> str:
        return str(self.path)

    def error(self, field: str, message: str, *, fix: str | None = None) -> SpecError:
        """A SpecError naming this file, `field` (dotted) and its line."""
        loc = tuple(int(p) if p.isdigit() else p for p in field.split(".")) if field else ()
        line = self.where.line(loc) if self.where is not None and loc else None
        return SpecError(message, file=self.file, field=field or None, line=line, fix=fix)

    def data_path(self, text: str, field: str) -> Path | None:
        """The file `text` names (relative to this file's folder, else to the workspace), or None for a ref.

        A text that looks like a path but names no file is a SpecError naming both places looked in.
        """
        if text.startswith("dataset/") or not (text.endswith(DATA_SUFFIXES) or "/" in text or os.sep in text):
            return None
        p = Path(text).expanduser()
        if p.is_absolute():
            candidates = [p]
        else:
            candidates = [self.path.parent / p] + ([self.root / p] if self.root is not None else [])
        for c in candidates:
            if c.is_file():
                return c.resolve()
        shown = " or ".join(str(c) for c in dict.fromkeys(candidates))
        raise self.error(field, f"no file {text!r} (looked for {shown})",
                         fix="give a JSONL path relative to the job file or the workspace, or a dataset ref")


def resolve_job_path(path: str | os.PathLike[str], root: Path | None = None) -> Path:
    """A relative job path is looked up in the workspace first ("finetune/qa.yaml"), then in the cwd."""
    p = Path(path).expanduser()
    if root is not None and not p.is_absolute() and (root / p).exists():
        p = root / p
    return p.resolve()


def load_job(path: str | os.PathLike[str], ws: Any = None) -> Job:
    """Read and validate a job file; a SpecError names the file, line, field and fix. Writes nothing."""
    from llmops.digests import sha256_json

    root = Path(ws.root) if ws is not None else None
    if not str(path).strip():
        raise SpecError("no job file given", fix="name a job spec, e.g. finetune/handbook-qa.yaml")
    p = resolve_job_path(path, root)
    if p.is_dir():
        raise SpecError("is a folder; name a job file", file=str(path), fix="e.g. finetune/handbook-qa.yaml")
    data, where = load_yaml_file(p)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(exc, where, JobSpec) from None
    return Job(spec, p, sha256_json(spec.canonical()), where, root)
