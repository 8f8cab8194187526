"""FAISS indexes over normalised vectors (inner product = cosine): build, save, load, tune.

Every index is an `IndexIDMap2` around flat, HNSW or IVF storage, built with `faiss.index_factory` and
METRIC_INNER_PRODUCT, keyed by int64 chunk ids (`chunking.faiss_id`). Files are written with
`faiss.write_index`, never pickled. Search-time knobs (efSearch, nprobe) live in the version manifest
and are applied on load, so tuning publishes a new manifest over the very same index file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmops.errors import SpecError
from llmops.rag.spec import IndexSpec

HNSW_DEFAULTS = {"M": 32, "efConstruction": 40, "efSearch": 16}
EF_CANDIDATES = (1, 2, 4, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024, 2048)
NPROBE_CANDIDATES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 192, 256, 384, 512, 1024)


def _faiss():
    import faiss

    return faiss


@dataclass(frozen=True)
class IndexPlan:
    """What to build: the factory string and the parameters, as recorded in the manifest."""

    type: str
    factory: str
    build_params: dict[str, int]
    search_params: dict[str, int]
    metric: str = "inner_product"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def auto_nlist(n: int) -> int:
    """IVF lists for n vectors: about sqrt(n), but at least 39 training points per list (auto_nlist(5183) == 72)."""
    return max(1, min(round(math.sqrt(n)), n // 39))


def plan_index(spec: IndexSpec, n: int, *, file: str | None = None) -> IndexPlan:
    p = dict(spec.params)
    if spec.type == "flat":
        return IndexPlan("flat", "IDMap2,Flat", {}, {})
    if spec.type == "hnsw":
        m = p.get("M", HNSW_DEFAULTS["M"])
        return IndexPlan("hnsw", f"IDMap2,HNSW{m}",
                         {"M": m, "efConstruction": p.get("efConstruction", HNSW_DEFAULTS["efConstruction"])},
                         {"efSearch": p.get("efSearch", HNSW_DEFAULTS["efSearch"])})
    nlist = p.get("nlist") or auto_nlist(n)
    if nlist > n:
        raise SpecError(f"an ivf index with nlist={nlist} needs at least {nlist} chunks to train on, the corpus has {n}",
                        file=file, field="index.params.nlist", fix=f"set nlist to {auto_nlist(n)} or remove it")
    nprobe = min(p.get("nprobe", 8), nlist)
    return IndexPlan("ivf", f"IDMap2,IVF{nlist},Flat", {"nlist": nlist}, {"nprobe": nprobe})


def apply_search_params(index: Any, params: dict[str, int]) -> None:
    ps = _faiss().ParameterSpace()
    for key, value in params.items():
        ps.set_index_parameter(index, key, float(value))


def build_index(vectors: np.ndarray, ids: np.ndarray, plan: IndexPlan) -> Any:
    """Build and fill an index; vectors must be L2-normalised float32 (n, dim), ids distinct int64."""
    import numpy as np

    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    index = faiss.index_factory(vectors.shape[1], plan.factory, faiss.METRIC_INNER_PRODUCT)
    if plan.type == "hnsw":
        faiss.downcast_index(index.index).hnsw.efConstruction = plan.build_params["efConstruction"]
    if not index.is_trained:
        index.train(vectors)
    index.add_with_ids(vectors, ids)
    apply_search_params(index, plan.search_params)
    return index


def write_index(index: Any, path: Path) -> None:
    _faiss().write_index(index, str(path))


def read_index(path: Path, search_params: dict[str, int] | None = None) -> Any:
    index = _faiss().read_index(str(path))
    if search_params:
        apply_search_params(index, search_params)
    return index


def index_ids(index: Any) -> np.ndarray:
    """The int64 ids an IndexIDMap2 holds, in insertion order."""
    import numpy as np

    return _faiss().vector_to_array(index.id_map).astype(np.int64)


def all_vectors(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) stored in an index, read back from its storage (for exact ground truth when tuning)."""
    faiss = _faiss()
    inner = faiss.downcast_index(index.index)
    if hasattr(inner, "make_direct_map") and hasattr(inner, "invlists"):
        inner.make_direct_map()
    return index_ids(index), inner.reconstruct_n(0, inner.ntotal)


