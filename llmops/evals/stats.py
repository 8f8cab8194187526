"""Seeded bootstrap statistics over per-example scores (numpy, vectorised).

    mean_ci([0.1, 0.5, 0.9], resamples=1000, seed=0, confidence=0.95)   # {"value", "low", "high"}
    paired_delta(candidate, baseline, ...)                             # {"delta", "low", "high", "p_better"}

The same seed gives the same resample indices, so the same scores give the same intervals; the
paired comparison resamples examples (the same indices for both sides), so it measures the
difference on these examples rather than two independent noises.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["mean_ci", "paired_delta", "resample_indices"]


def resample_indices(n: int, resamples: int, seed: int):
    """A (resamples, n) array of row indices drawn with replacement, reproducible from `seed`."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(samples, confidence: float) -> tuple[float, float]:
    import numpy as np

    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def mean_ci(scores: Sequence[float], *, resamples: int, seed: int, confidence: float) -> dict[str, float]:
    """The mean of `scores` and its percentile bootstrap interval."""
    import numpy as np

    x = np.asarray(scores, dtype=float)
    if x.size == 0:
        return {"value": float("nan"), "low": float("nan"), "high": float("nan")}
    means = x[resample_indices(x.size, resamples, seed)].mean(axis=1)
    low, high = _interval(means, confidence)
    return {"value": float(x.mean()), "low": low, "high": high}


def paired_delta(candidate: Sequence[float], baseline: Sequence[float], *, resamples: int, seed: int,
                 confidence: float) -> dict[str, float]:
    """Mean of candidate - baseline over the same examples, its paired bootstrap interval, and
    `p_better`: the share of resamples where the candidate's mean is higher."""
    import numpy as np

    a, b = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores differ in length: {a.size} != {b.size}")
    d = a - b
    if d.size == 0:
        return {"delta": float("nan"), "low": float("nan"), "high": float("nan"), "p_better": float("nan")}
    means = d[resample_indices(d.size, resamples, seed)].mean(axis=1)
    low, high = _interval(means, confidence)
    return {"delta": float(d.mean()), "low": low, "high": high, "p_better": float((means > 0).mean())}
