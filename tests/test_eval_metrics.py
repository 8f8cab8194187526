"""The metric modules (llmops/evals/metrics) and `llmops.evals.scoring`, checked against the reference
implementations called directly on the same inputs: sacrebleu, rouge_score, and tensorflow/nmt's BLEU."""

from __future__ import annotations

import collections
import inspect
import math
import os
import random
import subprocess
import sys

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from llmops.errors import SpecError
from llmops.evals import scoring
from rag_support import REPO, tiny_model  # noqa: F401 (fixture)

METRICS_DIR = REPO / "llmops" / "evals" / "metrics"
ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
WORDS = ("the a an of to in on for with cat dog runs ran running quickly slowly brown lazy fox jumps over "
         "handbook policy employees must submit their expenses within 30 days 2024 Monday office opens "
         "at 9am café naïve résumé don't it's U.S. e-mail well-known").split()
PUNCT = [",", ".", "!", "?", ";", ":", "(", ")", "-", "\"", "'s", "&", "%", "$"]


def make_pairs(seed: int, n: int) -> tuple[list[str], list[str]]:
    """Seeded (prediction, reference) pairs: edits of the reference (overlap), unrelated text, empties."""
    rng = random.Random(seed)

    def sentence(k: int) -> str:
        out = []
        for _ in range(k):
            word = rng.choice(WORDS)
            out.append(word.capitalize() if rng.random() < 0.15 else word)
            if rng.random() < 0.2:
                out.append(rng.choice(PUNCT))
        text = " ".join(out)
        return text.replace(" . ", " .\n") if rng.random() < 0.3 else text  # rougeLsum splits on newlines

    preds, refs = [], []
    for _ in range(n):
        ref = sentence(rng.randint(1, 30))
        roll = rng.random()
        if roll < 0.55:  # an edit of the reference: drops, swaps, insertions
            words = ref.split()
            words = [w for w in words if rng.random() > 0.2]
            for _ in range(rng.randint(0, 3)):
                words.insert(rng.randint(0, len(words)), rng.choice(WORDS))
            if len(words) > 2 and rng.random() < 0.3:
                i = rng.randrange(len(words) - 1)
                words[i], words[i + 1] = words[i + 1], words[i]
            pred = " ".join(words)
        elif roll < 0.75:
            pred = sentence(rng.randint(1, 30))
        elif roll < 0.85:
            pred = ref
        elif roll < 0.92:
            pred = ""
        else:
            pred, ref = sentence(rng.randint(1, 10)), ""
        preds.append(pred)
        refs.append(ref)
    return preds, refs


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(1, 300)


def load(name: str):
    import evaluate

    return evaluate.load(str(METRICS_DIR / name), keep_in_memory=True)


# -- ROUGE --------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_per_example_equals_rouge_score(pairs, use_stemmer):
    preds, refs = pairs
    direct = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=use_stemmer)
    expected = [direct.score(r, p) for p, r in zip(preds, refs)]
    for t in ROUGE_TYPES:
        ours = scoring.score(t, preds, refs, use_stemmer=use_stemmer)
        assert ours == [e[t].fmeasure for e in expected]
    lists = load("rouge").compute(predictions=preds, references=refs, use_aggregator=False, use_stemmer=use_stemmer)
    assert lists == {t: [e[t].fmeasure for e in expected] for t in ROUGE_TYPES}


def test_rouge_aggregate_is_the_plain_mean_and_deterministic(pairs):
    preds, refs = pairs
    direct = rouge_scorer.RougeScorer(ROUGE_TYPES)
    expected = [direct.score(r, p) for p, r in zip(preds, refs)]
    rouge = load("rouge")
    first = rouge.compute(predictions=preds, references=refs)
    assert first == rouge.compute(predictions=preds, references=refs)
    for t in ROUGE_TYPES:
        mean = sum(e[t].fmeasure for e in expected) / len(expected)
        assert first[t] == pytest.approx(mean, rel=1e-12)
        assert scoring.corpus(t, preds, refs) == {t: pytest.approx(mean, rel=1e-12)}


