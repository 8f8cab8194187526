"""The input features every text metric module declares: a prediction against one reference or a list.

One definition for the modules in `llmops/evals/metrics/`: evaluate checks inputs against these
before `_compute`, so they must not drift apart between metrics.
"""

from __future__ import annotations


def text_pairs() -> list:
    """Two accepted shapes: `references` as a list of strings per example, or one string per example."""
    import datasets

    return [
        datasets.Features({"predictions": datasets.Value("string"),
                           "references": datasets.Sequence(datasets.Value("string"))}),
        datasets.Features({"predictions": datasets.Value("string"),
                           "references": datasets.Value("string")}),
    ]
