"""Shared fixtures: a workspace in a temp folder, on SQLite and (for the store suite) on the real PostgreSQL."""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.pop("LLMOPS_STORE_URL", None)

PG_URL = os.environ.get("LLMOPS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL schema for one test, dropped afterwards; the URL pins search_path to it."""
    from sqlalchemy import create_engine, text

    schema = f"llmops_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # pragma: no cover - only when the server is down
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable ({exc}); start it or set LLMOPS_TEST_PG_URL")
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request):
    """None (the workspace's own SQLite file) or a PostgreSQL URL: the store suite runs on both."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store_ws(tmp_path, store_url):
    import llmops

    ws = llmops.Workspace(tmp_path / "ws", store_url=store_url)
    yield ws
    ws.close()


@pytest.fixture
def ws(tmp_path):
    """A SQLite workspace in a temp folder (for suites that are not about the store itself)."""
    import llmops

    ws = llmops.Workspace(tmp_path / "ws")
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny-model tests (`pytestmark = pytest.mark.usefixtures(...)`):
    tiny models gain nothing from threads, and on a busy 2-core machine OpenMP threads that wait for each
    other make each step ~100x slower. Restored afterwards, so other modules are unaffected."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the tiny local chat LLM (tests/model_support.py), built once per session -----------------------

@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory):
    """A 2-layer Llama folder with a BPE tokenizer trained here (model id `tiny-llama`), built once.

    Shared by every test module: copy it before changing a file in it.
    """
    from model_support import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llm") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_llm(tiny_llm_dir):
    """The tiny LLM loaded by the transformers backend (a backend keeps no state between calls)."""
    from llmops.models import load_backend

    return load_backend(str(tiny_llm_dir))