def test_rouge_several_references_score_the_best_one():
    preds = ["the cat sat on the mat", "a dog ran"]
    refs = [["a cat was on a mat", "the cat sat on a mat"], ["the dog ran away", "dogs run"]]
    direct = rouge_scorer.RougeScorer(["rougeL"])
    assert scoring.score("rougeL", preds, refs) == [direct.score_multi(r, p)["rougeL"].fmeasure
                                                    for p, r in zip(preds, refs)]
    # a bare string among lists is one reference, not a list of characters
    mixed = scoring.score("rougeL", preds, [refs[0], "the dog ran away"])
    assert mixed[1] == direct.score("the dog ran away", "a dog ran")["rougeL"].fmeasure


NON_LATIN = [
    ("东京是日本的首都", "日本的首都是东京"),  # Chinese
    ("Москва — столица России", "Столица России — Москва"),  # Russian
    ("القاهرة عاصمة مصر", "عاصمة مصر هي القاهرة"),  # Arabic
    ("東京タワーは高い", "東京タワー"),  # Japanese
]


def test_rouge_default_tokenizer_scores_non_latin_text_zero_and_unicode_does_not():
    preds = [p for p, _ in NON_LATIN] + [r for _, r in NON_LATIN]
    refs = [r for _, r in NON_LATIN] + [r for _, r in NON_LATIN]  # second half: identical texts
    direct = rouge_scorer.RougeScorer(["rougeL"])
    default = scoring.score("rougeL", preds, refs)
    assert default == [direct.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)]
    assert default == [0.0] * len(preds)  # rouge_score keeps only [a-z0-9]: even identical text is 0
    unicode = scoring.score("rougeL", preds, refs, tokenizer="unicode")
    assert all(0.0 < s < 1.0 for s in unicode[:len(NON_LATIN)])
    assert unicode[len(NON_LATIN):] == [1.0] * len(NON_LATIN)


def test_rouge_unicode_tokenizer_values():
    from rouge_score import tokenizers

    class Reference(tokenizers.Tokenizer):
        """Each Han/Kana character alone, Cyrillic words whole (what the unicode tokenizer should do here)."""

        def tokenize(self, text):
            out = []
            for word in text.lower().replace(",", " ").split():
                out.extend(list(word) if not word.isascii() and "\u3040" <= word[0] <= "\u9fff" else [word])
            return out

    preds = ["東京タワーは高い", "Привет, мир", "hello мир"]
    refs = ["東京タワー", "привет мир друг", "Hello, world"]
    direct = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=Reference())
    for t in ("rouge1", "rouge2", "rougeL"):
        assert scoring.score(t, preds, refs, tokenizer="unicode") == [
            pytest.approx(direct.score(r, p)[t].fmeasure, rel=1e-12) for p, r in zip(preds, refs)]
    assert scoring.score("rouge1", preds[:1], refs[:1], tokenizer="unicode") == [pytest.approx(2 * 5 / (8 + 5))]
    # accented Latin: the default tokenizer cuts "café" into "caf"; unicode keeps it whole
    assert scoring.score("rouge1", ["café"], ["caf"]) == [1.0]
    assert scoring.score("rouge1", ["café"], ["caf"], tokenizer="unicode") == [0.0]


def test_rouge_tokenizer_option_takes_a_callable_and_rejects_unknown_names():
    assert scoring.score("rouge1", ["a b"], ["b c"], tokenizer=lambda s: s.split()) == [0.5]
    with pytest.raises(SpecError, match="unknown rouge tokenizer 'latin'"):
        scoring.score("rouge1", ["a"], ["a"], tokenizer="latin")


# -- BLEU ---------------------------------------------------------------------------------------


