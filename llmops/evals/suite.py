"""Eval suites: a YAML file in the workspace's `evals/` folder saying what to measure, on what, and how.

    name: qa-heldout
    dataset: data/handbook_qa.test.jsonl     # relative to this file; or a ref: dataset/handbook_qa.test@2
    target: {prompt: qa@production, model: smollm2}
    inputs: {question: question}             # target input -> dataset field
    reference: answer
    metrics: [rougeL, {name: bleu, options: {max_order: 2}}]
    gates: [{metric: rougeL, min: 0.1}, {metric: rougeL, max_regression: 0.02}]
    baseline: production

`load_suite` validates the file (pydantic, extra=forbid, errors with file and line); `load_rows`
checks every dataset row before anything is generated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmops.errors import SpecError
from llmops.prompts.spec import ModelParams

__all__ = ["BootstrapSpec", "GateSpec", "MetricSpec", "Suite", "SuiteSpec", "TargetSpec", "load_rows", "load_suite"]

MAX_ROWS = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSpec(_Strict):
    """What generates the predictions: a chain, or a prompt with a model (and optionally an adapter)."""

    chain: str | None = Field(None, description="Chain ref, e.g. `rag-qa@production`.")
    prompt: str | None = Field(None, description="Prompt ref, e.g. `qa@3` (with `model`).")
    model: str | None = Field(None, description="Model ref or local model, e.g. `smollm2` (with `prompt`).")
    adapter: str | None = Field(None, description="Optional LoRA adapter ref, e.g. `qa-lora@production`.")

    @model_validator(mode="after")
    def _one_kind(self) -> TargetSpec:
        if self.chain is not None:
            if self.prompt or self.model or self.adapter:
                raise ValueError("give either `chain`, or `prompt` + `model` (+ `adapter`), not both")
        elif not (self.prompt and self.model):
            raise ValueError("give `chain: NAME@REF`, or `prompt: NAME@REF` with `model: NAME`")
        return self

    @property
    def kind(self) -> str:
        return "chain" if self.chain is not None else "prompt"

    @property
    def main(self) -> str:
        """The ref a `--target` or a baseline replaces: the chain, else the prompt."""
        return self.chain if self.chain is not None else self.prompt  # type: ignore[return-value]


class MetricSpec(_Strict):
    """One metric and its options (passed to `llmops.evals.scoring.score`)."""

    name: str = Field(description="A metric name, e.g. `bleu`, `rougeL`, `exact_match`, `semantic_similarity`.")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword options of the metric.")


class GateSpec(_Strict):
    """A pass/fail rule on one metric: an absolute minimum, a maximum regression or a minimum improvement against
    the baseline (any of them together)."""

    metric: str = Field(description="A metric listed under `metrics`.")
    min: float | None = Field(None, description="The metric's mean must be at least this (metric scale).")
    max_regression: float | None = Field(
        None, ge=0, description="The mean may fall at most this much below the baseline's (metric scale).")
    min_improvement: float | None = Field(
        None, ge=0, description="The paired difference to the baseline must be at least this at the low end of "
                                "its confidence interval: better beyond the noise (a new adapter against the base).")

    @model_validator(mode="after")
    def _something(self) -> GateSpec:
        if self.min is None and self.max_regression is None and self.min_improvement is None:
            raise ValueError("a gate needs `min:`, `max_regression:` and/or `min_improvement:`")
        return self


class BootstrapSpec(_Strict):
    """Seeded bootstrap for confidence intervals: the same seed gives the same intervals."""

    resamples: int = Field(1000, ge=10, le=100_000, description="How many bootstrap resamples.")
    seed: int = Field(0, ge=0, description="Seed of the resampling.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the intervals.")


class SuiteSpec(_Strict):
    """An eval suite file."""

    name: str = Field(description="The suite's name (names its eval runs).")
    description: str = Field("", description="What the suite measures.")
    dataset: str = Field(description="A JSONL file relative to this suite file (pushed as a `dataset` version on "
                                     "first use), or a dataset ref such as `dataset/handbook_qa.test@2`.")
    target: TargetSpec = Field(description="What generates the predictions.")
    inputs: dict[str, str] = Field(default_factory=dict,
                                   description="Target input -> dataset field (unmapped inputs read the same name).")
    reference: str = Field(description="The dataset field holding the reference answer.")
    id: str | None = Field(None, description="The dataset field holding a row id (default: the row number).")
    limit: int | None = Field(None, ge=1, description="Use only the first N rows (CI subsets).")
    metrics: list[MetricSpec] = Field(min_length=1, description="Metrics, by name or {name, options}.")
    gates: list[GateSpec] = Field(default_factory=list, description="Pass/fail rules; all must pass.")
    baseline: str | None = Field(None, description="Compare with this ref of the target (`production` = the "
                                                   "target's production alias), or an eval run id.")
    bootstrap: BootstrapSpec = Field(default_factory=BootstrapSpec, description="Confidence intervals.")
    generation: ModelParams = Field(default_factory=ModelParams,
                                    description="Generation params overriding the prompt's / chain's.")
    batch_size: int = Field(16, ge=1, le=4096, description="Rows handed to the backend per batch.")

    @field_validator("metrics", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _gates_name_metrics(self) -> SuiteSpec:
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric listed twice in {names}; list each once")
        for gate in self.gates:
            if gate.metric not in names:
                raise ValueError(f"gate on {gate.metric!r}, which is not under `metrics` ({', '.join(names)})")
        return self


@dataclass(frozen=True)
class Suite:
    """A loaded suite: its spec, the file it came from and the spec's digest."""

    spec: SuiteSpec
    path: Path
    digest: str
    where: Any = None  # SourceMap, for errors with lines

    def error(self, field: str, message: str, fix: str | None = None) -> SpecError:
        line = self.where.line(tuple(field.split("."))) if self.where is not None else None
        return SpecError(message, file=str(self.path), field=field, line=line, fix=fix)

    @property
    def dataset_path(self) -> Path | None:
        """The dataset file, when `dataset` names a file rather than a ref."""
        text = self.spec.dataset
        if text.endswith((".jsonl", ".json")) or "/" in text and not text.startswith("dataset/"):
            return (self.path.parent / text).resolve()
        return None

    def input_field(self, name: str) -> str:
        return self.spec.inputs.get(name, name)

    def with_target(self, main: str) -> Suite:
        """The same suite measuring another version of its main target (`--target`, a baseline)."""
        t = self.spec.target
        target = t.model_copy(update={"chain": main} if t.chain is not None else {"prompt": main})
        return Suite(self.spec.model_copy(update={"target": target}), self.path, self.digest, self.where)


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; a SpecError names the file, line and field."""
    from llmops.digests import sha256_json
    from llmops.specfile import load_yaml_file, spec_error_from_validation

    path = Path(path)
    data, where = load_yaml_file(path)
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(exc, where, SuiteSpec) from None
    from llmops.evals import scoring

    for i, metric in enumerate(spec.metrics):
        try:
            scoring.check_metric(metric.name, metric.options)
        except SpecError as exc:
            raise SpecError(str(exc), file=str(path), field=f"metrics[{i}]", line=where.line(("metrics", i))) from None
    return Suite(spec, path, sha256_json(spec.model_dump(mode="json")), where)


def load_rows(suite: Suite, text: str, source: str, needed: list[str]) -> list[dict]:
    """Parse and check JSONL rows: each an object with the reference and every `needed` field.

    `source` names the file in errors; rows are cut to the suite's `limit`.
    """
    spec = suite.spec
    rows: list[dict] = []
    seen_ids: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if spec.limit is not None and len(rows) >= spec.limit:
            break
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise SpecError(f"row on line {lineno} is not valid JSON ({exc})", file=source, line=lineno) from None
        if not isinstance(row, dict):
            raise SpecError(f"row on line {lineno} is a {type(row).__name__}, not a JSON object",
                            file=source, line=lineno)
        for field in [spec.reference, *needed] + ([spec.id] if spec.id else []):
            if field not in row:
                what = "reference" if field == spec.reference else "id" if field == spec.id else "input"
                raise SpecError(f"row on line {lineno} has no field {field!r} (the suite's {what} field); "
                                f"its fields: {', '.join(sorted(row)) or 'none'}",
                                file=source, field=field, line=lineno, fix="fix the row or the suite's field map")
        if not isinstance(row[spec.reference], str):
            raise SpecError(f"row on line {lineno}: the reference {spec.reference!r} must be text, "
                            f"got {type(row[spec.reference]).__name__}", file=source, field=spec.reference, line=lineno)
        rid = str(row[spec.id]) if spec.id else str(len(rows) + 1)
        if rid in seen_ids:
            raise SpecError(f"row on line {lineno} repeats id {rid!r} (first on line {seen_ids[rid]})",
                            file=source, field=spec.id, line=lineno, fix="ids must be unique")
        seen_ids[rid] = lineno
        rows.append({"id": rid, "row": row})
        if len(rows) > MAX_ROWS:
            raise SpecError(f"more than {MAX_ROWS} rows", file=source, fix="set `limit:` in the suite")
    if not rows:
        raise SpecError("the dataset has no rows", file=source, fix="add JSONL rows, one object per line")
    return rows
