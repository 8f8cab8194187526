"""Comparing two eval results: paired deltas on their shared examples, and a short text of evidence.

    deltas = paired_deltas(a, b)             # b (candidate) minus a (baseline), per metric, with intervals
    print(evidence_text(result))             # metric deltas + the examples that changed most
"""

from __future__ import annotations

from typing import Any

from llmops.errors import SpecError

__all__ = ["evidence_text", "paired_deltas"]


def paired_deltas(a: dict, b: dict) -> dict[str, dict]:
    """Paired bootstrap of b - a over the examples both hold (b's bootstrap settings).

    Both must be of the same dataset version, else SpecError."""
    from llmops.evals.stats import paired_delta

    if a["dataset"].get("digest") != b["dataset"].get("digest"):
        raise SpecError(f"run {a['run_id']} measured {a['dataset']['ref']} and run {b['run_id']} measured "
                        f"{b['dataset']['ref']}: compare two runs on the same dataset version")
    by_id = {e["id"]: e for e in a["examples"]}
    shared = [e for e in b["examples"] if e["id"] in by_id]
    if not shared:
        raise SpecError(f"runs {a['run_id']} and {b['run_id']} share no example")
    boot = b["bootstrap"]
    out = {}
    for name in b["metrics"]:
        if name in a["metrics"]:
            out[name] = paired_delta([e["scores"][name] for e in shared],
                                     [by_id[e["id"]]["scores"][name] for e in shared],
                                     resamples=boot["resamples"], seed=boot["seed"], confidence=boot["confidence"])
    return out


def _clip(text: Any, n: int = 100) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def evidence_text(result: dict, top: int = 5) -> str:
    """Metric deltas against the baseline (with intervals) and the `top` examples that changed most."""
    base = result.get("baseline")
    lines = [f"eval {result['suite']['name']} on {result['dataset']['ref']} ({result['dataset']['rows']} rows), "
             f"run {result['run_id']}"]
    if not base:
        lines += [f"  {n:20} {m['value']:.4f} [{m['low']:.4f}, {m['high']:.4f}]" for n, m in result["metrics"].items()]
        return "\n".join(lines)
    lines.append(f"  {result['target']['ref']} against {base['target']['ref']} (baseline run {base['run_id']})")
    for n, d in base["deltas"].items():
        m, b = result["metrics"][n], base["metrics"][n]
        lines.append(f"  {n:20} {b['value']:.4f} -> {m['value']:.4f}  delta {d['delta']:+.4f} "
                     f"[{d['low']:+.4f}, {d['high']:+.4f}]  p_better {d['p_better']:.2f}")
    primary = next(iter(result["metrics"]))
    changed = sorted((e for e in result["examples"] if e.get("baseline_scores")),
                     key=lambda e: -abs(e["scores"][primary] - e["baseline_scores"][primary]))[:top]
    if changed:
        lines.append(f"examples that changed most ({primary}):")
    for e in changed:
        delta = e["scores"][primary] - e["baseline_scores"][primary]
        lines.append(f"  [{e['id']}] {delta:+.3f}  {_clip(e['inputs'])}")
        lines.append(f"      before: {_clip(e['baseline_prediction'])}")
        lines.append(f"      after:  {_clip(e['prediction'])}")
    return "\n".join(lines)
