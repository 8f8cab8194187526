"""Fine-tuning speed: an llmops job against a minimal hand-written PEFT loop on the same model, data and batch.

    .venv/bin/python benchmarks/finetune.py [--tiny | --model smollm2-config] [--steps 10] [--batch-size 4]
                                            [--max-seq-len 256] [--rounds 2] [--device cpu|cuda]

Both train LoRA (r 8 on q_proj and v_proj, AdamW, linear decay, grad clip 1.0) on the same tokenized
examples of evals/data/handbook_qa.train.jsonl (context passage + question -> answer), one optimizer
step per batch of `--batch-size` (no accumulation), with the same examples in each step. The job is
`llmops.finetune.run_job` in full: its checks, the run and its per-step metrics, a checkpoint half-way,
the validation loss at the end, the adapter push. The hand-written loop is what one writes without
llmops: `model(..., labels=...).loss`, backward, clip, step. Each side runs in its own process (so
peak RSS and GPU memory are its own), alternating over `--rounds` (A B, B A, ...) so that other load on
a shared machine hits both alike. Seconds per step are steady-state: from the end of step 1 to the end
of the step before the last, everything the job does in between included (logging, the checkpoint).
Goal: the job's seconds per step within 10% of the hand-written loop's.

Models: `smollm2` (default, the embedded SmolLM2-135M-Instruct), `--tiny` (the 2-layer test Llama; for a
quick run), `--model smollm2-config` (SmolLM2's shapes with random weights and a BPE tokenizer trained
here: what benchmarks/finetune_gpu.sh runs on a GPU machine, where the GGUF is not at hand).
Prints one JSON object (and writes benchmarks/out/finetune.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
DATA = ROOT / "evals" / "data" / "handbook_qa.train.jsonl"
# SmolLM2-135M-Instruct's shapes, used when its GGUF is not installed (a GPU machine): read from the
# GGUF's config where it is (see smollm2_config).
SMOLLM2 = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
               intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5,
               rope_theta=100000.0, tie_word_embeddings=True)
JOB = """\
base_model: {model}
dataset: data.jsonl
validation: {{fraction: 0.05}}
lora: {{r: 8, alpha: 16, dropout: 0.05, target_modules: [q_proj, v_proj]}}
training: {{max_steps: {steps}, batch_size: {batch}, grad_accum: 1, lr: 2.0e-4, max_seq_len: {seq},
           checkpoint_every: {every}, eval_every: 0, seed: 0}}
output: bench
"""



# -- models -------------------------------------------------------------------------------------------

def smollm2_config() -> dict:
    """SmolLM2's config values: from the installed GGUF when there is one, else the table above."""
    try:
        from transformers import AutoConfig

        from llmops.models.sources import resolve_source

        src = resolve_source("smollm2")
        cfg = AutoConfig.from_pretrained(src.folder, gguf_file=src.gguf_file, local_files_only=True)
        got = {k: getattr(cfg, k) for k in SMOLLM2 if getattr(cfg, k, None) is not None}
        return {**SMOLLM2, **got, "source": f"{src.folder / src.gguf_file}"}
    except Exception as exc:  # no GGUF (a GPU machine), or no gguf reader: the shapes above
        return {**SMOLLM2, "source": f"hard-coded (no GGUF: {type(exc).__name__})"}


