"""Crash safety: an ingestion SIGKILLed mid-way leaves the previous version serving and the store consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from rag_support import tiny_model, write_corpus, write_spec  # noqa: F401

CHILD = textwrap.dedent("""
    import sys, time
    import llmops
    ws_dir, spec, stage, after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def on_progress(name, done, total):
        if name == stage and done >= after:
            print("REACHED", name, done, total, flush=True)
            time.sleep(120)   # the parent kills us here

    llmops.Workspace(ws_dir).rag.ingest(spec, on_progress=on_progress)
    print("FINISHED", flush=True)
""")


def _ingest_until_killed(ws_root, spec, stage, after):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(ws_root), str(spec), stage, str(after)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("REACHED"), f"child did not reach {stage}: {line!r} {proc.stderr.read()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("stage, after", [("embedding batches", 1), ("publish", 0)])
def test_killed_ingestion_leaves_previous_version_serving(tmp_path, tiny_model, stage, after):  # noqa: F811
    import llmops

    root = tmp_path / "ws"
    write_corpus(root)
    spec = write_spec(root, tiny_model, batch_size=2)
    with llmops.Workspace(root) as ws:
        v1 = ws.rag.ingest(spec)
        query = ws.rag.index("kb").records[0]["text"]
    # a change big enough to need several embedding batches
    (root / "rag/docs/new.md").write_text("\n\n".join(f"Paragraph {i} is about topic {i * 7} and nothing else."
                                                      for i in range(12)))
    _ingest_until_killed(root, spec, stage, after)

    with llmops.Workspace(root) as ws:  # the store opens, and only the old version exists
        assert [v.version for v in ws.registry.versions("index/kb")] == [1]
        index = ws.rag.index("kb")
        assert index.ref == "index/kb@1" and index.search(query, k=1)[0].text == query
        killed = [r for r in ws.search_runs("attributes.kind = 'ingest'") if r.id != v1.run_id]
        assert len(killed) == 1 and killed[0].status in ("running", "lost")
        res = ws.rag.ingest(spec)  # a re-run completes and publishes
        assert res.published and res.ref == "index/kb@2"
        assert "rag/docs/new.md" in res.files["added"]
        new_chunks = res.counts["chunks"] - v1.counts["chunks"]
        if stage == "embedding batches":  # the one batch (2 chunks) embedded before the kill comes from the cache
            assert res.counts["embedded"] == new_chunks - 2 and res.counts["cached"] == v1.counts["chunks"] + 2
        else:
            assert res.counts["embedded"] == 0
        hits = ws.rag.index("kb").search("Paragraph 3 is about topic 21 and nothing else.", k=1)
        assert hits[0].source == "rag/docs/new.md"
