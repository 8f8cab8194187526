"""ROUGE (Lin 2004) as an `evaluate` module, loadable offline by path: Google's `rouge_score` does the work.

Keys rouge1, rouge2, rougeL, rougeLsum (the F-measure; rougeLsum splits summaries on newlines).
Unlike evaluate's hub `rouge` module, the aggregate is the plain mean of the per-example F-measures, so it
is deterministic (evaluate's is the middle of a random bootstrap and moves between runs);
`use_aggregator=False` gives the per-example lists. Several references per example score the best one
(`score_multi`).

Tokenizers (`tokenizer=`):
- None / "default": rouge_score's own, which lowercases and turns every character outside [a-z0-9]
  into a space. Chinese, Japanese, Cyrillic, Arabic, Greek, Hindi... text therefore has NO tokens and
  scores 0 against anything, and accented Latin words are cut at the accents ("café" -> "caf").
- "unicode": lowercase, then every run of Unicode letters, marks and digits is a token, except that each
  Chinese/Japanese character (Han, Hiragana, Katakana) is its own token, as those scripts have no
  spaces. `use_stemmer` stems only ASCII tokens (the Porter stemmer is English).
- any object with a `tokenize(text) -> list[str]` method, or a callable text -> list[str].
"""

import evaluate
from llmops.evals.features import text_pairs
import regex
from rouge_score import rouge_scorer

_CITATION = """\
@inproceedings{lin-2004-rouge, title={{ROUGE}: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew}, booktitle={Text Summarization Branches Out}, year={2004}, pages={74--81}}
"""
_KWARGS = """
Args:
    predictions: list of strings; references: list of strings, or a list of strings per example.
    rouge_types: subset of ["rouge1", "rouge2", "rougeL", "rougeLsum"] (also "rouge3".."rouge9"); default all four.
    use_aggregator: True (default) gives the mean F-measure of each type; False the per-example lists.
    use_stemmer: Porter-stem tokens longer than 3 characters (default False).
    tokenizer: None/"default" (rouge_score's: [a-z0-9] only), "unicode", or a tokenizer object / callable.
Returns:
    {rouge_type: float} or {rouge_type: [float per example]}.
"""

_UNICODE_TOKEN = regex.compile(r"(?V1)[\p{Han}\p{Hiragana}\p{Katakana}]"
                               r"|[[\p{L}\p{M}\p{N}]--[\p{Han}\p{Hiragana}\p{Katakana}]]+")
_ASCII_WORD = regex.compile(r"^[a-z0-9]+$")
ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


class UnicodeTokenizer:
    """Lowercased runs of Unicode letters/digits; each Han/Kana character alone.

    >>> UnicodeTokenizer().tokenize("Привет, мир! 東京タワー 2024")
    ['привет', 'мир', '東', '京', 'タ', 'ワ', 'ー', '2024']
    """

    def __init__(self, use_stemmer=False):
        self._stemmer = None
        if use_stemmer:
            from nltk.stem import porter

            self._stemmer = porter.PorterStemmer()

    def tokenize(self, text):
        tokens = _UNICODE_TOKEN.findall(text.lower())
        if self._stemmer is not None:
            stem = self._stemmer.stem
            tokens = [stem(t) if len(t) > 3 and _ASCII_WORD.match(t) else t for t in tokens]
        return tokens


class _CallableTokenizer:
    def __init__(self, fn):
        self.tokenize = fn


def make_scorer(rouge_types=None, use_stemmer=False, tokenizer=None):
    """The rouge_score RougeScorer for these options (`tokenizer` as in the module docstring)."""
    if tokenizer == "unicode":
        tokenizer = UnicodeTokenizer(use_stemmer)
    elif tokenizer in (None, "default"):
        tokenizer = None
    elif isinstance(tokenizer, str):
        raise ValueError(f"unknown rouge tokenizer {tokenizer!r}: use 'default', 'unicode', or a tokenizer object")
    elif not hasattr(tokenizer, "tokenize"):
        if not callable(tokenizer):
            raise ValueError("rouge tokenizer must be 'default', 'unicode', an object with tokenize(), or a callable")
        tokenizer = _CallableTokenizer(tokenizer)
    return rouge_scorer.RougeScorer(list(rouge_types or ROUGE_TYPES), use_stemmer=use_stemmer, tokenizer=tokenizer)


def per_example(scorer, rouge_types, predictions, references):
    """{rouge_type: [F-measure per example]}."""
    out = {t: [] for t in rouge_types}
    lists = [out[t] for t in rouge_types]
    for ref, pred in zip(references, predictions):
        scores = scorer.score(ref, pred) if isinstance(ref, str) else scorer.score_multi(ref, pred)
        for t, values in zip(rouge_types, lists):
            values.append(scores[t].fmeasure)
    return out


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=text_pairs(),
            reference_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, rouge_types=None, use_aggregator=True, use_stemmer=False,
                 tokenizer=None):
        rouge_types = list(rouge_types or ROUGE_TYPES)
        scorer = make_scorer(rouge_types, use_stemmer, tokenizer)
        scores = per_example(scorer, rouge_types, predictions, references)
        if not use_aggregator:
            return scores
        return {t: sum(v) / len(v) if v else 0.0 for t, v in scores.items()}