def nmt_bleu(reference_corpus, translation_corpus, max_order=4, smooth=False):
    """tensorflow/nmt's compute_bleu as written there (evaluate's bleu module calls it)."""

    def get_ngrams(segment, max_order):
        counts = collections.Counter()
        for order in range(1, max_order + 1):
            for i in range(0, len(segment) - order + 1):
                counts[tuple(segment[i:i + order])] += 1
        return counts

    matches_by_order = [0] * max_order
    possible_matches_by_order = [0] * max_order
    reference_length = translation_length = 0
    for references, translation in zip(reference_corpus, translation_corpus):
        reference_length += min(len(r) for r in references)
        translation_length += len(translation)
        merged_ref_ngram_counts = collections.Counter()
        for reference in references:
            merged_ref_ngram_counts |= get_ngrams(reference, max_order)
        overlap = get_ngrams(translation, max_order) & merged_ref_ngram_counts
        for ngram in overlap:
            matches_by_order[len(ngram) - 1] += overlap[ngram]
        for order in range(1, max_order + 1):
            possible_matches = len(translation) - order + 1
            if possible_matches > 0:
                possible_matches_by_order[order - 1] += possible_matches
    precisions = [0.0] * max_order
    for i in range(0, max_order):
        if smooth:
            precisions[i] = (matches_by_order[i] + 1.0) / (possible_matches_by_order[i] + 1.0)
        elif possible_matches_by_order[i] > 0:
            precisions[i] = float(matches_by_order[i]) / possible_matches_by_order[i]
    if min(precisions) > 0:
        geo_mean = math.exp(sum((1.0 / max_order) * math.log(p) for p in precisions))
    else:
        geo_mean = 0
    ratio = float(translation_length) / reference_length
    bp = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return {"bleu": geo_mean * bp, "precisions": precisions, "brevity_penalty": bp, "length_ratio": ratio,
            "translation_length": translation_length, "reference_length": reference_length}


def tok13a(text: str) -> list[str]:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()(text).split()


@pytest.mark.parametrize("max_order,smooth", [(4, False), (4, True), (2, False), (1, True)])
def test_bleu_equals_the_nmt_algorithm(pairs, max_order, smooth):
    preds, refs = pairs
    multi = [[r, p[::-1]] for p, r in zip(preds, refs)]  # several references, of other lengths
    for references in (refs, multi):
        per = [[tok13a(r)] if isinstance(r, str) else [tok13a(x) for x in r] for r in references]
        expected = nmt_bleu(per, [tok13a(p) for p in preds], max_order=max_order, smooth=smooth)
        ours = scoring.corpus("bleu", preds, references, max_order=max_order, smooth=smooth)
        assert ours == expected
        assert load("bleu").compute(predictions=preds, references=references, max_order=max_order,
                                    smooth=smooth) == expected


def test_bleu_takes_a_tokenizer_like_evaluates_bleu(pairs):
    preds, refs = pairs
    split = str.split
    expected = nmt_bleu([[split(r)] for r in refs], [split(p) for p in preds])
    assert scoring.corpus("bleu", preds, refs, tokenizer=split) == expected
    assert scoring.corpus("bleu", preds, refs, tokenizer=split) != scoring.corpus("bleu", preds, refs)
    assert scoring.score("bleu", preds, refs, tokenizer=split) == pytest.approx(
        [sacrebleu.sentence_bleu(p, [r], tokenize="none").score / 100 for p, r in zip(preds, refs)], rel=1e-12)


def test_bleu_equals_sacrebleu_unsmoothed_for_one_reference(pairs):
    """With one reference per example, the nmt formula and sacrebleu agree when sacrebleu does not smooth
    (13a tokens, case kept): the shortest and the closest reference length are then the same."""
    preds, refs = pairs
    for n in (300, 40, 3):
        direct = sacrebleu.corpus_bleu(preds[:n], [refs[:n]], smooth_method="none", tokenize="13a")
        ours = scoring.corpus("bleu", preds[:n], refs[:n])
        assert ours["bleu"] == pytest.approx(direct.score / 100, rel=1e-12, abs=1e-15)
        assert ours["precisions"] == pytest.approx([p / 100 for p in direct.precisions], rel=1e-12)
        assert ours["brevity_penalty"] == pytest.approx(direct.bp, rel=1e-12)
        assert (ours["translation_length"], ours["reference_length"]) == (direct.sys_len, direct.ref_len)
    assert scoring.corpus("bleu", preds, refs)["bleu"] > 0