def build_smollm2_shaped(folder: Path) -> dict:
    """SmolLM2's shapes with random weights, and a byte-level BPE tokenizer trained on the handbook text."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from model_support import chat_tokenizer, train_bpe

    values = smollm2_config()
    source = values.pop("source")
    texts = [json.loads(line)["passage"] for line in DATA.read_text().splitlines() if line.strip()]
    tokenizer = chat_tokenizer(train_bpe(texts, vocab_size=8192))
    torch.manual_seed(0)
    config = LlamaConfig(**values, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"config_from": source, **values}


def prepare(ws_dir: Path, args) -> dict:
    """A workspace with the model registered, the dataset and the job spec."""
    import llmops
    from llmops.models import model_spec

    ws = llmops.Workspace(ws_dir)
    info: dict = {"model": args.model}
    if args.model == "tiny":
        from model_support import build_tiny_model

        ws.registry.push("model", "bench-model", spec=model_spec(str(build_tiny_model(ws_dir / "model"))))
        ref = "bench-model"
    elif args.model == "smollm2-config":
        info.update(build_smollm2_shaped(ws_dir / "model"))
        ws.registry.push("model", "bench-model", spec=model_spec(str(ws_dir / "model")))
        ref = "bench-model"
    else:
        ref = "smollm2"
    ws.close()
    folder = ws_dir / "finetune"
    folder.mkdir()
    with open(folder / "data.jsonl", "w") as f:
        for line in DATA.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                prompt = f"Context: {r['passage']}\n\nQuestion: {r['question']}"
                f.write(json.dumps({"prompt": [{"role": "user", "content": prompt}], "completion": r["answer"]}) + "\n")
    (folder / "job.yaml").write_text(JOB.format(model=ref, steps=args.steps, batch=args.batch_size,
                                                seq=args.max_seq_len, every=max(1, args.steps // 2)))
    return info


# -- the two sides, each in its own process ----------------------------------------------------------

def _memory(device) -> dict:
    import torch

    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def _mark() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _steady(marks: list[tuple[float, float]], tokens: list[int]) -> dict:
    """Seconds per step and tokens/s from the end of step 1 to the end of the step before the last
    (the job's last step ends with its validation loss, a once-per-job cost shown in job_seconds).

    CPU seconds (all threads of the process) per step are shown too: on a machine shared with other
    work, wall time swings with their load, CPU time much less.
    """
    n = len(marks) - 2
    span = marks[-2][0] - marks[0][0]
    return {"steps": len(marks), "seconds_per_step": span / n, "cpu_seconds_per_step": (marks[-2][1] - marks[0][1]) / n,
            "tokens_per_s": sum(tokens[1:-1]) / span}


def worker_job(ws_dir: Path, device_name: str) -> dict:
    import llmops
    from llmops.finetune.distributed import Dist, resolve_device
    from llmops.finetune.job import run_job

    device = resolve_device(device_name, Dist())
    marks, tokens = [], []

    def hook(stats, run):
        marks.append(_mark())
        tokens.append(stats.tokens)

    ws = llmops.Workspace(ws_dir)
    started = time.perf_counter()
    result = run_job(ws, "finetune/job.yaml", device=device_name, progress=False, on_step=hook)
    total = time.perf_counter() - started
    ws.close()
    return {**_steady(marks, tokens), "job_seconds": total, "train_loss": result.figures.get("train_loss"),
            "precision": result.figures.get("precision"), **_memory(device)}


def worker_hand(ws_dir: Path, device_name: str) -> dict:
    """The loop one writes without llmops, on the job's own tokenized examples and batches."""
    import contextlib

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import get_scheduler

    import llmops
    from llmops.finetune.checks import check_job, resolve_precision
    from llmops.finetune.distributed import Dist, resolve_device
    from llmops.finetune.spec import load_job
    from llmops.finetune.train import Settings, plan

    device = resolve_device(device_name, Dist())
    ws = llmops.Workspace(ws_dir)
    job = load_job("finetune/job.yaml", ws)
    report = check_job(ws, job, device=device_name)
    train, spec = report.dataset.train, job.spec
    model, tok = report.model.model, report.model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batches = plan(len(train), Settings.from_spec(spec.training))  # the job's examples for each step
    torch.manual_seed(0)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                             target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=spec.training.max_steps)
    precision = resolve_precision(spec.training.precision, device.type)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    model.train()
    marks, tokens = [], []
    for step in range(1, spec.training.max_steps + 1):
        examples = [train[i] for i in batches.batch(step)]
        width = max(len(e.input_ids) for e in examples)
        ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in examples], device=device)
        mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in examples],
                            device=device)
        labels = torch.tensor([e.labels + [-100] * (width - len(e.labels)) for e in examples], device=device)
        with autocast:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # what a loop that prints its loss does (and a CUDA sync)
        marks.append(_mark())
        tokens.append(sum(len(e.input_ids) for e in examples))
    ws.close()
    return {**_steady(marks, tokens), "precision": precision, **_memory(device)}


