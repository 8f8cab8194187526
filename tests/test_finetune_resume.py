"""Fine-tuning jobs end to end on the tiny Llama: the run and its metrics, the pushed adapter, Ctrl-C,
SIGKILL, failures, and `--resume` reaching the very adapter an uninterrupted run makes."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest

from llmops.errors import LLMOpsError, SpecError
from llmops.finetune.job import run_job

WORDS = "alpha beta gamma delta echo foxtrot golf hotel india juliet kilo lima".split()
JOB = """\
base_model: tiny-llama
dataset: data.jsonl
validation: {{fraction: 0.2}}
lora: {{r: 4, alpha: 8, dropout: 0.1, target_modules: {targets}}}
training: {{max_steps: 6, batch_size: 2, grad_accum: 2, lr: 1.0e-2, checkpoint_every: 2, eval_every: 3, max_seq_len: 64}}
output: tiny-qa
"""


def write_job(root, targets="[q_proj, v_proj]", name="job.yaml"):
    rng = random.Random(0)
    folder = root / "finetune"
    folder.mkdir(exist_ok=True)
    with open(folder / "data.jsonl", "w") as f:
        for _ in range(24):
            q = " ".join(rng.choice(WORDS) for _ in range(4))
            f.write(json.dumps({"prompt": f"Repeat: {q}", "completion": q.upper()}) + "\n")
    (folder / name).write_text(JOB.format(targets=targets))
    return f"finetune/{name}"


@pytest.fixture
def job_ws(ws, tiny_llm_dir):
    from llmops.models import model_spec

    ws.registry.push("model", "tiny-llama", spec=model_spec(str(tiny_llm_dir)))
    write_job(ws.root)
    return ws


def history(ws, run_id, key):
    return [(p.step, p.value) for p in ws.get_run(run_id).metric_history(key)]


def adapter_bytes(ws, av):
    return ws.registry.read_file(av, "adapter_model.safetensors")


def test_a_job_logs_each_step_and_pushes_an_adapter_with_its_lineage(job_ws):
    ws = job_ws
    result = run_job(ws, "finetune/job.yaml", progress=False)
    info = ws.get_run(result.run_id)
    assert (info.kind, info.status) == ("finetune", "finished")
    for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
        assert [s for s, _ in history(ws, result.run_id, key)] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in history(ws, result.run_id, "val_loss")] == [3, 6]
    assert [v for _, v in history(ws, result.run_id, "lr")] == pytest.approx([1e-2 * (6 - s) / 6 for s in range(6)])
    assert info.params["world_size"] == "1" and info.params["device"] == "cpu"
    assert info.params["lora.r"] == "4" and info.params["training.max_steps"] == "6"
    assert info.params["base_model"] == "model/tiny-llama@1" and info.params["dataset"].startswith("dataset/data@")

    av = result.adapter
    assert av.ref == "adapter/tiny-qa@1" and info.tags["adapter"] == av.ref
    assert av.spec["job"]["digest"] == info.params["job_digest"]
    assert av.spec["base"]["fingerprint"] == ws.registry.get("model/tiny-llama@1").spec["fingerprint"]
    assert sorted(av.files) == ["adapter_config.json", "adapter_model.safetensors"]
    assert av.meta["steps"] == 6 and av.meta["val_loss"] == result.figures["val_loss"]
    graph = ws.lineage(result.run_id, depth=1)
    edges = {tuple(e) for e in graph.upstream + graph.downstream}
    assert (result.run_id, "produced", av.ref) in edges
    assert {(result.run_id, "used", ref) for ref in ("model/tiny-llama@1", info.params["dataset"])} <= edges
    folder = ws.home / "finetune" / result.run_id
    assert sorted(p.name for p in folder.iterdir()) == ["adapter", "checkpoint-2", "checkpoint-4"]


def _interrupt_at(step, sig=signal.SIGINT):
    def hook(stats, run):
        if stats.step == step:
            os.kill(os.getpid(), sig)  # a real signal: the handler asks the loop to stop after this step
    return hook


def test_ctrl_c_checkpoints_marks_killed_and_resume_matches_an_uninterrupted_run(job_ws):
    ws = job_ws
    whole = run_job(ws, "finetune/job.yaml", progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_job(ws, "finetune/job.yaml", progress=False, on_step=_interrupt_at(3))
    killed = ws.search_runs("attributes.status = 'killed'")
    assert len(killed) == 1
    run_id = killed[0].id
    assert [s for s, _ in history(ws, run_id, "loss")] == [1, 2, 3]
    assert killed[0].tags["checkpoint_step"] == "3"  # saved on the way out, not only every 2 steps
    assert "adapter" not in killed[0].tags

    resumed = run_job(ws, "finetune/job.yaml", progress=False, resume=True)
    assert resumed.run_id == run_id  # the same run, continued
    info = ws.get_run(run_id)
    assert info.status == "finished" and info.tags["resumed.device"] == "cpu"
    assert history(ws, run_id, "loss") == history(ws, whole.run_id, "loss")  # every step once, same values
    assert history(ws, run_id, "val_loss") == history(ws, whole.run_id, "val_loss")
    assert adapter_bytes(ws, resumed.adapter) == adapter_bytes(ws, whole.adapter)
    assert resumed.adapter.ref == whole.adapter.ref  # the same content: the same version


KILLER = textwrap.dedent("""
    import os, signal, sys, llmops
    from llmops.finetune.job import run_job

    def hook(stats, run):
        if stats.step == 5:  # after the checkpoint of step 4: step 5 is logged, then lost
            run.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    ws = llmops.Workspace(sys.argv[1])
    run_job(ws, "finetune/job.yaml", progress=False, on_step=hook)