def exact_search(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force inner-product top-k ids: the reference ANN recall is measured against."""
    import numpy as np

    faiss = _faiss()
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    _, rows = flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(ids)))
    return np.where(rows >= 0, ids[np.clip(rows, 0, None)], -1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (truth rows padded with -1 are ignored)."""
    total = 0.0
    for f, t in zip(found, truth):
        t = set(int(x) for x in t if x >= 0)
        total += len(t & set(int(x) for x in f if x >= 0)) / len(t) if t else 1.0
    return total / max(len(truth), 1)


@dataclass
class TuneResult:
    """The search knob picked for a recall target, and the curve measured to pick it."""

    param: str
    value: int
    recall: float
    target: float
    k: int
    queries: int
    reached: bool
    curve: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["curve"] = [[v, round(r, 6)] for v, r in self.curve]
        d["recall"] = round(self.recall, 6)
        return d


def sample_queries(texts: list[str], n: int = 200, *, words: int = 16, seed: int = 0) -> list[str]:
    """Pseudo-queries for tuning: a random span of `words` words from each of `n` sampled chunk texts (seeded).

    Why not the stored vectors themselves: a vector already in an HNSW graph is found almost for free,
    which overstates recall (on SciFact, efSearch=2 "reaches" 0.95 that way while real queries get 0.76).
    Spans of chunk text behave like real short queries (there, 0.953 vs 0.966 at efSearch=16).
    """
    import random

    rng = random.Random(seed)
    picked = rng.sample(range(len(texts)), min(n, len(texts)))
    out = []
    for i in sorted(picked):
        w = texts[i].split()
        start = rng.randrange(0, len(w) - words + 1) if len(w) > words else 0
        out.append(" ".join(w[start:start + words]) or texts[i])
    return out


def search_params_for(plan_type: str, params: dict[str, int], k: int):
    """Per-call FAISS search parameters: HNSW explores at least k candidates (efSearch = max(efSearch, k)),
    as hnswlib does, so a value tuned for k=10 still returns sane top-100 lists."""
    if plan_type == "hnsw" and k > params.get("efSearch", 0):
        return _faiss().SearchParametersHNSW(efSearch=int(k))
    return None


def tune_index(index: Any, plan: IndexPlan, *, target: float = 0.95, k: int = 10,
               queries: np.ndarray | None = None, sample: int = 200, seed: int = 0) -> TuneResult:
    """Find the smallest efSearch (hnsw) or nprobe (ivf) whose recall@k against exact search reaches `target`.

    `queries` are query vectors, best embedded `sample_queries` texts. Without them, `sample` stored
    vectors are drawn (seeded), which overstates HNSW recall (see sample_queries). The index is left
    set to the chosen value.
    """
    import numpy as np

    if plan.type not in ("hnsw", "ivf"):
        raise SpecError(f"a {plan.type} index is exact and has nothing to tune", fix="use an hnsw or ivf index")
    ids, vectors = all_vectors(index)
    if queries is None:
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(ids), size=min(sample, len(ids)), replace=False)
        queries = vectors[np.sort(pick)]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    kk = min(k, len(ids))
    truth = exact_search(vectors, ids, queries, kk)
    if plan.type == "hnsw":
        param, candidates = "efSearch", [v for v in EF_CANDIDATES if v <= max(len(ids), kk)] or [kk]
    else:
        nlist = plan.build_params["nlist"]
        param, candidates = "nprobe", sorted({v for v in NPROBE_CANDIDATES if v < nlist} | {nlist})
    curve: list[tuple[int, float]] = []
    chosen = None
    for value in candidates:
        apply_search_params(index, {param: value})
        _, found = index.search(queries, kk)
        r = recall_at_k(found, truth)
        curve.append((value, r))
        if r >= target:
            chosen = (value, r)
            break
    reached = chosen is not None
    if chosen is None:
        chosen = max(curve, key=lambda vr: (vr[1], -vr[0]))
    apply_search_params(index, {param: chosen[0]})
    return TuneResult(param, int(chosen[0]), float(chosen[1]), target, kk, len(queries), reached, curve)
