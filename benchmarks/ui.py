"""Web UI render times on a large workspace: 10,000 runs and 1,000 asset versions (issue 12: every page
under 200 ms), against the same pages on a small workspace (100 runs, 10 versions) built the same way
in the same process, so the ratio shows what size costs (pages are paged in SQL: it should be ~1).

    .venv/bin/python benchmarks/ui.py [--runs 10000] [--versions 1000] [--repeat 7]

Runs are written straight into the store's tables in one transaction per kind (10,000 runs through
`start_run` would time the writer, not the pages): request runs as the server's tracer records them
(params, request/response/retrieved tags, latency and token metrics, `used` edges to one popular
prompt version), chain runs as their children, fine-tuning runs with a 100-step loss curve, and eval
runs each with a result.json of 100 examples. Versions go through the registry: the repo's example
prompts and chain, 400 more versions of prompt/qa, and adapters/datasets, plus 200 alias moves.
Each page is fetched in process (Starlette's TestClient, the UI mounted at /ui), once to warm, then
`--repeat` times, the two workspaces taking turns; the median and the worst are printed in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent
LIMIT_MS = 200.0
STEPS = 100



def eval_result(run_id: str, target: str, baseline: dict | None, n: int = 100, seed: int = 0) -> dict:
    """A stored eval result (llmops.eval/1) of `n` examples with exact_match and rougeL."""
    rnd = random.Random(seed)
    examples = []
    for i in range(n):
        scores = {"exact_match": float(rnd.random() < 0.5), "rougeL": round(rnd.random(), 3)}
        base = {"exact_match": float(rnd.random() < 0.45), "rougeL": round(rnd.random(), 3)} if baseline else None
        examples.append({"id": f"q{i}", "inputs": {"question": f"What does rule {i} say?"}, "reference": f"Rule {i}.",
                         "prediction": f"Rule {i} says this.", "scores": scores,
                         "baseline_prediction": "Older answer." if baseline else None, "baseline_scores": base})

    def mean(key, field="scores"):
        v = sum(e[field][key] for e in examples) / n
        return {"value": v, "low": v - 0.05, "high": v + 0.05, "scale": 1.0}

    metrics = {k: mean(k) for k in ("exact_match", "rougeL")}
    gates = [{"name": "exact_match >= 0.3", "metric": "exact_match", "kind": "min", "threshold": 0.3,
              "value": metrics["exact_match"]["value"], "passed": metrics["exact_match"]["value"] >= 0.3, "detail": ""}]
    block = None
    if baseline:
        block = {"run_id": baseline["run_id"], "target": baseline["target"],
                 "metrics": {k: mean(k, "baseline_scores") for k in metrics},
                 "deltas": {k: {"delta": 0.02, "low": -0.03, "high": 0.07, "p_better": 0.7} for k in metrics}}
    return {"format": "llmops.eval/1", "run_id": run_id, "created_at": "2026-11-27T12:00:00+00:00",
            "suite": {"name": "qa-heldout", "path": "evals/qa.yaml", "digest": "ab" * 32},
            "target": {"ref": target, "kind": "prompt", "versions": [target, "model/smollm2@1"]},
            "dataset": {"ref": "dataset/qa-test@1", "rows": n, "digest": "cd" * 32},
            "generation": {"max_tokens": 64}, "bootstrap": {"resamples": 1000, "seed": 7, "confidence": 0.95},
            "metrics": metrics, "corpus": {}, "baseline": block, "gates": gates,
            "passed": all(g["passed"] for g in gates), "examples": examples, "counts": {}}


def variant(spec: dict, i: int) -> dict:
    """Prompt spec `spec` with its last line of text changed (a template or the last chat message)."""
    spec = json.loads(json.dumps(spec))
    if spec.get("messages"):
        spec["messages"][-1]["content"] += f"\n(variant {i})"
    else:
        spec["template"] = spec.get("template", "") + f"\n(variant {i})"
    return spec


def build(root: Path, n_runs: int, n_versions: int) -> tuple:
    """A workspace of `n_runs` runs and about `n_versions` asset versions; returns it and ids to visit."""
    import llmops
    from llmops.store.engine import write
    from llmops.store.lineage import add_edges
    from llmops.store.registry import PushItem
    from llmops.store.schema import MetricRow, ParamRow, RunArtifactRow, RunRow, TagRow
    from llmops.workspace import new_run_id

    ws = llmops.Workspace(root)
    shutil.copytree(ROOT / "prompts", root / "prompts")
    ws.prompts.push_folder([root / "prompts"], message="examples")
    base = ws.registry.get("prompt/qa@1", record=False).spec
    pushed = len(ws.registry.list())
    qa_versions = max(2, min(400, n_versions * 2 // 5))
    items = [PushItem("prompt", "qa", variant(base, i), message=f"variant {i}") for i in range(qa_versions)]
    rest = max(0, n_versions - pushed - qa_versions)
    for i in range(rest):
        kind = ("adapter", "dataset", "index")[i % 3]
        items.append(PushItem(kind, f"{kind}-{i % 40}", {"n": i}, message=f"{kind} build {i}"))
    ws.registry.push("model", "smollm2", {"backend": "transformers", "name": "smollm2"})
    for j in range(0, len(items), 250):
        ws.registry.push_many(items[j:j + 250])
    for i in range(min(200, qa_versions)):
        ws.registry.set_alias("prompt/qa", "production", 1 + (i * 7) % qa_versions, reason=f"release {i}")

    now = time.time() - n_runs
    kinds = ["request"] * 70 + ["chain"] * 15 + ["finetune"] * 10 + ["eval"] * 5
    rows, params, tags, metrics, edges, arts = [], [], [], [], [], []
    ids: dict[str, list[str]] = {k: [] for k in set(kinds)}
    last_request = None
    for i in range(n_runs):
        kind = kinds[i % len(kinds)]
        rid = new_run_id()
        t = now + i
        parent = last_request if kind == "chain" else None
        rows.append({"id": rid, "name": {"request": "chat smollm2", "chain": "rag-qa", "finetune": "qa-lora",
                                         "eval": "qa-heldout"}[kind], "kind": kind,
                     "status": "failed" if i % 97 == 0 else "finished", "parent_id": parent, "started_at": t,
                     "ended_at": t + 0.5, "heartbeat_at": t + 0.5, "user": "bench", "host": "bench", "pid": 1,
                     "error": "boom" if i % 97 == 0 else None})
        ids[kind].append(rid)
        if kind == "request":
            last_request = rid
            params += [{"run_id": rid, "key": k, "value": v} for k, v in (
                ("route", "chat.completions"), ("model", "chain/rag-qa"), ("chain_ref", "chain/rag-qa@1"),
                ("model_ref", "model/smollm2@1"))]
            tags += [{"run_id": rid, "key": "request", "value": json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]})},
                     {"run_id": rid, "key": "response", "value": f"answer {i}"},
                     {"run_id": rid, "key": "retrieved", "value": json.dumps(
                         [{"step": "retrieve", "index": "index/handbook@1", "chunk_id": f"doc{j}.md#{i % 9}",
                           "score": 0.9 - j / 10, "rank": j + 1, "source": f"rag/docs/doc{j}.md"} for j in range(4)])}]
            metrics += [{"run_id": rid, "key": k, "value": v, "step": 0, "timestamp": t} for k, v in (
                ("latency_ms.total", 40 + i % 50), ("latency_ms.queue", i % 5), ("tokens.prompt", 50), ("tokens.completion", 20))]
            edges += [(rid, "used", ref) for ref in ("chain/rag-qa@1", "prompt/qa@1", "model/smollm2@1")]
        elif kind == "finetune":
            params += [{"run_id": rid, "key": "lr", "value": ("1e-3", "2e-4", "5e-5")[i % 3]}]
            metrics += [{"run_id": rid, "key": "loss", "value": 2.0 / (s + 1) + (i % 7) / 100, "step": s, "timestamp": t + s / 10}
                        for s in range(STEPS)]
        elif kind == "chain":
            metrics += [{"run_id": rid, "key": "latency_ms.generate", "value": 30.0, "step": 0, "timestamp": t}]
        else:  # eval
            n_eval = len(ids["eval"])
            target = f"prompt/qa@{1 + n_eval % 2}"
            params += [{"run_id": rid, "key": "target", "value": target}, {"run_id": rid, "key": "dataset", "value": "dataset/qa-test@1"}]
            tags += [{"run_id": rid, "key": "passed", "value": "true"}, {"run_id": rid, "key": "eval_dataset", "value": "cd" * 32}]
            metrics += [{"run_id": rid, "key": "exact_match", "value": 0.5, "step": 0, "timestamp": t}]
            edges.append((rid, "used", target))
            previous = ids["eval"][-2] if n_eval > 1 else None
            result = eval_result(rid, target, {"run_id": previous, "target": {"ref": "prompt/qa@1"}} if previous else None, seed=i)
            data = json.dumps(result).encode()
            arts.append({"run_id": rid, "name": "result.json", "digest": ws.artifacts.put(data), "size": len(data)})
    with write(ws.engine) as conn:
        conn.execute(RunRow.__table__.insert(), rows)
        for table, batch in ((ParamRow, params), (TagRow, tags), (MetricRow, metrics), (RunArtifactRow, arts)):
            for j in range(0, len(batch), 20_000):
                conn.execute(table.__table__.insert(), batch[j:j + 20_000])
        add_edges(conn, edges, time.time())
    try:
        from llmops.serve.feedback import add_feedback
    except ImportError:
        add_feedback = None
    if add_feedback is not None:
        for rid in ids["request"][-200:]:
            add_feedback(ws, rid, 1.0, comment="fine", user="bench")
    return ws, ids


def pages(ids: dict) -> dict[str, str]:
    req, ft, ev = ids["request"][-1], ids["finetune"], ids["eval"]
    return {
        "runs (newest first)": "/ui/runs",
        "runs filtered (grammar)": "/ui/runs?filter=" + "metrics.loss+<+0.5+AND+params.lr+%3D+%271e-3%27",
        "runs sorted by a metric": "/ui/runs?order=metrics.loss+ASC&kind=finetune",
        "runs page 40 of requests": "/ui/runs?kind=request&page=40",
        "run (100-step loss chart)": f"/ui/runs/{ft[-1]}",
        "compare 3 runs": f"/ui/compare?runs={ft[-1]},{ft[-2]},{ft[-3]}",
        "assets": "/ui/assets",
        "asset prompt/qa (versions, aliases)": "/ui/assets/prompt/qa",
        "version prompt/qa@production": "/ui/assets/prompt/qa@production",
        "chain graph rag-qa@1": "/ui/assets/chain/rag-qa@1",
        "prompt diff with eval deltas": "/ui/assets/prompt/qa/diff?a=1&b=2",
        "lineage of a request": f"/ui/lineage/{req}",
        "lineage of a popular prompt version": "/ui/lineage/prompt/qa@1",
        "evals (suites, runs)": "/ui/evals",
        "eval page": f"/ui/evals/{ev[-1]}",
        "eval report (100 examples)": f"/ui/evals/{ev[-1]}/report.html",
        "requests": "/ui/requests",
        "request trace": f"/ui/requests/{req}",
        "playground (chain form)": "/ui/playground?chain=rag-qa",
    }


def measure(workspaces: list[tuple], repeat: int) -> list[dict[str, tuple[float, float]]]:
    """Per workspace, page -> (median ms, worst ms); the workspaces take turns on each page, so a
    shared machine's load shifts hit them alike."""
    from fastapi.testclient import TestClient

    from llmops.ui.app import standalone_app

    clients = [(TestClient(standalone_app(ws)), pages(ids)) for ws, ids in workspaces]
    times: list[dict[str, list[float]]] = [{} for _ in clients]
    for label in clients[0][1]:
        for client, urls in clients:
            resp = client.get(urls[label])
            assert resp.status_code == 200, (urls[label], resp.status_code, resp.text[:500])
        for _ in range(repeat):
            for i, (client, urls) in enumerate(clients):
                t0 = time.perf_counter()
                client.get(urls[label])
                times[i].setdefault(label, []).append((time.perf_counter() - t0) * 1000)
    return [{k: (statistics.median(v), max(v)) for k, v in t.items()} for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        small, small_ids = build(Path(tmp) / "small", 100, 10)
        big, big_ids = build(Path(tmp) / "big", args.runs, args.versions)
        built = time.perf_counter() - t0
        from sqlalchemy import func, select

        from llmops.store.engine import read
        from llmops.store.schema import AssetVersionRow, MetricRow, RunRow

        with read(big.engine) as conn:
            n_runs = conn.execute(select(func.count()).select_from(RunRow.__table__)).scalar_one()
            n_versions = conn.execute(select(func.count()).select_from(AssetVersionRow.__table__)).scalar_one()
            n_points = conn.execute(select(func.count()).select_from(MetricRow.__table__)).scalar_one()
        base, large = measure([(small, small_ids), (big, big_ids)], args.repeat)
    print(f"llmops web UI render times; CPU: {cpu_name()} ({os.cpu_count()} logical cores); "
          f"Python {platform.python_version()}; SQLite store")
    print(f"large workspace: {n_runs} runs, {n_versions} asset versions, {n_points} metric points "
          f"(both workspaces built in {built:.0f} s); median of {args.repeat} after one warm-up, in ms")
    print(f"{'page':40} {'small':>8} {'large':>8} {'worst':>8} {'ratio':>6}  under {LIMIT_MS:.0f} ms")
    worst = 0.0
    for label, (median, top) in large.items():
        worst = max(worst, median)
        ratio = median / base[label][0] if base[label][0] else float("nan")
        print(f"{label:40} {base[label][0]:8.1f} {median:8.1f} {top:8.1f} {ratio:6.2f}  {'yes' if median < LIMIT_MS else 'NO'}")
    print(f"slowest page (median) on the large workspace: {worst:.1f} ms")


if __name__ == "__main__":
    main()
