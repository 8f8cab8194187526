"""sacreBLEU (Post 2018) as an `evaluate` module, loadable offline by path: `sacrebleu` itself does the work.

Corpus BLEU on sacrebleu's 0..100 scale with its keys: score, counts, totals, precisions, bp,
sys_len, ref_len, and the `signature` that names the settings (tokenizer, smoothing, case, version).
`use_aggregator=False` gives each example's sentence BLEU (`sacrebleu.sentence_bleu` semantics:
effective order on) as {"score": [...]}. References are one string per example, or a list of
strings per example (the same number for every example, as sacrebleu requires).
"""

import evaluate
from llmops.evals.features import text_pairs
import sacrebleu

_CITATION = """\
@inproceedings{post-2018-call, title={A Call for Clarity in Reporting {BLEU} Scores}, author={Post, Matt},
  booktitle={Proceedings of the Third Conference on Machine Translation}, year={2018}, pages={186--191}}
"""
_KWARGS = """
Args:
    predictions: list of strings, one per example.
    references: list of strings, or list of lists of strings (the same count for every example).
    smooth_method: 'exp' (default), 'floor', 'add-k' or 'none'; smooth_value: its value.
    tokenize: sacrebleu tokenizer name ('13a' default, 'intl', 'zh', 'ja-mecab', 'char', 'none', ...).
    lowercase, force: as sacrebleu.
    use_effective_order: for the corpus score (default False; sentence scores always use it).
    use_aggregator: False gives {"score": [sentence BLEU of each example, 0..100]}.
Returns:
    score, counts, totals, precisions, bp, sys_len, ref_len, signature.
"""


def reference_streams(references):
    """Per-example references (str or list) -> sacrebleu's reference streams (one list per reference slot)."""
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    counts = {len(r) for r in refs}
    if len(counts) > 1:
        raise ValueError("sacrebleu requires the same number of references for every prediction "
                         f"(found {sorted(counts)})")
    width = counts.pop() if counts else 1
    return [[r[i] for r in refs] for i in range(width)]


class Sacrebleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=text_pairs(),
            reference_urls=["https://github.com/mjpost/sacreBLEU"],
        )

    def _compute(self, predictions, references, smooth_method="exp", smooth_value=None, force=False,
                 lowercase=False, tokenize=None, use_effective_order=False, use_aggregator=True):
        streams = reference_streams(references)
        options = dict(smooth_method=smooth_method, smooth_value=smooth_value, force=force,
                       lowercase=lowercase, tokenize=tokenize)
        if not use_aggregator:
            scorer = sacrebleu.BLEU(effective_order=True, **options)
            return {"score": [scorer.sentence_score(p, [s[i] for s in streams]).score
                              for i, p in enumerate(predictions)]}
        scorer = sacrebleu.BLEU(effective_order=use_effective_order, **options)
        out = scorer.corpus_score(list(predictions), streams)
        return {"score": out.score, "counts": list(out.counts), "totals": list(out.totals),
                "precisions": list(out.precisions), "bp": out.bp, "sys_len": out.sys_len,
                "ref_len": out.ref_len, "signature": str(scorer.get_signature())}
