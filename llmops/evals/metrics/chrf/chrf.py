"""chrF and chrF++ (Popović 2015, 2017) as an `evaluate` module, loadable offline by path: `sacrebleu` does the work.

Character n-gram F-score on sacrebleu's 0..100 scale; `word_order=2` adds word uni- and bigrams
(chrF++). Keys as evaluate's chrf: score, char_order, word_order, beta. `use_aggregator=False` gives
each example's sentence chrF (`sacrebleu.sentence_chrf` semantics) as {"score": [...]}. References
are one string per example, or a list per example (the same number for every example).
"""

import evaluate
from llmops.evals.features import text_pairs
import sacrebleu

_CITATION = """\
@inproceedings{popovic-2015-chrf, title={chr{F}: character n-gram {F}-score for automatic {MT} evaluation},
  author={Popovi{\\'c}, Maja}, booktitle={Proceedings of the Tenth Workshop on Statistical Machine Translation},
  year={2015}, pages={392--395}}
"""
_KWARGS = """
Args:
    predictions: list of strings, one per example.
    references: list of strings, or list of lists of strings (the same count for every example).
    char_order: character n-gram order (default 6); word_order: word n-gram order (0 = chrF, 2 = chrF++).
    beta: recall weight (default 2); lowercase, whitespace, eps_smoothing: as sacrebleu's CHRF.
    use_aggregator: False gives {"score": [sentence chrF of each example, 0..100]}.
Returns:
    score, char_order, word_order, beta.
"""


class Chrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=text_pairs(),
            reference_urls=["https://github.com/mjpost/sacreBLEU#chrf--chrf"],
        )

    def _compute(self, predictions, references, char_order=6, word_order=0, beta=2, lowercase=False,
                 whitespace=False, eps_smoothing=False, use_aggregator=True):
        refs = [[r] if isinstance(r, str) else list(r) for r in references]
        counts = {len(r) for r in refs}
        if len(counts) > 1:
            raise ValueError("chrF requires the same number of references for every prediction "
                             f"(found {sorted(counts)})")
        scorer = sacrebleu.CHRF(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase,
                                whitespace=whitespace, eps_smoothing=eps_smoothing)
        if not use_aggregator:
            return {"score": [scorer.sentence_score(p, r).score for p, r in zip(predictions, refs)]}
        streams = [[r[i] for r in refs] for i in range(counts.pop() if counts else 1)]
        out = scorer.corpus_score(list(predictions), streams)
        return {"score": out.score, "char_order": char_order, "word_order": word_order, "beta": beta}
