"""The one function layer between the eval runner and the metric modules.

The metrics themselves are `evaluate` modules shipped in `llmops/evals/metrics/<module>/<module>.py`
and loaded by path (`evaluate.load(str(path))`, once per process), so they work offline and anyone
can load them the same way. This layer names the metrics a suite may use and gives each one a single
float per example (what the bootstrap resamples) and a corpus-level dict (what the report shows
beside it):

    name                 module               per example (score)                          scale
    bleu                 bleu                 sentence BLEU (sacrebleu.sentence_bleu) / 100   1
    sacrebleu            sacrebleu            sentence BLEU (sacrebleu.sentence_bleu)       100
    chrf                 chrf                 sentence chrF (sacrebleu.sentence_chrf)       100
    rouge1 rouge2        rouge                that type's F-measure (rouge_score)             1
    rougeL rougeLsum
    exact_match          exact_match          1.0 or 0.0                                      1
    semantic_similarity  semantic_similarity  cosine of MiniLM (or `model=`) embeddings        1

`corpus(name, ...)` is the module's aggregate output: corpus BLEU / chrF with their statistics, and
for the metrics whose aggregate is the plain mean of the per-example values (ROUGE, exact match,
semantic similarity) that mean, taken from the last `score` call on the same inputs when there is one
(the runner asks for both; scoring twice would double the cost).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

from llmops.errors import SpecError

__all__ = ["METRICS", "OPTIONS", "SCALE", "check_metric", "corpus", "load_module", "module_path", "score"]

log = logging.getLogger(__name__)

MODULES_DIR = Path(__file__).parent / "metrics"

# name -> (module, key of the per-example list, options fixed by the name)
_TABLE: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bleu": ("bleu", "bleu", {}),
    "sacrebleu": ("sacrebleu", "score", {}),
    "chrf": ("chrf", "score", {}),
    "rouge1": ("rouge", "rouge1", {"rouge_types": ["rouge1"]}),
    "rouge2": ("rouge", "rouge2", {"rouge_types": ["rouge2"]}),
    "rougeL": ("rouge", "rougeL", {"rouge_types": ["rougeL"]}),
    "rougeLsum": ("rouge", "rougeLsum", {"rouge_types": ["rougeLsum"]}),
    "exact_match": ("exact_match", "exact_match", {}),
    "semantic_similarity": ("semantic_similarity", "scores", {}),
}

#: The metric names a suite may list.
METRICS: tuple[str, ...] = tuple(sorted(_TABLE, key=str.lower))

#: The top of each metric's range: 100 for sacrebleu's own scale, 1 for the rest.
SCALE: dict[str, float] = {name: 100.0 if name in ("sacrebleu", "chrf") else 1.0 for name in METRICS}

#: The keyword options each metric takes (its module's `_compute` keywords, less the fixed ones).
OPTIONS: dict[str, tuple[str, ...]] = {
    "bleu": ("max_order", "tokenizer"),
    "sacrebleu": ("force", "lowercase", "smooth_method", "smooth_value", "tokenize"),
    "chrf": ("beta", "char_order", "eps_smoothing", "lowercase", "whitespace", "word_order"),
    "rouge1": ("tokenizer", "use_stemmer"),
    "rouge2": ("tokenizer", "use_stemmer"),
    "rougeL": ("tokenizer", "use_stemmer"),
    "rougeLsum": ("tokenizer", "use_stemmer"),
    "exact_match": ("ignore_case", "ignore_numbers", "ignore_punctuation", "regexes_to_ignore"),
    "semantic_similarity": ("batch_size", "model"),
}
#: Options that change only the corpus figure (their per-example score is the sentence-level one).
_CORPUS_ONLY = {"bleu": ("smooth",), "sacrebleu": ("use_effective_order",)}
# Metrics whose corpus value is the mean of the per-example values.
_MEAN_OF_SCORES = {"rouge1", "rouge2", "rougeL", "rougeLsum", "exact_match", "semantic_similarity"}

_lock = threading.Lock()
_compute_lock = threading.Lock()  # an evaluate module instance keeps its inputs between add_batch and compute
_modules: dict[str, Any] = {}
_recent: OrderedDict[tuple, list[float]] = OrderedDict()
_RECENT = 4


def check_metric(name: str, options: dict[str, Any] | None = None) -> str:
    """`name` if it is a known metric and `options` are all its options, else a SpecError saying what is."""
    if name not in _TABLE:
        raise SpecError(f"unknown metric {name!r}: {_did_you_mean(name, METRICS)}known metrics: {', '.join(METRICS)}")
    allowed = OPTIONS[name] + _CORPUS_ONLY.get(name, ())
    for key in options or {}:
        if key not in allowed:
            raise SpecError(f"metric {name!r} has no option {key!r}: {_did_you_mean(key, allowed)}"
                            f"its options: {', '.join(allowed) if allowed else 'none'}")
    return name


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    from llmops.specfile import suggest

    close = suggest(word, options)
    return f"did you mean {close!r}? " if close else ""


def module_path(name: str) -> Path:
    """The file of the evaluate module behind metric `name`."""
    module = _TABLE[check_metric(name)][0]
    return MODULES_DIR / module / f"{module}.py"


def load_module(name: str):
    """The loaded `evaluate` module behind metric `name` (loaded by path once per process)."""
    module = _TABLE[check_metric(name)][0]
    with _lock:
        if module not in _modules:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
            import evaluate

            log.debug("loading the metric module %s", module_path(name))
            _modules[module] = evaluate.load(str(module_path(name)), keep_in_memory=True)
        return _modules[module]


def score(name: str, predictions: Sequence[str], references: Sequence[str | Sequence[str]],
          **options: Any) -> list[float]:
    """One float per example for metric `name` (see the table in the module docstring).

    `references` holds one string per example, or a list of strings per example (several references).
    """
    predictions, references = _inputs(name, predictions, references, options)
    if not predictions:
        return []
    key = _key(name, predictions, references, options)
    with _lock:
        if key in _recent:
            _recent.move_to_end(key)
            return list(_recent[key])
    module, field, fixed = _TABLE[name]
    per_example = {k: v for k, v in options.items() if k not in _CORPUS_ONLY.get(name, ())}
    kwargs = {**per_example, **fixed}
    if module != "semantic_similarity":
        kwargs["use_aggregator"] = False
    out = _compute(name, predictions, references, kwargs)
    values = [float(v) for v in out[field]]
    with _lock:
        _recent[key] = values
        while len(_recent) > _RECENT:
            _recent.popitem(last=False)
    return list(values)


def corpus(name: str, predictions: Sequence[str], references: Sequence[str | Sequence[str]],
           **options: Any) -> dict[str, Any]:
    """The corpus-level result of metric `name`: the module's aggregate dict (JSON-able).

    bleu: bleu, precisions, brevity_penalty, length_ratio, translation_length, reference_length;
    sacrebleu: score, counts, totals, precisions, bp, sys_len, ref_len, signature; chrf: score,
    char_order, word_order, beta; rougeX: {rougeX: mean}; exact_match: {exact_match: mean};
    semantic_similarity: {mean: mean}.
    """
    predictions, references = _inputs(name, predictions, references, options)
    if not predictions:
        raise SpecError(f"metric {name!r}: no examples to score", fix="give at least one prediction and reference")
    if name in _MEAN_OF_SCORES:
        values = score(name, predictions, references, **options)
        mean = sum(values) / len(values)
        return {"mean" if name == "semantic_similarity" else name: mean}
    module, _field, fixed = _TABLE[name]
    return _compute(name, predictions, references, {**options, **fixed})


def _inputs(name: str, predictions: Sequence[str], references: Sequence, options: dict) -> tuple[list, list]:
    check_metric(name, options)
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{name}: {len(predictions)} predictions but {len(references)} references")
    # evaluate infers one feature type from the first example: a bare string among lists would be
    # cast to a list of characters, so several-reference input is made uniform here.
    if any(not isinstance(r, str) for r in references):
        references = [[r] if isinstance(r, str) else list(r) for r in references]
    return predictions, references


def _key(name: str, predictions: list, references: list, options: dict) -> tuple:
    refs = tuple(r if isinstance(r, str) else tuple(r) for r in references)
    return name, json.dumps(options, sort_keys=True, default=repr), tuple(predictions), refs


def _compute(name: str, predictions: list, references: list, kwargs: dict) -> dict[str, Any]:
    module = load_module(name)
    try:
        with _compute_lock:
            return module.compute(predictions=predictions, references=references, **kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"metric {name!r}: {exc}", fix="check the metric's options in the suite") from exc