def run_worker(kind: str, ws_dir: Path, device: str, flush_denormal: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--workspace", str(ws_dir), "--device", device]
    cmd += ["--flush-denormal"] if flush_denormal else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"the {kind} worker failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", choices=["smollm2", "tiny", "smollm2-config"])
    ap.add_argument("--tiny", action="store_true", help="the 2-layer test Llama (same as --model tiny)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-seq-len", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (A B, B A, ...)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--worker", choices=["job", "hand"], help=argparse.SUPPRESS)
    ap.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--flush-denormal", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "finetune.json")
    args = ap.parse_args()
    if args.worker:
        if args.flush_denormal:
            import torch

            torch.ones(64, 64) @ torch.ones(64, 64)  # start the thread pool first: its threads take the mode then
            torch.set_flush_denormal(True)
        fn = worker_job if args.worker == "job" else worker_hand
        print(json.dumps(fn(args.workspace, args.device)))
        return
    if args.tiny:
        args.model = "tiny"
    if args.steps < 3:
        ap.error("--steps must be at least 3 (seconds per step are measured from step 2 to the one before the last)")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but torch sees no CUDA device")
    with tempfile.TemporaryDirectory(prefix="llmops-bench-ft-") as tmp:
        ws_dir = Path(tmp) / "ws"
        ws_dir.mkdir()
        info = prepare(ws_dir, args)
        results: dict[str, list[dict]] = {"hand": [], "job": []}
        for r in range(args.rounds):
            for kind in (("hand", "job") if r % 2 == 0 else ("job", "hand")):
                # random weights make denormal floats on CPU, 10-20x slower than real weights: flush them
                # to zero on both sides (trained weights, and GPUs, do not need it)
                results[kind].append(run_worker(kind, ws_dir, args.device, args.model == "smollm2-config"))
                got = results[kind][-1]
                print(f"round {r + 1} {kind}: {got['seconds_per_step']:.4f} s/step, "
                      f"{got['cpu_seconds_per_step']:.4f} CPU s/step", file=sys.stderr)

    def med(kind: str, key: str):
        values = [x[key] for x in results[kind] if x.get(key) is not None]
        return statistics.median(values) if values else None

    summary = {kind: {k: med(kind, k) for k in ("seconds_per_step", "cpu_seconds_per_step", "tokens_per_s",
                                                 "peak_rss_mib", "peak_gpu_mib")}
               for kind in results}
    ratio = summary["job"]["seconds_per_step"] / summary["hand"]["seconds_per_step"]
    cpu_ratio = summary["job"]["cpu_seconds_per_step"] / summary["hand"]["cpu_seconds_per_step"]
    out = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if args.device != "cpu" and torch.cuda.is_available() else None,
        "device": args.device, "model": info, "steps": args.steps, "batch_size": args.batch_size,
        "max_seq_len": args.max_seq_len, "rounds": args.rounds, "runs": results, "median": summary,
        "job_over_hand": round(ratio, 4), "overhead_pct": round(100 * (ratio - 1), 2),
        "job_over_hand_cpu": round(cpu_ratio, 4), "cpu_overhead_pct": round(100 * (cpu_ratio - 1), 2),
        "goal": "job seconds/step within 10% of the hand-written loop", "goal_met": ratio < 1.10,
        "steps_per_s": {k: 1 / v["seconds_per_step"] for k, v in summary.items()},
    }
    text = json.dumps(out, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
