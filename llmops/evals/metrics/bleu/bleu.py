"""BLEU as `evaluate`'s `bleu` computes it (the TensorFlow NMT corpus algorithm), loadable offline by path.

Same keys and values as evaluate's hub `bleu` module: bleu, precisions, brevity_penalty, length_ratio,
translation_length, reference_length, on the 0..1 scale, with sacrebleu's 13a tokenizer. Unlike
sacrebleu it takes the *shortest* reference's length (not the closest) and its `smooth` adds one to
every order's matches and totals (Lin and Och 2004). For one reference per example and smooth=False
it equals `sacrebleu.corpus_bleu(..., smooth_method="none", tokenize="13a").score / 100`.

`use_aggregator=False` gives each example's sentence BLEU (sacrebleu's `sentence_bleu`: exponential
smoothing, effective order, same tokens) divided by 100, since the unsmoothed corpus formula on one
short sentence is almost always 0. An empty corpus (no tokens in the predictions) scores 0 rather than
raising ZeroDivisionError as evaluate's module does.
"""

import collections
import math

import evaluate
from llmops.evals.features import text_pairs
import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

_CITATION = """\
@inproceedings{papineni2002bleu, title={BLEU: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing}, booktitle={ACL}, year={2002}}
"""
_KWARGS = """
Args:
    predictions: list of strings, one per example.
    references: list of strings, or list of lists of strings (several references per example).
    tokenizer: a callable text -> list of tokens (default: sacrebleu's 13a, as evaluate's bleu).
    max_order: highest n-gram order (default 4).
    smooth: add-one smoothing of every order's precision (default False).
    use_aggregator: False gives {"bleu": [sentence BLEU of each example, 0..1]} instead of corpus BLEU.
Returns:
    bleu, precisions, brevity_penalty, length_ratio, translation_length, reference_length.
"""


def _ngrams(tokens, max_order):
    """Counts of every n-gram of `tokens` up to `max_order` (tuples as keys)."""
    counts = collections.Counter()
    for order in range(1, max_order + 1):
        counts.update(zip(*[tokens[i:] for i in range(order)]))
    return counts


def compute_bleu(reference_corpus, translation_corpus, max_order=4, smooth=False):
    """Corpus BLEU of token lists: tensorflow/nmt's compute_bleu, guarded against empty corpora.

    >>> round(compute_bleu([[["a", "b", "c"]]], [["a", "b", "c"]], max_order=2)[0], 6)
    1.0
    """
    matches = [0] * max_order
    possible = [0] * max_order
    reference_length = 0
    translation_length = 0
    for references, translation in zip(reference_corpus, translation_corpus):
        reference_length += min(len(r) for r in references)
        translation_length += len(translation)
        merged = _ngrams(references[0], max_order)
        for reference in references[1:]:
            merged |= _ngrams(reference, max_order)
        for ngram, count in _ngrams(translation, max_order).items():
            found = merged.get(ngram)
            if found:
                matches[len(ngram) - 1] += min(count, found)
        for order in range(1, min(max_order, len(translation)) + 1):
            possible[order - 1] += len(translation) - order + 1
    if smooth:
        precisions = [(m + 1.0) / (p + 1.0) for m, p in zip(matches, possible)]
    else:
        precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
    geo_mean = math.exp(sum((1.0 / max_order) * math.log(p) for p in precisions)) if min(precisions) > 0 else 0.0
    ratio = translation_length / reference_length if reference_length else 0.0
    if ratio > 1.0:
        bp = 1.0
    else:
        bp = math.exp(1 - 1.0 / ratio) if ratio > 0 else 0.0
    return geo_mean * bp, precisions, bp, ratio, translation_length, reference_length


class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=text_pairs(),
            reference_urls=["https://github.com/tensorflow/nmt/blob/master/nmt/scripts/bleu.py"],
        )

    def _compute(self, predictions, references, tokenizer=None, max_order=4, smooth=False, use_aggregator=True):
        references = [[r] if isinstance(r, str) else list(r) for r in references]
        if not use_aggregator:
            if tokenizer is None:
                scorer = sacrebleu.BLEU(tokenize="13a", effective_order=True, max_ngram_order=max_order)
            else:  # sacrebleu scores the caller's tokens joined by spaces
                scorer = sacrebleu.BLEU(tokenize="none", effective_order=True, max_ngram_order=max_order)
                predictions = [" ".join(tokenizer(p)) for p in predictions]
                references = [[" ".join(tokenizer(r)) for r in rs] for rs in references]
            return {"bleu": [scorer.sentence_score(p, refs).score / 100.0 for p, refs in zip(predictions, references)]}
        if tokenizer is None:
            thirteen_a = Tokenizer13a()

            def tokenizer(text):
                return thirteen_a(text).split()

        refs = [[tokenizer(r) for r in rs] for rs in references]
        preds = [tokenizer(p) for p in predictions]
        bleu, precisions, bp, ratio, translation_length, reference_length = compute_bleu(
            refs, preds, max_order=max_order, smooth=smooth)
        return {"bleu": bleu, "precisions": precisions, "brevity_penalty": bp, "length_ratio": ratio,
                "translation_length": translation_length, "reference_length": reference_length}
