"""Data-parallel fine-tuning: `torchrun --nproc_per_node 2 -m llmops.cli finetune run SPEC` on CPU (gloo)
trains the same steps as one process with the same global batch, and only rank 0 writes to the store."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load

from llmops.finetune.job import run_job

# batch 3 x accum 2 = 6 per step over 19 training examples: step 4 holds one example, so one rank
# joins that step's gradient sync with nothing to train on; dropout 0, since ranks draw their own dropout
JOB = """\
base_model: tiny-llama
dataset: data.jsonl
validation: {fraction: 0.2}
lora: {r: 4, alpha: 8, dropout: 0.0}
training: {max_steps: 4, batch_size: 3, grad_accum: 2, lr: 1.0e-2, checkpoint_every: 2, max_seq_len: 64}
output: tiny-qa
"""


@pytest.fixture
def ddp_ws(ws, tiny_llm_dir):
    from test_finetune_resume import write_job

    from llmops.models import model_spec

    ws.registry.push("model", "tiny-llama", spec=model_spec(str(tiny_llm_dir)))
    write_job(ws.root)
    (ws.root / "finetune" / "job.yaml").write_text(JOB)
    return ws


def losses(ws, run_id):
    return [(p.step, p.value) for p in ws.get_run(run_id).metric_history("loss")]


def test_two_processes_train_the_same_steps_as_one(ddp_ws):
    ws = ddp_ws
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "llmops.cli", "-w", str(ws.root), "finetune", "run", "finetune/job.yaml", "--device", "cpu"],
        cwd=ws.root, env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.count("pushed adapter/tiny-qa@1") == 1  # rank 0 alone pushes and reports

    (ddp,) = ws.search_runs("attributes.kind = 'finetune'")  # rank 1 opened no run
    assert ddp.status == "finished" and ddp.params["world_size"] == "2" and ddp.params["global_batch"] == "6"
    assert sorted(p.name for p in (ws.home / "finetune").iterdir()) == [ddp.id]

    single = run_job(ws, "finetune/job.yaml", device="cpu", progress=False)
    assert [s for s, _ in losses(ws, ddp.id)] == [1, 2, 3, 4]
    assert [v for _, v in losses(ws, ddp.id)] == pytest.approx([v for _, v in losses(ws, single.run_id)], rel=1e-4)
    val = [ws.get_run(r).metrics["val_loss"] for r in (ddp.id, single.run_id)]
    assert val[0] == pytest.approx(val[1], rel=1e-4)

    a = load(ws.registry.read_file(ws.registry.get("adapter/tiny-qa@1"), "adapter_model.safetensors"))
    b = load(ws.registry.read_file(single.adapter, "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    assert any(b[k].abs().sum() > 0 for k in b if "lora_B" in k)  # it did train
