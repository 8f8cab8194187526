"""`llmops quickstart`, the README's main command, end to end on the real embedded models."""

import os
import subprocess
import sys

import pytest


@pytest.mark.integration
def test_quickstart_runs_the_whole_story(tmp_path):
    r = subprocess.run([sys.executable, "-m", "llmops.cli", "quickstart", "--keep", str(tmp_path / "qs")],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    for expected in ["pushed prompt/qa@1", "prompt/qa@2", "qa@1 -> qa@2",        # two versions and their diff
                     "index/handbook@1", "published=False",                        # ingest, then nothing changed
                     "loaded chain/rag-qa@1", "A: ", "chunks used by step 'retrieve'",
                     "used index/handbook@1", "used model/smollm2@1", "used prompt/rag-qa@1"]:
        assert expected in out, expected
    import llmops

    ws = llmops.Workspace(tmp_path / "qs")
    chain_runs = ws.search_runs("attributes.kind = 'chain' AND attributes.status = 'finished'")
    assert len(chain_runs) == 1 and chain_runs[0].metrics["tokens.completion"] > 0
    ws.close()