def test_bleu_per_example_is_sentence_bleu_over_100(pairs):
    preds, refs = pairs
    expected = [sacrebleu.sentence_bleu(p, [r]).score / 100 for p, r in zip(preds, refs)]
    assert scoring.score("bleu", preds, refs) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert load("bleu").compute(predictions=preds, references=refs, use_aggregator=False)["bleu"] == \
        pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_bleu_empty_corpus_scores_zero_instead_of_dividing_by_zero():
    out = scoring.corpus("bleu", ["", ""], ["a b", ""])
    assert out == {"bleu": 0.0, "precisions": [0.0] * 4, "brevity_penalty": 0.0, "length_ratio": 0.0,
                   "translation_length": 0, "reference_length": 2}
    assert scoring.corpus("bleu", ["a"], [""])["bleu"] == 0.0
    assert scoring.score("bleu", ["", "a b c d"], ["a", ""]) == [0.0, 0.0]


# -- sacrebleu and chrF -------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"tokenize": "intl", "lowercase": True},
                                     {"smooth_method": "floor", "smooth_value": 0.1}])
def test_sacrebleu_equals_sacrebleu(pairs, options):
    preds, refs = pairs
    direct = sacrebleu.BLEU(**options)
    out = direct.corpus_score(preds, [refs])
    ours = scoring.corpus("sacrebleu", preds, refs, **options)
    assert ours == {"score": out.score, "counts": out.counts, "totals": out.totals, "precisions": out.precisions,
                    "bp": out.bp, "sys_len": out.sys_len, "ref_len": out.ref_len,
                    "signature": str(direct.get_signature())}
    expected = [sacrebleu.sentence_bleu(p, [r], **options).score for p, r in zip(preds, refs)]
    assert scoring.score("sacrebleu", preds, refs, **options) == expected


def test_sacrebleu_several_references(pairs):
    preds, refs = pairs
    second = [p[::-1] for p in preds]
    multi = [[a, b] for a, b in zip(refs, second)]
    assert scoring.corpus("sacrebleu", preds, multi)["score"] == sacrebleu.corpus_bleu(preds, [refs, second]).score
    assert scoring.score("sacrebleu", preds[:20], multi[:20]) == [
        sacrebleu.sentence_bleu(p, r).score for p, r in zip(preds[:20], multi[:20])]
    with pytest.raises(SpecError, match="same number of references"):
        scoring.corpus("sacrebleu", preds[:2], [["a", "b"], ["c"]])


@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_equals_sacrebleu(pairs, word_order):
    preds, refs = pairs
    direct = sacrebleu.CHRF(word_order=word_order)
    ours = scoring.corpus("chrf", preds, refs, word_order=word_order)
    assert ours == {"score": direct.corpus_score(preds, [refs]).score, "char_order": 6, "word_order": word_order,
                    "beta": 2}
    assert scoring.score("chrf", preds, refs, word_order=word_order) == [
        sacrebleu.sentence_chrf(p, [r], word_order=word_order).score for p, r in zip(preds, refs)]


