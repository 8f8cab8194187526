"""Start-up time of the `llmops` command, against the code before the lazy-import work, in the same run.

    .venv/bin/python benchmarks/startup.py [--runs 9] [--baseline 2da977a]

Times (wall clock, median of N fresh processes) `llmops --help`, `python -c 'import llmops'` and
`llmops runs list` on a fresh workspace, for this checkout and for the baseline commit checked out in
a temporary git worktree (removed at the end; this checkout's HEAD is never touched). Both trees run
the same way, `python -m llmops.cli` with PYTHONPATH pointing at the tree, from an empty folder.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_name

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "llmops --help": ["-m", "llmops.cli", "--help"],
    "import llmops": ["-c", "import llmops"],
    "llmops runs list": ["-m", "llmops.cli", "-w", "{ws}", "runs", "list"],
}


def _env(tree: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "0"}


def _call(tree: Path, args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=cwd, env=_env(tree), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _prepare(tree: Path, cwd: Path) -> Path:
    """A fresh initialised workspace for this tree; checks that the tree's own code is what runs."""
    probe = subprocess.run([sys.executable, "-c", "import llmops; print(llmops.__file__)"], cwd=cwd,
                           env=_env(tree), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(probe).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: python imports llmops from {probe}, not from the tree")
    ws = cwd / "ws"
    subprocess.run([sys.executable, "-m", "llmops.cli", "-w", str(ws), "init"], cwd=cwd, env=_env(tree),
                   check=True, capture_output=True)
    return ws


def measure(trees: dict[str, Path], runs: int) -> dict[str, dict[str, float]]:
    """Median seconds per tree and command; rounds interleave trees and commands so load bursts hit all alike."""
    with tempfile.TemporaryDirectory(prefix="llmops-startup-") as tmp:
        cwds = {label: Path(tmp) / label for label in trees}
        wss = {}
        for label, tree in trees.items():
            cwds[label].mkdir()
            wss[label] = _prepare(tree, cwds[label])
        times = {label: {name: [] for name in CASES} for label in trees}
        for round_ in range(runs + 1):  # round 0 warms bytecode and page caches and is not counted
            for name, args in CASES.items():
                for label, tree in trees.items():
                    took = _call(tree, [a.format(ws=wss[label]) for a in args], cwds[label])
                    if round_:
                        times[label][name].append(took)
    return {label: {name: statistics.median(v) for name, v in per.items()} for label, per in times.items()}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="processes per command and tree (median reported)")
    parser.add_argument("--baseline", default="2da977a", help="the commit to compare against")
    opts = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the worktree is removed on `kill` too
    worktree = Path(tempfile.mkdtemp(prefix="llmops-baseline-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(worktree), opts.baseline],
                   check=True)
    try:
        medians = measure({"before": worktree, "after": REPO}, opts.runs)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
    before, after = medians["before"], medians["after"]

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; "
          f"median of {opts.runs} runs; Python {sys.version.split()[0]}")
    print(f"{'command':18} {'before (' + opts.baseline + ')':>18} {'after':>10} {'speed-up':>9}")
    for name in CASES:
        print(f"{name:18} {before[name]:>16.3f} s {after[name]:>8.3f} s {before[name] / after[name]:>8.1f}x")


if __name__ == "__main__":
    main()
