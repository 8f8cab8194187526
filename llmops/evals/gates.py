"""Gates: the pass/fail rules of a suite, checked against the metrics and the baseline deltas.

A `min` gate passes when the metric's mean is at least the threshold; a `max_regression` gate
passes when the mean fell at most `threshold` below the baseline's (the point estimate of the paired
difference; the interval is in the detail). Without a baseline a regression gate passes, and says so.
A `min_improvement` gate passes when the low end of the paired difference's interval reaches the
threshold, so "better" means better beyond the bootstrap's noise; without a baseline it fails.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_gates"]


def check_gates(gates: list[Any], metrics: dict[str, dict], baseline: dict | None) -> list[dict]:
    """One entry per rule (a gate with both `min` and `max_regression` gives two)."""
    out = []
    for gate in gates:
        m = metrics[gate.metric]
        if gate.min is not None:
            ok = m["value"] >= gate.min
            out.append({"name": f"{gate.metric} >= {gate.min:g}", "metric": gate.metric, "kind": "min",
                        "threshold": gate.min, "value": m["value"], "passed": bool(ok),
                        "detail": f"{gate.metric} = {m['value']:.4f} [{m['low']:.4f}, {m['high']:.4f}], "
                                  f"minimum {gate.min:g}"})
        if gate.max_regression is not None:
            name = f"{gate.metric} regression <= {gate.max_regression:g}"
            if baseline is None:
                out.append({"name": name, "metric": gate.metric, "kind": "max_regression",
                            "threshold": gate.max_regression, "value": 0.0, "passed": True,
                            "detail": "no baseline to compare with; passed"})
                continue
            d = baseline["deltas"][gate.metric]
            ok = d["delta"] >= -gate.max_regression
            out.append({"name": name, "metric": gate.metric, "kind": "max_regression",
                        "threshold": gate.max_regression, "value": d["delta"], "passed": bool(ok),
                        "detail": f"delta {d['delta']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] against "
                                  f"{baseline['target']['ref']} (p_better {d['p_better']:.2f}), "
                                  f"allowed regression {gate.max_regression:g}"})
        if gate.min_improvement is not None:
            out.append(_improvement(gate, baseline))
    return out


def _improvement(gate: Any, baseline: dict | None) -> dict:
    gate_row = {"name": f"{gate.metric} improvement >= {gate.min_improvement:g}", "metric": gate.metric,
                "kind": "min_improvement", "threshold": gate.min_improvement}
    if baseline is None:
        return {**gate_row, "value": 0.0, "passed": False,
                "detail": "no baseline to improve on; give the suite a `baseline:` that exists"}
    d = baseline["deltas"][gate.metric]
    return {**gate_row, "value": d["low"], "passed": bool(d["low"] >= gate.min_improvement),
            "detail": f"delta {d['delta']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] against "
                      f"{baseline['target']['ref']} (p_better {d['p_better']:.2f}); the interval's low end must "
                      f"reach {gate.min_improvement:g}"}