def test_sacrebleu_and_chrf_on_non_latin_text_equal_sacrebleu():
    preds = [p for p, _ in NON_LATIN] + ["", "完全一致"]
    refs = [r for _, r in NON_LATIN] + ["空", "完全一致"]
    for options in ({}, {"tokenize": "zh"}, {"tokenize": "char"}):
        assert scoring.score("sacrebleu", preds, refs, **options) == [
            sacrebleu.sentence_bleu(p, [r], **options).score for p, r in zip(preds, refs)]
        assert scoring.corpus("sacrebleu", preds, refs, **options)["score"] == \
            sacrebleu.corpus_bleu(preds, [refs], **options).score
    chrf = scoring.score("chrf", preds, refs)
    assert chrf == [sacrebleu.sentence_chrf(p, [r]).score for p, r in zip(preds, refs)]
    assert all(s > 0 for s in chrf[:len(NON_LATIN)]) and chrf[-1] == 100.0


def test_empty_strings_score_like_the_references():
    preds, refs = ["", "", "a cat", "  "], ["", "a cat", "", "a"]
    direct = rouge_scorer.RougeScorer(ROUGE_TYPES)
    for t in ROUGE_TYPES:
        assert scoring.score(t, preds, refs) == [direct.score(r, p)[t].fmeasure for p, r in zip(preds, refs)]
    assert scoring.score("sacrebleu", preds, refs) == [sacrebleu.sentence_bleu(p, [r]).score
                                                       for p, r in zip(preds, refs)]
    assert scoring.score("chrf", preds, refs) == [sacrebleu.sentence_chrf(p, [r]).score for p, r in zip(preds, refs)]
    assert scoring.corpus("chrf", preds, refs)["score"] == sacrebleu.corpus_chrf(preds, [refs]).score
    assert scoring.score("exact_match", preds, refs) == [1.0, 0.0, 0.0, 0.0]


# -- exact match --------------------------------------------------------------------------------


def test_exact_match_options_as_evaluate_documents_them():
    """evaluate's own examples: regexes are removed before case folding, so "yell" leaves "YELLING" whole."""
    refs = ["the cat", "theater", "YELLING", "agent007"]
    preds = ["cat?", "theater", "yelling", "agent"]
    em = load("exact_match")
    assert em.compute(predictions=preds, references=refs) == {"exact_match": 0.25}
    assert em.compute(predictions=preds, references=refs, ignore_case=True) == {"exact_match": 0.5}
    opts = {"regexes_to_ignore": ["the ", "yell"], "ignore_case": True}
    assert scoring.score("exact_match", preds, refs, **opts) == [0.0, 1.0, 0.0, 0.0]
    opts["ignore_punctuation"] = True
    assert scoring.corpus("exact_match", preds, refs, **opts) == {"exact_match": 0.5}
    opts["ignore_numbers"] = True
    assert scoring.score("exact_match", preds, refs, **opts) == [1.0, 1.0, 0.0, 1.0]
    assert scoring.score("exact_match", ["Paris"], [["London", "paris"]], ignore_case=True) == [1.0]
    assert scoring.score("exact_match", ["a1"], ["a"], regexes_to_ignore=r"\d") == [1.0]


# -- semantic similarity ------------------------------------------------------------------------


def test_semantic_similarity_with_a_local_model(tiny_model):
    preds = ["the office opens at nine", "", "expenses are due in 30 days"]
    refs = ["the office opens at nine", "anything", ["no", "expenses are due in 30 days"]]
    scores = scoring.score("semantic_similarity", preds, refs, model=str(tiny_model))
    assert len(scores) == 3 and scores[0] == pytest.approx(1.0, abs=1e-5) and scores[2] == pytest.approx(1.0, abs=1e-5)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    uniform = [[r] if isinstance(r, str) else r for r in refs]  # evaluate types inputs by the first example
    out = load("semantic_similarity").compute(predictions=preds, references=uniform, model=str(tiny_model))
    assert out["scores"] == pytest.approx(scores, abs=1e-6)
    assert out["mean"] == pytest.approx(sum(scores) / 3, abs=1e-6)
    assert scoring.corpus("semantic_similarity", preds, refs, model=str(tiny_model)) == {
        "mean": pytest.approx(sum(scores) / 3, abs=1e-6)}


