"""Helpers for the RAG and embedder tests: the one tiny BERT sentence-transformer, a real PDF writer,
spec writers, and the `llmops` command run in process (`cli`) or as a real process (`cli_process`).

The tiny model has random weights (seeded) and MiniLM's real tokenizer, so chunk sizing, caching,
indexing and search run on a real sentence-transformers model in a fraction of a second per batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str):
    """`llmops ARGS` in this process through Typer's CliRunner; an LLMOpsError stays in `.exception`."""
    from typer.testing import CliRunner

    import llmops.cli as c

    c._register()
    return CliRunner().invoke(c.app, [str(a) for a in args])


def cli_process(*args: str, cwd: Path | None = None, wait: bool = True):
    """`python -m llmops.cli ARGS` as a real process (exit codes, concurrency): CompletedProcess, or Popen."""
    cmd = [sys.executable, "-m", "llmops.cli", *[str(a) for a in args]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A 1-layer, 32-dim BERT wrapped as a sentence-transformers folder (mean pooling), built from a config."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from llmops.rag.embedder import default_embedder_path

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 5
        from sentence_transformers import models

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(default_embedder_path()))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    hf = folder / "hf"
    BertModel(cfg).save_pretrained(hf)
    tok.save_pretrained(hf)
    word = models.Transformer(str(hf), max_seq_length=128)
    dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pool = models.Pooling(dim(), "mean")
    out = folder / "st"
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model):
    from llmops.rag.embedder import Embedder

    return Embedder(tiny_model)


def make_pdf(pages: list[str]) -> bytes:
    """A minimal but valid PDF with one line of Helvetica text per page (pypdf extracts it)."""
    objs: list[bytes] = []
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    font = 3 + 2 * n
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    for i, text in enumerate(pages):
        esc = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({esc}) Tj ET".encode()
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                    f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode())
        objs.append(b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


CORPUS = {
    "docs/alpha.md": """\
        # Alpha guide

        Alpha is the first letter of the Greek alphabet. Engineers use it to name early releases.

        ## Installing alpha

        Run the installer, then restart the machine. The installer checks the disk space first.

        ## Removing alpha

        Delete the folder and the configuration file. Nothing else is left behind.
        """,
    "docs/beta.md": """\
        # Beta notes

        Beta follows alpha. A beta release is feature complete but may still have bugs.

        Testers report bugs through the tracker, with steps to reproduce them.
        """,
    "docs/cooking.txt": """\
        Bread needs flour, water, salt and yeast. Knead the dough for ten minutes and let it rise.
        Bake at two hundred and twenty degrees until the crust is brown.
        """,
}


def write_corpus(root: Path, files: dict[str, str] | None = None) -> None:
    for rel, text in (files or CORPUS).items():
        p = root / "rag" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


def write_spec(root: Path, model: Path | str, *, name: str = "kb", body: str | None = None, **extra: str) -> Path:
    """rag/<name>.yaml over rag/docs/**/*, with the given model; `body` replaces the default spec body."""
    spec = body or textwrap.dedent(f"""\
        name: {name}
        sources: ["docs/**/*"]
        chunker: {{kind: {extra.get('kind', 'recursive')}, chunk_size: {extra.get('chunk_size', 24)}, chunk_overlap: 4}}
        embedder: {{model: "{model}", batch_size: {extra.get('batch_size', 4)}}}
        index: {{type: {extra.get('index', 'flat')}}}
        on_error: {extra.get('on_error', 'stop')}
        """)
    p = root / "rag" / f"{name}.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(spec)
    return p
