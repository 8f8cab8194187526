"""The fine-tuning job spec: strict fields, errors that name file, line, field and fix, a stable digest."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llmops.errors import SpecError
from llmops.finetune.spec import JobSpec, load_job

REPO = Path(__file__).resolve().parents[1]
GOOD = """\
base_model: tiny
dataset: data.jsonl
lora: {r: 4, target_modules: [q_proj, v_proj]}
training:
  max_steps: 10
  batch_size: 2
output: tiny-qa
"""


def write(folder: Path, text: str, name: str = "job.yaml") -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


def error_of(path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_job(path)
    return info.value


def test_a_valid_job_fills_defaults_and_has_a_digest_of_its_meaning(tmp_path):
    job = load_job(write(tmp_path, GOOD))
    spec = job.spec
    assert spec.training.max_steps == 10 and spec.training.epochs is None
    assert spec.training.completion_only_loss is True and spec.training.lr == 2e-4
    assert spec.validation.fraction == 0.1 and spec.lora.alpha == 16 and spec.format == "auto"
    assert len(job.digest) == 64
    # the same meaning written differently (flow vs block style, defaults spelt out) is the same digest
    same = load_job(write(tmp_path, GOOD.replace("lora: {r: 4, target_modules: [q_proj, v_proj]}",
                                                 "lora:\n  target_modules: [q_proj, v_proj]\n  r: 4\n  alpha: 16"),
                          "same.yaml"))
    assert same.digest == job.digest
    other = load_job(write(tmp_path, GOOD.replace("r: 4", "r: 8"), "other.yaml"))
    assert other.digest != job.digest


def test_the_example_job_in_the_repo_validates_and_retrieves_as_both_rag_qa_chains_do():
    import yaml

    job = load_job(REPO / "finetune" / "handbook-qa.yaml")
    assert job.spec.template.prompt == "rag-qa" and job.spec.retrieval.into == "context"
    for chain in ("rag-qa.chain.yaml", "rag-qa-tuned.chain.yaml"):
        steps = yaml.safe_load((REPO / "prompts" / chain).read_text())["steps"]
        retrieve = next(s for s in steps if s["type"] == "retrieve")
        assert (job.spec.retrieval.index, job.spec.retrieval.k) == (retrieve["index"], retrieve["k"]), chain
    assert job.spec.template.completion == "answer" and job.spec.output == "handbook-qa"


def test_an_unknown_key_names_its_line_and_the_field_it_probably_meant(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("  batch_size: 2", "  batch_sise: 2")))
    assert err.line == 6 and err.field == "training.batch_sise"
    assert "unknown field 'batch_sise'" in str(err) and "did you mean 'batch_size'" in str(err)
    top = error_of(write(tmp_path, GOOD + "epochs: 3\n", "top.yaml"))
    assert top.field == "epochs" and top.line == 8


def test_a_missing_field_says_what_to_add(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("output: tiny-qa\n", "")))
    assert err.field == "output" and "required field is missing" in str(err) and "add `output:`" in str(err)
    err = error_of(write(tmp_path, GOOD.replace("dataset: data.jsonl\n", ""), "nodata.yaml"))
    assert err.field == "dataset"


@pytest.mark.parametrize("change, field, words", [
    (("max_steps: 10", "max_steps: 10\n  epochs: 2"), "training", "exactly one of `epochs:` or `max_steps:`"),
    (("max_steps: 10", "lr: 0.001"), "training", "exactly one of `epochs:` or `max_steps:`"),
    (("max_steps: 10", "max_steps: 0"), "training.max_steps", "greater than or equal to 1"),
    (("batch_size: 2", "batch_size: 2\n  warmup_steps: 3\n  warmup_ratio: 0.1"), "training", "not both"),
    (("r: 4", "r: 0"), "lora.r", "greater than or equal to 1"),
    (("target_modules: [q_proj, v_proj]", "target_modules: []"), "lora.target_modules", "at least one module"),
    (("target_modules: [q_proj, v_proj]", "target_modules: all-lin"), "lora.target_modules", ""),
    (("output: tiny-qa", "output: ../evil"), "output", "adapter name"),
    (("dataset: data.jsonl", "dataset: data.jsonl\nvalidation: {fraction: 0.1, file: v.jsonl}"), "validation",
     "exactly one of `fraction:` or `file:`"),
    (("dataset: data.jsonl", "dataset: data.jsonl\nvalidation: {fraction: 0.9}"), "validation.fraction",
     "less than or equal to 0.5"),
    (("dataset: data.jsonl", "dataset: data.jsonl\nformat: messages\ntemplate: {prompt: qa}"), "",
     "only applies to format: template"),
    (("dataset: data.jsonl", "dataset: data.jsonl\nformat: template"), "", "needs a `template:`"),
    (("dataset: data.jsonl", "dataset: data.jsonl\nretrieval: {index: kb}"), "", "needs a `template:`"),
    (("dataset: data.jsonl", "dataset: data.jsonl\ntemplate: {prompt: qa, inputs: {context: c}}\n"
                             "retrieval: {index: kb, into: context}"), "", "filled by retrieval"),
    (("base_model: tiny", "base_model: model/x@²"), "base_model", ""),
])
def test_bad_values_are_refused_with_the_field(tmp_path, change, field, words):
    err = error_of(write(tmp_path, GOOD.replace(*change)))
    assert err.file == str(tmp_path / "job.yaml")
    if field:
        assert err.field == field, str(err)
        assert err.line is not None
    assert words in str(err)


def test_files_that_are_not_a_job_are_refused(tmp_path):
    with pytest.raises(SpecError, match="no job file"):
        load_job("")
    with pytest.raises(SpecError, match="folder"):
        load_job(tmp_path)
    with pytest.raises(SpecError, match="cannot read"):
        load_job(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match="malformed YAML"):
        load_job(write(tmp_path, "training: [\n", "bad.yaml"))
    with pytest.raises(SpecError, match="mapping"):
        load_job(write(tmp_path, "- a\n- b\n", "list.yaml"))


def test_dataset_paths_resolve_beside_the_job_then_in_the_workspace(tmp_path):
    import llmops

    with llmops.Workspace(tmp_path / "ws") as ws:
        write(ws.root, GOOD.replace("data.jsonl", "evals/d.jsonl"), "finetune/job.yaml")
        write(ws.root, "{}\n", "evals/d.jsonl")
        job = load_job("finetune/job.yaml", ws)  # relative to the workspace, as `rag ingest` specs are
        assert job.path == (ws.root / "finetune" / "job.yaml").resolve()
        assert job.data_path(job.spec.dataset, "dataset") == (ws.root / "evals" / "d.jsonl").resolve()
        write(ws.root, "{}\n", "finetune/evals/d.jsonl")  # beside the job file wins
        assert job.data_path(job.spec.dataset, "dataset") == (ws.root / "finetune" / "evals" / "d.jsonl").resolve()
        assert job.data_path("dataset/qa@2", "dataset") is None and job.data_path("qa-train", "dataset") is None
        with pytest.raises(SpecError) as info:
            job.data_path("nowhere/x.jsonl", "dataset")
        assert info.value.field == "dataset" and info.value.line == 2
        assert "finetune/nowhere/x.jsonl" in str(info.value) and str(ws.root / "nowhere/x.jsonl") in str(info.value)


def test_every_field_has_a_description():
    def walk(model):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name}"
            for sub in getattr(info.annotation, "__args__", ()) + (info.annotation,):
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    walk(sub)

    walk(JobSpec)