def test_semantic_similarity_refuses_a_model_that_is_not_a_local_folder(tmp_path):
    from llmops.errors import BackendError

    with pytest.raises(BackendError, match="not a local folder"):
        scoring.score("semantic_similarity", ["a"], ["a"], model=str(tmp_path / "missing"))


@pytest.mark.integration
def test_semantic_similarity_scores_a_paraphrase_high_and_an_unrelated_answer_low():
    ref = "Employees must submit their expense reports within thirty days."
    paraphrase = "Staff have to hand in expense claims no later than 30 days afterwards."
    unrelated = "The cafeteria serves vegetarian lasagna on Fridays."
    high, low = scoring.score("semantic_similarity", [paraphrase, unrelated], [ref, ref])
    assert high > 0.6 and low < 0.2
    rouge_l = scoring.score("rougeL", [paraphrase], [ref])[0]
    assert high > rouge_l + 0.3  # word overlap misses what the embedding sees


# -- the scoring layer --------------------------------------------------------------------------


def test_metrics_scales_and_options_match_the_modules():
    assert set(scoring.SCALE) == set(scoring.METRICS) == set(scoring.OPTIONS)
    assert {n for n, s in scoring.SCALE.items() if s == 100.0} == {"sacrebleu", "chrf"}
    fixed = {"self", "predictions", "references", "use_aggregator", "rouge_types"}
    for name in scoring.METRICS:
        module = scoring.load_module(name)
        params = set(inspect.signature(module._compute).parameters) - fixed
        assert params == set(scoring.OPTIONS[name]) | set(scoring._CORPUS_ONLY.get(name, ())), name


def test_check_metric_names_the_known_metrics_and_suggests():
    assert scoring.check_metric("rougeL") == "rougeL"
    with pytest.raises(SpecError) as err:
        scoring.check_metric("rouge_l")
    assert "unknown metric 'rouge_l': did you mean 'rougeL'?" in str(err.value)
    assert ("known metrics: bleu, chrf, exact_match, rouge1, rouge2, rougeL, rougeLsum, sacrebleu, "
            "semantic_similarity") in str(err.value)
    with pytest.raises(SpecError, match="metric 'chrf' has no option 'word_ordr': did you mean 'word_order'"):
        scoring.check_metric("chrf", {"word_ordr": 2})
    with pytest.raises(SpecError, match="has no option 'x'"):
        scoring.score("bleu", ["a"], ["a"], x=1)


def test_score_gives_one_float_per_example_and_refuses_misaligned_input(pairs):
    preds, refs = pairs
    for name in ("bleu", "sacrebleu", "chrf", "rougeLsum", "exact_match"):
        values = scoring.score(name, preds, refs)
        assert len(values) == len(preds) and all(isinstance(v, float) for v in values)
        assert all(0.0 <= v <= scoring.SCALE[name] * (1 + 1e-12) for v in values)  # sacrebleu: 100.00000000000004
    assert scoring.score("rougeL", [], []) == []
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        scoring.score("rougeL", ["a", "b"], ["a"])
    with pytest.raises(SpecError, match="no examples to score"):
        scoring.corpus("bleu", [], [])


def test_modules_load_by_path_offline_with_a_fresh_cache(tmp_path):
    """evaluate.load(path) with the network cut and an empty HF cache folder: nothing is fetched."""
    script = f"""
import socket
def refuse(*args, **kwargs):
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
import evaluate
base = {str(METRICS_DIR)!r}
out = {{}}
for name in ["bleu", "sacrebleu", "chrf", "rouge", "exact_match", "semantic_similarity"]:
    module = evaluate.load(base + "/" + name)
    if name != "semantic_similarity":
        out[name] = module.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])
print(out["rouge"]["rougeL"], out["sacrebleu"]["score"], out["bleu"]["bleu"], out["exact_match"]["exact_match"])
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_CACHE"))}
    env.update(HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [round(float(x), 6) for x in proc.stdout.split()[-4:]] == [1.0, 100.0, 1.0, 1.0]
