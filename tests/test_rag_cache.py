"""Embedding cache: round trip, and what a killed writer can leave behind is ignored or cleaned."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from llmops.rag.cache import EmbeddingCache


def vecs(n, dim=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_put_get_round_trip_across_batches_and_reopen(tmp_path):
    a, b = vecs(3), vecs(2, seed=1)
    with EmbeddingCache(tmp_path, "fp-1", 8) as cache:
        cache.put(["a0", "a1", "a2"], a)
        cache.put(["b0", "b1"], b)
        assert len(cache) == 5
    with EmbeddingCache(tmp_path, "fp-1", 8) as cache:
        got, found = cache.get(["b1", "zz", "a0", "a2", "a0"])
    assert found.tolist() == [True, False, True, True, True]
    assert np.array_equal(got[[0, 2, 3, 4]], np.stack([b[1], a[0], a[2], a[0]])) and not got[1].any()


def test_caches_are_per_fingerprint(tmp_path):
    with EmbeddingCache(tmp_path, "fp-1", 8) as c1:
        c1.put(["x"], vecs(1))
    with EmbeddingCache(tmp_path, "sha256:other/fp", 8) as c2:
        assert not c2.get(["x"])[1].any()
        assert c2.dir.parent == tmp_path and "/" not in c2.dir.name
    with pytest.raises(ValueError):
        EmbeddingCache(tmp_path, "fp-1", 16)
    with pytest.raises(ValueError, match="shape"):
        with EmbeddingCache(tmp_path, "fp-1", 8) as c:
            c.put(["a", "b"], vecs(3))


def test_leftovers_of_a_killed_writer(tmp_path):
    with EmbeddingCache(tmp_path, "fp", 8) as cache:
        cache.put(["a"], vecs(1))
        # a writer killed mid-file leaves a temp file; one killed before its commit leaves an unreferenced batch
        (cache.batches / ".dead.npy.tmp").write_bytes(b"\x93NUMPY half")
        np.save(cache.batches / "orphan.npy", vecs(2))
        assert cache.get(["a", "orphan"])[1].tolist() == [True, False]
        assert cache.prune() == 0  # too fresh: another process could be committing it right now
        old = time.time() - 7200
        for p in cache.batches.iterdir():
            os.utime(p, (old, old))
        assert cache.prune() == 2
        assert sorted(p.name for p in cache.batches.iterdir()) == [cache._locate(["a"])["a"][0]]
        assert cache.get(["a"])[1].all()


def test_a_lost_batch_file_is_forgotten_not_fatal(tmp_path):
    with EmbeddingCache(tmp_path, "fp", 8) as cache:
        cache.put(["a", "b"], vecs(2))
        cache.put(["c"], vecs(1))
        (cache.batches / cache._locate(["a"])["a"][0]).unlink()
        assert cache.get(["a", "b", "c"])[1].tolist() == [False, False, True]
        assert len(cache) == 1  # the dangling rows were dropped, so those chunks get embedded again
