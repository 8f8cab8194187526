"""Eval harness throughput: batched generation against sequential `chain.invoke`, and a warm-cache re-run.

    .venv/bin/python benchmarks/evals.py [--rows 64] [--max-tokens 32] [--warm-rows 1000]

(1) The same chain (`qa` prompt -> SmolLM2 -> text) over the first `--rows` questions of
    evals/data/handbook_qa.test.jsonl (cycled when there are fewer): sequential `chain.invoke`
    calls against the harness (`llmops.evals.evaluate`, cold cache, batches through the backend's
    `batch`), in the same process on the same loaded model, interleaved in rounds of `--group` rows
    so that other load on a shared machine hits both alike. Goal: at least 3x the throughput.
(2) A re-run of a `--warm-rows`-example suite with a warm cache (the tiny local Llama generates the
    cold pass, so it is quick), timed end to end: plan, cache look-ups, scoring, storing the run.
    Goal: under 1 s per 1,000 examples.
Prints one JSON object (and writes benchmarks/out/evals.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))



def rows(n: int) -> list[dict]:
    src = [json.loads(line) for line in (ROOT / "evals" / "data" / "handbook_qa.test.jsonl").read_text().splitlines()
           if line.strip()]
    out = []
    for i in range(n):
        r = dict(src[i % len(src)])
        r["id"] = f"{r['id']}-{i}"
        out.append(r)
    return out


def write_suite(folder: Path, name: str, data: list[dict], target: dict, max_tokens: int, metrics: list[str]) -> Path:
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "dataset": f"{name}.jsonl", "target": target,
                                "inputs": {"question": "question"}, "reference": "answer", "id": "id",
                                "metrics": metrics, "generation": {"max_tokens": max_tokens},
                                "batch_size": 64, "bootstrap": {"resamples": 1000}}))
    return path


def generation_benchmark(root: Path, n: int, max_tokens: int, group: int) -> dict:
    import llmops
    from llmops.evals import evaluate

    ws = llmops.Workspace(root / "gen")
    (ws.root / "prompts").mkdir()
    (ws.root / "prompts" / "qa.yaml").write_text((ROOT / "prompts" / "qa.yaml").read_text())
    (ws.root / "prompts" / "qa-bench.chain.yaml").write_text(textwrap.dedent(f"""\
        kind: chain
        name: qa-bench
        inputs: {{question: {{type: str}}}}
        steps:
          - {{name: prompt, type: prompt, prompt: qa}}
          - {{name: generate, type: generate, model: smollm2, params: {{max_tokens: {max_tokens}}}}}
          - {{name: answer, type: parse, parser: text}}
        output: answer
        """))
    ws.prompts.push_folder([ws.root / "prompts"])
    data = rows(n)
    chain = ws.chains.load("qa-bench")
    chain.invoke({"question": "warm-up"})  # load the model outside both timings
    # interleaved rounds of `group` rows (sequential, then the harness on the same rows, cold cache), so
    # load from other processes on a shared machine weighs on both sides alike
    seq_s = harness_s = 0.0
    seq_tokens = harness_tokens = same = 0
    for start in range(0, n, group):
        part = data[start:start + group]
        t0 = time.perf_counter()
        seq = [chain.invoke_traced({"question": r["question"]}) for r in part]
        seq_s += time.perf_counter() - t0
        seq_tokens += sum(r.tokens["completion"] for r in seq)
        suite = write_suite(ws.root, f"bench-{start}", part, {"chain": "qa-bench"}, max_tokens, ["exact_match"])
        t0 = time.perf_counter()
        result = evaluate(ws, suite, progress=False)
        harness_s += time.perf_counter() - t0
        harness_tokens += result["counts"]["completion_tokens"]
        same += sum(e["prediction"] == str(r.output) for e, r in zip(result["examples"], seq))
    ws.close()
    return {"rows": n, "max_tokens": max_tokens,
            "sequential_s": round(seq_s, 2), "sequential_tokens": seq_tokens,
            "sequential_tok_per_s": round(seq_tokens / seq_s, 1),
            "harness_s": round(harness_s, 2), "harness_tokens": harness_tokens,
            "harness_tok_per_s": round(harness_tokens / harness_s, 1), "group": group,
            "speedup_examples_per_s": round(seq_s / harness_s, 2), "same_predictions": same}


def warm_cache_benchmark(root: Path, n: int) -> dict:
    import llmops
    from llmops.evals import evaluate
    from llmops.models import model_spec
    from model_support import build_tiny_model

    ws = llmops.Workspace(root / "warm")
    ws.registry.push("model", "tiny", spec=model_spec(build_tiny_model(root / "tiny")))
    (ws.root / "prompts").mkdir()
    (ws.root / "prompts" / "qa.yaml").write_text((ROOT / "prompts" / "qa.yaml").read_text())
    ws.prompts.push_folder([ws.root / "prompts"])
    suite = write_suite(ws.root, "warm", rows(n), {"prompt": "qa", "model": "tiny"}, 4, ["exact_match"])
    cold = evaluate(ws, suite, progress=False)
    t0 = time.perf_counter()
    warm = evaluate(ws, suite, progress=False)
    warm_s = time.perf_counter() - t0
    ws.close()
    return {"rows": n, "cold_generated": cold["counts"]["generated"], "warm_generated": warm["counts"]["generated"],
            "warm_cached": warm["counts"]["cached"], "warm_s": round(warm_s, 3),
            "warm_s_per_1000": round(warm_s * 1000 / n, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--group", type=int, default=16, help="Rows per interleaved round.")
    ap.add_argument("--warm-rows", type=int, default=1000)
    ap.add_argument("--skip-generation", action="store_true", help="Only the warm-cache part.")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch

    out = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_generation:
            out["generation"] = generation_benchmark(Path(tmp), args.rows, args.max_tokens, args.group)
        out["warm_cache"] = warm_cache_benchmark(Path(tmp), args.warm_rows)
    text = json.dumps(out, indent=2)
    print(text)
    (ROOT / "benchmarks" / "out").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "out" / "evals.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
