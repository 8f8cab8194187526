"""`check_job` and `llmops finetune check|run` on the tiny model: the figures a user reads before training,
and every bad input the issue names refused before training starts, with nothing written."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections import namedtuple
from pathlib import Path

import pytest

from llmops.cli import run as cli_run
from llmops.errors import SpecError
from llmops.finetune.checks import check_job

REPO = Path(__file__).resolve().parents[1]
JOB = """\
base_model: tiny
dataset: data.jsonl
lora: {{r: {r}, target_modules: {targets}, bias: {bias}}}
training: {{max_steps: 4, batch_size: 2, max_seq_len: {max_seq_len}}}
output: {output}
"""


def chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}


@pytest.fixture
def tws(ws, tiny_llm_dir):
    """A workspace with model/tiny registered and finetune/data.jsonl of 20 chats."""
    from llmops.models import model_spec

    ws.registry.push("model", "tiny", spec=model_spec(tiny_llm_dir))
    data = ws.root / "finetune" / "data.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps(chat(i)) + "\n" for i in range(20)))
    return ws


def job(ws, *, r=4, targets="[q_proj, v_proj]", bias="none", max_seq_len=128, output="tiny-qa", name="job.yaml",
        extra="") -> Path:
    p = ws.root / "finetune" / name
    p.write_text(textwrap.dedent(JOB.format(r=r, targets=targets, bias=bias, max_seq_len=max_seq_len,
                                            output=output)) + extra)
    return p


def written(ws) -> tuple:
    """What a check must not change: the versions and the runs."""
    return tuple(av.ref for av in ws.registry.list()), tuple(r.id for r in ws.search_runs())


def test_a_good_job_reports_the_figures_training_needs(tws, tiny_llm_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    before = written(tws)
    report = check_job(tws, job(tws))
    assert report.ok and report.errors == [] and report.device == "cpu"
    f = report.to_dict()
    json.dumps(f, allow_nan=False)
    from llmops.models.transformers_backend import peft_quiet

    with peft_quiet():
        real = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llm_dir),
                              LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    assert (f["params"]["trainable"], f["params"]["total"]) == real.get_nb_trainable_parameters()
    assert f["data"]["records"] == 20 and f["data"]["train"] == 18 and f["data"]["validation"] == 2
    assert sum(b["count"] for b in f["data"]["histogram"]) == 20 and f["data"]["truncated"] == 0
    assert "<|im_start|>assistant\nanswer 0<|im_end|>" in f["preview"]["text"] and f["preview"]["line"] == 1
    assert f["vllm"] == {"servable": True, "max_lora_rank": 8, "reasons": []}
    assert f["memory"]["estimate"] is True and f["memory"]["total"] > f["memory"]["weights"] > 0
    assert f["model"]["max_position_embeddings"] == 512 and f["steps"] == 4
    assert f["disk"]["needed"] < f["disk"]["free"]
    assert report.base_av.ref == "model/tiny@1" and len(report.dataset.train) == 18
    assert written(tws) == before                                  # checking writes nothing
    inputs = report.register_inputs(tws)                           # what `run` does once the checks pass
    assert inputs["base"].ref == "model/tiny@1" and inputs["dataset"].ref == "dataset/data@1"
    assert report.register_inputs(tws)["dataset"] == inputs["dataset"]


def test_all_linear_adapts_every_linear_layer(tws):
    f = check_job(tws, job(tws, targets="all-linear")).to_dict()
    assert f["ok"] and f["params"]["trainable"] > check_job(tws, job(tws)).to_dict()["params"]["trainable"]


def test_layers_adapt_only_the_named_decoder_layers_and_must_exist(tws):
    every = check_job(tws, job(tws)).to_dict()["params"]["trainable"]
    top = check_job(tws, job(tws, targets="[q_proj, v_proj], layers: [1]")).to_dict()
    assert top["ok"] and top["params"]["trainable"] * 2 == every     # the tiny model has 2 layers
    report = check_job(tws, job(tws, targets="[q_proj, v_proj], layers: [1, 2]"))
    assert [p.field for p in report.problems] == ["lora.layers"]
    assert "layer 2 does not exist: tiny has 2 layers" in report.errors[0]


def test_a_target_module_not_in_the_model_is_named_with_the_available_ones(tws):
    report = check_job(tws, job(tws, targets="[q_proj, qkv_proj]"))
    assert not report.ok
    err = report.problems[0]
    assert err.field == "lora.target_modules" and err.line == 3
    assert "'qkv_proj' is not a module of tiny" in str(err) and "q_proj, up_proj, v_proj" in str(err)


def test_max_seq_len_over_the_model_context_is_an_error(tws):
    report = check_job(tws, job(tws, max_seq_len=1024))
    assert [p.field for p in report.problems] == ["training.max_seq_len"]
    assert "1024 is over tiny's context of 512 tokens" in report.errors[0]


def test_an_adapter_name_used_on_another_base_is_an_error(tws, tiny_llm_dir, tmp_path):
    from llmops.finetune.adapters import push_adapter
    from llmops.finetune.spec import load_job
    from llmops.models import model_spec

    other = tmp_path / "other"
    shutil.copytree(tiny_llm_dir, other)
    (other / "generation_config.json").write_text('{"temperature": 0.5}')  # another file: another fingerprint
    b = tws.registry.push("model", "tiny-b", spec=model_spec(other))
    folder = tmp_path / "lora"
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (folder / name).write_text("{}")
    data = tws.registry.push("dataset", "d", {"format": "jsonl"}, files={"d.jsonl": b"{}\n"})
    push_adapter(tws, "tiny-qa", folder, base_av=b, dataset_av=data, job=load_job(job(tws), tws))
    report = check_job(tws, job(tws))
    assert [p.field for p in report.problems] == ["output"]
    assert "adapter/tiny-qa is already used by adapter/tiny-qa@1, trained on model/tiny-b@1" in report.errors[0]
    assert check_job(tws, job(tws, output="tiny-qa-2")).ok


def test_no_free_disk_for_checkpoints_is_an_error(tws, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("llmops.finetune.checks.shutil.disk_usage", lambda path: usage(10 << 20, 10 << 20, 1024))
    report = check_job(tws, job(tws))
    assert [p.field for p in report.problems] == ["training.keep_checkpoints"]
    assert "MiB free under" in report.errors[0] and "free disk space" in report.errors[0]


def test_vllm_servability_is_reported(tws):
    f = check_job(tws, job(tws, r=1024)).to_dict()
    assert f["ok"] and f["vllm"]["servable"] is False and "over vLLM's largest --max-lora-rank (512)" in f["vllm"]["reasons"][0]
    assert any("vLLM cannot serve" in w for w in f["warnings"])
    f = check_job(tws, job(tws, r=16, bias="all")).to_dict()
    assert f["vllm"]["servable"] is False and f["vllm"]["max_lora_rank"] == 16 and "bias" in f["vllm"]["reasons"][0]


def test_examples_whose_completion_is_cut_away_are_an_error_when_none_is_left(tws):
    report = check_job(tws, job(tws, max_seq_len=8))
    assert [p.field for p in report.problems] == ["training.max_seq_len"] and "teach nothing" in report.errors[0]


def test_every_problem_is_listed_and_raise_for_errors_names_the_first(tws):
    report = check_job(tws, job(tws, targets="[nope]", max_seq_len=4096))
    assert {p.field for p in report.problems} == {"training.max_seq_len", "lora.target_modules"}
    with pytest.raises(SpecError, match=r"and 1 more problem; see llmops finetune check") as info:
        report.raise_for_errors()
    assert info.value.file.endswith("job.yaml")


def test_a_base_model_that_does_not_exist_stops_the_check(tws):
    p = job(tws)
    p.write_text(p.read_text().replace("base_model: tiny", "base_model: nosuch@3"))
    report = check_job(tws, p)
    assert [e.field for e in report.problems] == ["base_model"] and "nosuch@3" in report.errors[0]


def call(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli_run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_check_prints_the_report_and_exits_2_with_one_error_line(tws, capsys):
    w = str(tws.root)
    code, out, err = call(capsys, "-w", w, "finetune", "check", str(job(tws)))
    assert code == 0 and "ok: the job can run" in out and "trainable" in out and "first example" in out
    code, out, _ = call(capsys, "-w", w, "finetune", "check", "finetune/job.yaml", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    before = written(tws)
    code, out, err = call(capsys, "-w", w, "finetune", "check", str(job(tws, targets="[nope]")))
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "'nope'" in lines[0]
    assert "problem:" in out
    code, out, err = call(capsys, "-w", w, "finetune", "check", str(job(tws)), "--device", "tpu")
    assert code == 2 and "--device 'tpu'" in err
    assert written(tws) == before


@pytest.mark.parametrize("case, words", [
    ("unknown", "unknown field 'epochz'"),
    ("missing-field", "record has no field"),
    ("target", "'nope' is not a module"),
    ("max_seq_len", "over tiny's context"),
])
def test_cli_run_refuses_bad_input_before_training_and_writes_nothing(tws, capsys, case, words):
    path = {"unknown": lambda: job(tws, extra="epochz: 1\n"),
            "missing-field": lambda: job(tws, extra="template: {prompt: qa, completion: answer}\n"),
            "target": lambda: job(tws, targets="[nope]"),
            "max_seq_len": lambda: job(tws, max_seq_len=100_000)}[case]()
    if case == "missing-field":
        (tws.root / "prompts").mkdir()
        (tws.root / "prompts" / "qa.yaml").write_text('name: qa\ntemplate: "Q: {{ question }}"\n'
                                                      'variables: {question: {type: str}}\n')
        tws.prompts.push_folder(tws.root / "prompts")
    before = written(tws)
    code, _out, err = call(capsys, "-w", str(tws.root), "finetune", "run", str(path), "--device", "cpu")
    assert code == 2 and len(err.splitlines()) == 1 and words in err, err
    assert written(tws) == before


@pytest.mark.integration
def test_the_example_job_checks_on_smollm2_with_the_handbook_index(tmp_path, capsys):
    """The real thing: prompts pushed, the handbook ingested with MiniLM, SmolLM2 unregistered until a run."""
    for folder in ("prompts", "rag", "evals", "finetune"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    w = str(tmp_path)
    assert call(capsys, "-w", w, "init")[0] == 0
    assert call(capsys, "-w", w, "prompts", "push")[0] == 0
    assert call(capsys, "-w", w, "rag", "ingest", "rag/handbook.yaml", "--json")[0] == 0
    code, out, err = call(capsys, "-w", w, "finetune", "check", "finetune/handbook-qa.yaml", "--json")
    assert code == 0, err
    f = json.loads(out)
    assert f["data"]["records"] == 229 and f["data"]["format"] == "template" and f["data"]["truncated"] == 0
    assert "Question: What is llmops?" in f["preview"]["text"] and f["vllm"]["servable"]
    assert f["model"]["registered"] is None  # checking registers nothing
