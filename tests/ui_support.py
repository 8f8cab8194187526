"""A workspace with something on every UI page, built through the public API (shared by the UI tests).

- a fine-tuning-like run with a loss curve over 12 steps and a child run, a second run to compare;
- prompt/qa@1 and @2 (a template change, a new variable, a model param), chain/tinyqa on model/tiny;
- an eval suite run on qa@1, then on qa@2 against qa@1 (so the diff page shows eval deltas);
- a served-request run as the server's tracer records it (params, tags, latency, retrieved chunks)
  with feedback on it, and `production` moved from 1 to 2 with a reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

QA_V1 = """name: qa
template: "Q: {{ question }}\\nA:"
variables: {question: {type: str}}
model_params: {max_tokens: 4}
"""
QA_V2 = """name: qa
description: shorter answers
template: "Answer briefly.\\nQ: {{ question }}\\nA:"
variables: {question: {type: str}, style: {type: str, default: plain}}
model_params: {max_tokens: 5}
"""
CHAIN = """kind: chain
name: tinyqa
inputs: {question: {type: str}}
steps:
  - {name: prompt, type: prompt, prompt: qa@1}
  - {name: generate, type: generate, model: tiny}
output: generate
"""
SUITE = {
    "name": "qa-suite", "dataset": "data.jsonl", "target": {"prompt": "qa", "model": "tiny"},
    "inputs": {"question": "q"}, "reference": "a", "id": "id", "metrics": ["exact_match"],
    "gates": [{"metric": "exact_match", "min": 0.0}], "bootstrap": {"resamples": 100, "seed": 1},
}


@dataclass
class Built:
    train: str      # run with a loss curve and a child
    other: str      # a second run with a loss curve
    child: str
    eval_a: str     # eval of qa@1
    eval_b: str     # eval of qa@2 against qa@1
    request: str    # a served request with feedback


def build(ws, tiny_llm_dir: Path) -> Built:
    from llmops.evals import evaluate
    from llmops.models import model_spec

    ws.registry.push("model", "tiny", spec=model_spec(tiny_llm_dir))
    prompts = ws.root / "prompts"
    prompts.mkdir()
    (prompts / "qa.yaml").write_text(QA_V1)
    ws.prompts.push_folder([prompts], message="first prompt")
    (prompts / "qa.yaml").write_text(QA_V2)
    (prompts / "tinyqa.chain.yaml").write_text(CHAIN)
    ws.prompts.push_folder([prompts], message="shorter answers")
    ws.registry.set_alias("prompt/qa", "production", 1, reason="first release")

    with ws.start_run("lora-train", kind="finetune") as run:
        run.log_params({"lr": "0.0002", "rank": "8"})
        run.record_used(ws.registry.get("prompt/qa@1", record=False))
        for step in range(12):
            run.log_metrics({"loss": 2.0 / (step + 1), "lr": 0.0002}, step=step)
        run.log_artifact(b'{"ok": true}', name="summary.json")
        with ws.start_run("lora-eval-step", kind="custom") as child:
            child.log_metric("val_loss", 0.7)
    with ws.start_run("lora-train-2", kind="finetune") as other:
        other.log_params({"lr": "0.001", "rank": "8"})
        for step in range(12):
            other.log_metric("loss", 1.5 / (step + 1), step=step)

    evals = ws.root / "evals"
    evals.mkdir()
    rows = [{"id": f"q{i}", "q": f"what is item {i}?", "a": "x"} for i in range(4)]
    (evals / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (evals / "qa.yaml").write_text(json.dumps(SUITE))
    a = evaluate(ws, evals / "qa.yaml", target="qa@1", baseline=None, progress=False)
    b = evaluate(ws, evals / "qa.yaml", target="qa@2", baseline="1", progress=False)

    request = served_request(ws)
    return Built(run.id, other.id, child.id, a["run_id"], b["run_id"], request)


def served_request(ws) -> str:
    """A request run as `llmops serve` records one (see llmops/serve/tracing.py), with feedback."""
    with ws.start_run("chat tiny", kind="request") as run:
        run.log_params({"route": "chat.completions", "model": "chain/tinyqa", "chain_ref": "chain/tinyqa@1",
                        "model_ref": "model/tiny@1", "max_tokens": "4"})
        run.set_tags({
            "request": json.dumps({"model": "chain/tinyqa", "messages": [{"role": "user", "content": "what is item 1?"}]}),
            "response": "item one <b>bold</b>",
            "retrieved": json.dumps([
                {"step": "retrieve", "index": "index/handbook@2", "chunk_id": "handbook.md#3", "score": 0.82, "rank": 1,
                 "source": "rag/docs/handbook.md"},
                {"step": "retrieve", "index": "index/handbook@2", "chunk_id": "handbook.md#9", "score": 0.41, "rank": 2,
                 "source": "rag/docs/handbook.md"}]),
        })
        run.log_metrics({"latency_ms.total": 41.5, "latency_ms.queue": 1.5, "latency_ms.step.generate": 38.0,
                         "tokens.prompt": 12, "tokens.completion": 4})
        for ref in ("chain/tinyqa@1", "prompt/qa@1", "model/tiny@1"):
            run.record_used(ws.registry.get(ref, record=False))
    try:
        from llmops.serve.feedback import add_feedback
    except ImportError:  # a tree without the serving issue: no feedback table either
        return run.id
    add_feedback(ws, f"chatcmpl-{run.id}", 1.0, comment="helpful answer", correction=None, user="tester")
    return run.id
