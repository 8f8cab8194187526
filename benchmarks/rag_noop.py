"""Process time of `llmops rag ingest` with nothing changed, and of one `llmops rag query`.

    .venv/bin/python benchmarks/rag_noop.py [--repo PATH] [--runs 3]

In a temporary workspace holding a copy of this repository's `rag/handbook` corpus and spec, it
ingests once (not timed), then runs as fresh processes, `--runs` times each: the same ingest again
(nothing changed: nothing to embed, nothing published) and `rag query handbook "..." -k 4`. It
prints the median wall time and the CPU time (user + sys of the child) of each: on a shared machine
the CPU time is the steadier figure.

`--repo` runs another checkout's code, which is how "before" is measured:

    git worktree add /tmp/llmops-before 3524009 && .venv/bin/python benchmarks/rag_noop.py --repo /tmp/llmops-before

Measured on this 2-core machine while four other engineers ran test suites (load average 7-9, so
wall times are inflated; the CPU time is the comparable figure), all-MiniLM-L6-v2, handbook corpus:

    what                      before (3524009)                      after
    no-op `rag ingest`        CPU 15.8 s (wall 18.0 s at low load)  CPU 1.42 s (wall 3.6 s at load 7.8)
    `rag query ... -k 4`      CPU 16.1 s (wall 14.8 s at low load)  CPU 15.1 s

The no-op ingest now hashes the files and computes the embedder fingerprint from the model's files,
compares with the last manifest and stops: no torch, no sentence-transformers, no FAISS. A query
still has to load the model to embed its text: nearly all of its time is importing sentence-transformers
(about 9 s: it imports scikit-learn, scipy and all of transformers) and torch (about 3 s). Within one
process (a server, a chain, a notebook) the model and each index version are loaded once.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one process; raises if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose llmops to run (default: this one)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "rag_noop.json")
    args = ap.parse_args()

    env = {**os.environ, "PYTHONPATH": str(args.repo.resolve()), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cli = [sys.executable, "-m", "llmops.cli"]
    with tempfile.TemporaryDirectory(prefix="rag-noop-") as tmp:
        ws = Path(tmp)
        shutil.copytree(ROOT / "rag" / "handbook", ws / "rag" / "handbook")
        shutil.copy(ROOT / "rag" / "handbook.yaml", ws / "rag" / "handbook.yaml")
        subprocess.run(cli + ["-w", str(ws), "init"], env=env, check=True, capture_output=True)
        timed(cli + ["-w", str(ws), "rag", "ingest", "rag/handbook.yaml", "--json"], env, ws)  # publishes @1
        results = {}
        for name, extra in (("noop_ingest", ["rag", "ingest", "rag/handbook.yaml", "--json"]),
                            ("query", ["rag", "query", "handbook", "how are aliases audited?", "-k", "4"])):
            runs = [timed(cli + ["-w", str(ws), *extra], env, ws) for _ in range(args.runs)]
            results[name] = {"wall_s": round(statistics.median(w for w, _ in runs), 2),
                             "cpu_s": round(statistics.median(c for _, c in runs), 2), "runs": args.runs}
    report = {"repo": str(args.repo), "load_avg": os.getloadavg()[0], **results}
    print(json.dumps(report, indent=2))
    if args.repo.resolve() == ROOT:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
