"""Tracking throughput: llmops vs MLflow, each on its own SQLite store, measured in the same run.

    make bench                      # once: builds .venv-bench with mlflow, kept apart from .venv
    .venv/bin/python benchmarks/tracking.py [--metrics 10000] [--params 1000]

MLflow runs in the bench venv as a subprocess (so its pins never touch ours); both sides log the same
points to a fresh SQLite file in a temp folder and time from run start to run end, flush included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MLFLOW_SCRIPT = textwrap.dedent("""
    import json, sys, time, logging
    logging.disable(logging.WARNING)
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    folder, n_metrics, n_params = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    out = {}
    for mode in ("per_call", "log_batch"):
        uri = f"sqlite:///{folder}/mlflow-{mode}.db"
        client = MlflowClient(tracking_uri=uri)
        exp = client.create_experiment(f"bench-{mode}", artifact_location=f"{folder}/art-{mode}")
        t0 = time.perf_counter()
        run = client.create_run(exp)
        rid = run.info.run_id
        if mode == "per_call":
            for i in range(n_params):
                client.log_param(rid, f"p{i}", i)
            for i in range(n_metrics):
                client.log_metric(rid, "loss", 1.0 / (i + 1), step=i)
        else:
            now = int(time.time() * 1000)
            params = [Param(f"p{i}", str(i)) for i in range(n_params)]
            for j in range(0, n_params, 100):
                client.log_batch(rid, params=params[j:j + 100])
            metrics = [Metric("loss", 1.0 / (i + 1), now, i) for i in range(n_metrics)]
            for j in range(0, n_metrics, 1000):
                client.log_batch(rid, metrics=metrics[j:j + 1000])
        client.set_terminated(rid)
        out[mode] = time.perf_counter() - t0
        assert len(client.get_metric_history(rid, "loss")) == n_metrics
    print(json.dumps(out))
""")


def bench_llmops(folder: Path, n_metrics: int, n_params: int) -> float:
    import llmops

    ws = llmops.Workspace(folder / "llmops")
    t0 = time.perf_counter()
    with ws.start_run("bench") as run:
        for i in range(n_params):
            run.log_param(f"p{i}", i)
        for i in range(n_metrics):
            run.log_metric("loss", 1.0 / (i + 1), step=i)
    elapsed = time.perf_counter() - t0
    assert len(ws.get_run(run.id).metric_history("loss")) == n_metrics
    assert len(ws.get_run(run.id).params) == n_params
    ws.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metrics", type=int, default=10_000)
    ap.add_argument("--params", type=int, default=1_000)
    ap.add_argument("--mlflow-python", default=str(ROOT / ".venv-bench" / "bin" / "python"),
                    help="A Python with mlflow installed (make bench builds one).")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours = bench_llmops(folder, args.metrics, args.params)
        if not Path(args.mlflow_python).exists():
            sys.exit(f"{args.mlflow_python} not found: run `make bench` first to build the MLflow venv")
        proc = subprocess.run([args.mlflow_python, "-c", MLFLOW_SCRIPT, tmp, str(args.metrics), str(args.params)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"MLflow side failed:\n{proc.stderr[-2000:]}")
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"logging {args.metrics:,} metric points and {args.params:,} params to SQLite")
    print(f"  llmops (buffered run)          {ours:8.2f} s")
    print(f"  MLflow log_metric per call     {theirs['per_call']:8.2f} s   llmops is {theirs['per_call'] / ours:6.1f}x faster")
    print(f"  MLflow log_batch               {theirs['log_batch']:8.2f} s   llmops is {theirs['log_batch'] / ours:6.1f}x faster")


if __name__ == "__main__":
    main()