""")


def test_sigkill_loses_only_the_steps_after_the_last_checkpoint(job_ws):
    ws = job_ws
    child = subprocess.run([sys.executable, "-c", KILLER, str(ws.root)], capture_output=True, text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    (lost,) = ws.search_runs("attributes.kind = 'finetune'")
    assert lost.state == "lost"
    assert [s for s, _ in history(ws, lost.id, "loss")] == [1, 2, 3, 4, 5]

    resumed = run_job(ws, "finetune/job.yaml", progress=False, resume=True)
    assert resumed.run_id == lost.id
    steps = [s for s, _ in history(ws, lost.id, "loss")]
    assert steps == [1, 2, 3, 4, 5, 6]  # step 5 was logged again from the checkpoint of step 4, not twice
    whole = run_job(ws, "finetune/job.yaml", progress=False)
    assert history(ws, lost.id, "loss") == history(ws, whole.run_id, "loss")
    assert adapter_bytes(ws, resumed.adapter) == adapter_bytes(ws, whole.adapter)


def test_a_failure_mid_way_marks_the_run_failed_and_pushes_nothing(job_ws):
    ws = job_ws

    def fail(stats, run):
        if stats.step == 2:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        run_job(ws, "finetune/job.yaml", progress=False, on_step=fail)
    (failed,) = ws.search_runs("attributes.kind = 'finetune'")
    assert failed.status == "failed" and "disk on fire" in failed.error
    assert ws.registry.list("adapter") == []
    # a failed run can be resumed from its last checkpoint (step 2)
    resumed = run_job(ws, "finetune/job.yaml", progress=False, resume=failed.id)
    assert resumed.run_id == failed.id and resumed.adapter.ref == "adapter/tiny-qa@1"


def test_a_job_that_fails_its_checks_creates_no_run_and_pushes_nothing(job_ws):
    ws = job_ws
    write_job(ws.root, targets="[q_proj, nope_proj]", name="bad.yaml")
    with pytest.raises(SpecError, match=r"bad.yaml:\d+: lora.target_modules: 'nope_proj' is not a module"):
        run_job(ws, "finetune/bad.yaml", progress=False)
    assert ws.search_runs() == []
    assert ws.registry.list("adapter") == [] and ws.registry.list("dataset") == []


def test_resume_refuses_when_there_is_nothing_to_resume(job_ws):
    ws = job_ws
    with pytest.raises(LLMOpsError, match="nothing to resume: no fine-tuning run of job.yaml"):
        run_job(ws, "finetune/job.yaml", progress=False, resume=True)
    done = run_job(ws, "finetune/job.yaml", progress=False)
    with pytest.raises(LLMOpsError, match=f"the last run of job.yaml, {done.run_id}, finished"):
        run_job(ws, "finetune/job.yaml", progress=False, resume=True)
    with ws.start_run("other", kind="eval") as other:
        pass
    with pytest.raises(LLMOpsError, match="is a 'eval' run, not a fine-tuning run"):
        run_job(ws, "finetune/job.yaml", progress=False, resume=other.id)
    assert len(ws.search_runs("attributes.kind = 'finetune'")) == 1


def test_ctrl_c_on_the_command_line_exits_130_and_resume_finishes_the_same_run(job_ws):
    import time

    import llmops.cli

    ws = job_ws
    job = (ws.root / "finetune" / "job.yaml").read_text()
    job = job.replace("max_steps: 6", "max_steps: 40").replace("checkpoint_every: 2", "checkpoint_every: 1")
    (ws.root / "finetune" / "long.yaml").write_text(job)
    child = subprocess.Popen([sys.executable, "-m", "llmops.cli", "-w", str(ws.root), "finetune", "run",
                              "finetune/long.yaml", "--device", "cpu"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and child.poll() is None:
        if list(ws.home.glob("finetune/*/checkpoint-*")):  # training has started: Ctrl-C now
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 130, err[-2000:]
    (run,) = ws.search_runs("attributes.kind = 'finetune'")
    step = int(run.tags["checkpoint_step"])
    assert run.status == "killed" and 0 < step < 40
    assert f"interrupted after step {step}: checkpoint saved, run {run.id[:12]} marked killed" in err
    assert "--resume" in err

    assert llmops.cli.run(["-w", str(ws.root), "finetune", "run", "finetune/long.yaml", "--resume"]) == 0
    info = ws.get_run(run.id)
    assert info.status == "finished" and info.tags["adapter"] == "adapter/tiny-qa@1"
    assert [s for s, _ in history(ws, run.id, "loss")] == list(range(1, 41))


@pytest.mark.integration
def test_smollm2_trains_and_its_adapter_records_the_base_fingerprint(ws):
    """Two short steps on the embedded SmolLM2 (de-quantised from its GGUF): the real base model trains."""
    write_job(ws.root)
    job = (ws.root / "finetune" / "job.yaml").read_text().replace("base_model: tiny-llama", "base_model: smollm2")
    job = job.replace("max_steps: 6, batch_size: 2, grad_accum: 2", "max_steps: 2, batch_size: 2, grad_accum: 1")
    (ws.root / "finetune" / "job.yaml").write_text(job)
    result = run_job(ws, "finetune/job.yaml", device="cpu", progress=False)
    losses = [v for _, v in history(ws, result.run_id, "loss")]
    assert len(losses) == 2 and all(0 < v < 20 for v in losses)
    base = ws.registry.get("model/smollm2")
    assert result.adapter.spec["base"]["fingerprint"] == base.spec["fingerprint"]
