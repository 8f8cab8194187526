"""ROUGE and BLEU over 10,000 pairs: llmops's metric modules against rouge_score and sacrebleu called directly.

    .venv/bin/python benchmarks/evals_metrics.py [--pairs 10000] [--rounds 3]

Each row times the reference library called directly and the same figures through llmops, both
through `llmops.evals.scoring` (what the eval runner calls) and through `evaluate.load(path).compute`,
in the same process, interleaved in a rotating order, best of `--rounds` in CPU seconds of this process (the machines we
measure on are shared, and wall time there moves by tens of percent between runs); the ratio is llmops / direct (goal: <= 1.2) and
`equal` says whether the values are the same (per example, and the aggregate). The pairs are seeded
random sentences from a word list: edits of the reference (overlap), unrelated sentences, identical
ones and a few empty strings.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import sys
import time
from pathlib import Path

from machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = ("the a an of to in on for with cat dog runs ran running quickly slowly brown lazy fox jumps over "
         "handbook policy employees must submit their expenses within 30 days 2024 Monday office opens "
         "at 9am café don't it's U.S. e-mail well-known , ! ? ; : ( )").split()
ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def make_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    preds, refs = [], []
    for _ in range(n):
        ref = [rng.choice(WORDS) for _ in range(rng.randint(5, 40))]
        roll = rng.random()
        if roll < 0.6:
            pred = [w for w in ref if rng.random() > 0.25]
            for _ in range(rng.randint(0, 4)):
                pred.insert(rng.randint(0, len(pred)), rng.choice(WORDS))
        elif roll < 0.85:
            pred = [rng.choice(WORDS) for _ in range(rng.randint(5, 40))]
        elif roll < 0.97:
            pred = list(ref)
        else:
            pred = []
        preds.append(" ".join(pred))
        refs.append(" ".join(ref))
    return preds, refs



def best_of(rounds: int, jobs: dict, before=None) -> tuple[dict[str, float], dict]:
    """Run each job once per round, in a rotated order, after a full garbage collection; the best time
    of each and its last result."""
    times = {k: float("inf") for k in jobs}
    results = {}
    names = list(jobs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if before:
                before()
            gc.collect()
            t0 = time.process_time()
            results[name] = jobs[name]()
            times[name] = min(times[name], time.process_time() - t0)
    return times, results


def close(a, b, rel=1e-12) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-15
    return a == b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")

    import sacrebleu
    from rouge_score import rouge_scorer

    from llmops.evals import scoring

    preds, refs = make_pairs(args.pairs)
    modules = {name: scoring.load_module(name) for name in ("rougeL", "bleu", "sacrebleu")}
    forget = scoring._recent.clear  # scoring remembers its last results: time real work every round

    def direct_rouge(types):
        scorer = rouge_scorer.RougeScorer(types)
        scores = [scorer.score(r, p) for p, r in zip(preds, refs)]
        return {t: [s[t].fmeasure for s in scores] for t in types}

    def direct_sentence_bleu():
        bleu = sacrebleu.BLEU(effective_order=True)
        return [bleu.sentence_score(p, [r]).score for p, r in zip(preds, refs)]

    def direct_corpus_bleu(**options):
        out = sacrebleu.BLEU(**options).corpus_score(preds, [refs])
        return {"score": out.score, "counts": out.counts, "totals": out.totals, "precisions": out.precisions,
                "bp": out.bp, "sys_len": out.sys_len, "ref_len": out.ref_len}

    comparisons = [
        ("ROUGE-L per example", {
            "rouge_score": lambda: direct_rouge(["rougeL"])["rougeL"],
            "llmops scoring.score": lambda: scoring.score("rougeL", preds, refs),
            "llmops evaluate.load(path)": lambda: modules["rougeL"].compute(
                predictions=preds, references=refs, rouge_types=["rougeL"], use_aggregator=False)["rougeL"],
        }),
        ("ROUGE 1/2/L/Lsum mean", {
            "rouge_score": lambda: {t: sum(v) / len(v) for t, v in direct_rouge(ROUGE_TYPES).items()},
            "llmops evaluate.load(path)": lambda: modules["rougeL"].compute(predictions=preds, references=refs),
        }),
        ("sentence BLEU per example", {
            "sacrebleu": direct_sentence_bleu,
            "llmops scoring.score": lambda: scoring.score("sacrebleu", preds, refs),
            "llmops evaluate.load(path)": lambda: modules["sacrebleu"].compute(
                predictions=preds, references=refs, use_aggregator=False)["score"],
        }),
        ("corpus BLEU (sacrebleu)", {
            "sacrebleu": direct_corpus_bleu,
            "llmops scoring.corpus": lambda: {k: v for k, v in scoring.corpus("sacrebleu", preds, refs).items()
                                              if k != "signature"},
        }),
        ("corpus BLEU (evaluate's nmt bleu)", {
            "sacrebleu smooth=none": lambda: direct_corpus_bleu(smooth_method="none")["score"] / 100,
            "llmops scoring.corpus": lambda: scoring.corpus("bleu", preds, refs)["bleu"],
            "llmops evaluate.load(path)": lambda: modules["bleu"].compute(predictions=preds, references=refs)["bleu"],
        }),
    ]

    print(f"{args.pairs} pairs, best of {args.rounds} interleaved rounds; CPU: {cpu_name()} "
          f"({os.cpu_count()} logical cores); Python {platform.python_version()}, "
          f"sacrebleu {sacrebleu.__version__}")
    print(f"{'measure':36} {'implementation':28} {'CPU s':>8} {'ratio':>6}  equal")
    worst = 0.0
    for title, jobs in comparisons:
        times, results = best_of(args.rounds, jobs, before=forget)
        base_name = next(iter(jobs))
        base_t, base_v = times[base_name], results[base_name]
        for name in jobs:
            ratio = times[name] / base_t
            equal = "" if name == base_name else ("yes" if close(results[name], base_v) else "NO")
            if name != base_name:
                worst = max(worst, ratio)
            print(f"{title:36} {name:28} {times[name]:8.3f} {ratio:6.2f}  {equal}")
    print(f"worst ratio llmops/direct: {worst:.2f} (goal <= 1.2)")


if __name__ == "__main__":
    main()
