"""`llmops rag …` end to end on a tiny local embedder: in process (CliRunner), plus real processes for
exit codes and two ingestions running at once."""

from __future__ import annotations

import json

import pytest
from rag_support import cli, cli_process, tiny_model, write_corpus, write_spec  # noqa: F401 (fixture)

from llmops.errors import AliasNotFound, InvalidValue, LLMOpsError


@pytest.fixture
def kb(tmp_path, tiny_model):  # noqa: F811
    root = tmp_path / "w"
    write_corpus(root)
    return root, write_spec(root, tiny_model, name="kb", index="hnsw")


def ok(*args):
    r = cli(*args)
    assert r.exit_code == 0 and r.exception is None, (r.output, r.exception)
    return r


def test_ingest_query_eval_tune(kb):
    root, spec = kb
    first = json.loads(ok("-w", root, "rag", "ingest", spec, "--json").stdout)
    assert (first["ref"], first["published"]) == ("index/kb@1", True)
    assert first["published_by"]["run_id"] == first["run_id"]
    again = json.loads(ok("-w", root, "rag", "ingest", spec, "--json").stdout)
    assert (again["ref"], again["published"], again["counts"]["embedded"]) == ("index/kb@1", False, 0)
    assert again["published_by"]["run_id"] == first["run_id"]
    assert "unchanged, nothing published: index/kb@1 (published by run" in ok("-w", root, "rag", "ingest", spec).stdout

    hits = json.loads(ok("-w", root, "rag", "query", "kb", "how do I install alpha?", "-k", "3", "--json").stdout)
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert all(h["index"] == "index/kb@1" for h in hits)

    (root / "q.jsonl").write_text('{"_id": "q1", "text": "installing alpha"}\n')
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\trag/docs/alpha.md\t1\n")
    ev = ok("-w", root, "rag", "eval", "kb", "--queries", root / "q.jsonl", "--qrels", root / "qrels.tsv", "--json")
    metrics = json.loads(ev.stdout)["metrics"]
    assert set(metrics) == {"ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())

    tuned = json.loads(ok("-w", root, "rag", "tune", "kb", "--target", "0.9", "--json").stdout)
    assert (tuned["ref"], tuned["tuned_from"], tuned["published"], tuned["outcome"]) == ("index/kb@2", "index/kb@1", True, "new")
    # the same settings again: nothing new, whichever version is named
    for ref in ("kb", "kb@1"):
        same = json.loads(ok("-w", root, "rag", "tune", ref, "--target", "0.9", "--json").stdout)
        assert (same["ref"], same["published"], same["outcome"]) == ("index/kb@2", False, "unchanged")
    assert "(unchanged)" in ok("-w", root, "rag", "tune", "kb", "--target", "0.9").stdout
    assets = json.loads(ok("-w", root, "assets", "list", "--json").stdout)
    assert [(a["name"], a["version"]) for a in assets] == [("kb", 2)]


@pytest.mark.parametrize("args, error, words", [
    (["tune", "kb", "-k", "0"], InvalidValue, "k must be a whole number from 1 to 1000, got 0"),
    (["tune", "kb", "--sample", "0"], InvalidValue, "sample must be a whole number from 1 to 100000, got 0"),
    (["tune", "kb", "--target", "0"], InvalidValue, "target must be in (0, 1]"),
    (["query", "kb", "alpha", "-k", "0"], InvalidValue, "k must be a whole number from 1 to 10000"),
    (["query", "kb@production", "alpha"], AliasNotFound, "query `kb` for the latest version, or run "
                                                         "`llmops assets alias index/kb production VERSION`"),
    (["query", "kb@²", "alpha"], LLMOpsError, "version"),
])
def test_bad_arguments_are_one_clear_error_and_change_nothing(kb, args, error, words):
    root, spec = kb
    ok("-w", root, "rag", "ingest", spec, "--json")
    r = cli("-w", root, "rag", *args)
    assert isinstance(r.exception, error) and words in str(r.exception), r.exception
    assets = json.loads(ok("-w", root, "assets", "list", "--json").stdout)
    assert [(a["name"], a["version"]) for a in assets] == [("kb", 1)]


def test_errors_exit_2_with_one_line_in_a_real_process(kb):
    root, spec = kb
    spec.write_text(spec.read_text().replace('"docs/**/*"', '"nothing/**/*.md"'))
    r = cli_process("-w", root, "rag", "ingest", spec)
    assert r.returncode == 2 and "glob matched no files" in r.stderr and "Traceback" not in r.stderr
    r = cli_process("-w", root, "rag", "tune", "kb", "-k", "0")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "k must be a whole number from 1 to 1000" in r.stderr


def test_two_ingestions_at_once_publish_once_and_say_who_did(kb):
    root, spec = kb
    ok("-w", root, "init")
    procs = [cli_process("-w", root, "rag", "ingest", spec, "--json", wait=False) for _ in range(2)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
        outs.append(json.loads(stdout))
    published = [o for o in outs if o["published"]]
    waited = [o for o in outs if not o["published"]]
    assert len(published) == 1 and len(waited) == 1
    assert published[0]["ref"] == waited[0]["ref"] == "index/kb@1"
    assert waited[0]["published_by"] == published[0]["published_by"]
    assert published[0]["published_by"]["run_id"] == published[0]["run_id"]
    assert isinstance(published[0]["published_by"]["pid"], int)
    assert waited[0]["counts"]["embedded"] == 0  # the second one reused the first one's work
    assets = json.loads(ok("-w", root, "assets", "list", "--json").stdout)
    assert [(a["name"], a["version"]) for a in assets] == [("kb", 1)]


def test_an_ingestion_waits_while_another_holds_the_index(kb):
    import os

    import llmops
    from llmops.rag.lock import index_lock

    root, spec = kb
    ok("-w", root, "init")
    home = llmops.Workspace(root).home
    with index_lock(home, "kb"):  # as a running ingestion of kb holds it
        proc = cli_process("-w", root, "rag", "ingest", spec, "--json", wait=False)
        line = proc.stderr.readline()
        assert f"another ingestion of index kb is running (pid {os.getpid()}); waiting for it" in line, line
        assert proc.poll() is None
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["published"] is True
