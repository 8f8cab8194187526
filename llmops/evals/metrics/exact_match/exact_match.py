"""Exact match as `evaluate`'s `exact_match` computes it, loadable offline by path, in plain Python.

The share of predictions equal to their reference after the optional normalisation, in evaluate's
order: each of `regexes_to_ignore` removed (re.sub), then `ignore_case`, `ignore_punctuation`
(string.punctuation) and `ignore_numbers` (string.digits). `use_aggregator=False` gives
{"exact_match": [1.0 or 0.0 per example]}. A list of references per example matches if any does.
"""

import re
import string

import evaluate
from llmops.evals.features import text_pairs

_KWARGS = """
Args:
    predictions: list of strings; references: list of strings (or a list of strings per example).
    regexes_to_ignore: regular expressions removed from both before comparing.
    ignore_case, ignore_punctuation, ignore_numbers: bool, default False.
    use_aggregator: False gives the per-example 1.0/0.0 list.
Returns:
    exact_match: the mean (0..1), or the per-example list.
"""

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_DIGITS = str.maketrans("", "", string.digits)


def normalizer(regexes_to_ignore=None, ignore_case=False, ignore_punctuation=False, ignore_numbers=False):
    """The function both sides go through before they are compared."""
    patterns = [re.compile(r) for r in regexes_to_ignore or ()]

    def normalize(text):
        for pattern in patterns:
            text = pattern.sub("", text)
        if ignore_case:
            text = text.lower()
        if ignore_punctuation:
            text = text.translate(_PUNCTUATION)
        if ignore_numbers:
            text = text.translate(_DIGITS)
        return text

    return normalize


class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description=_KWARGS,
            features=text_pairs(),
            reference_urls=["https://huggingface.co/spaces/evaluate-metric/exact_match"],
        )

    def _compute(self, predictions, references, regexes_to_ignore=None, ignore_case=False,
                 ignore_punctuation=False, ignore_numbers=False, use_aggregator=True):
        if isinstance(regexes_to_ignore, str):
            regexes_to_ignore = [regexes_to_ignore]
        norm = normalizer(regexes_to_ignore, ignore_case, ignore_punctuation, ignore_numbers)
        scores = []
        for p, refs in zip(predictions, references):
            refs = [refs] if isinstance(refs, str) else refs
            p = norm(p)
            scores.append(1.0 if any(p == norm(r) for r in refs) else 0.0)
        if not use_aggregator:
            return {"exact_match": scores}
        return {"exact_match": sum(scores) / len(scores) if scores else 0.0}
