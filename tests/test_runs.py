"""Runs: write-once params, metric time series, tags, artifacts, failure status, nesting."""

import pytest

from llmops.errors import InvalidValue, ParamConflict, RunNotFound


def test_params_metrics_tags_round_trip(store_ws):
    with store_ws.start_run("train", kind="finetune") as run:
        run.log_params({"lr": 0.001, "layers": [1, 2]})
        run.log_param("lr", 0.001)  # same value again is fine
        for i, loss in enumerate([3.0, 2.0, 1.5]):
            run.log_metric("loss", loss, step=i * 10)
        run.log_metrics({"acc": 0.5, "f1": 0.4})
        run.log_metrics({"acc": 0.7})
        run.set_tag("team", "search")
    info = store_ws.get_run(run.id)
    assert (info.name, info.kind, info.status) == ("train", "finetune", "finished")
    assert info.params == {"lr": "0.001", "layers": "[1, 2]"}
    assert info.metrics == {"loss": 1.5, "acc": 0.7, "f1": 0.4}
    assert info.tags == {"team": "search"}
    assert [(p.step, p.value) for p in info.metric_history("loss")] == [(0, 3.0), (10, 2.0), (20, 1.5)]
    assert [(p.step, p.value) for p in info.metric_history("acc")] == [(0, 0.5), (1, 0.7)]
    assert info.ended_at >= info.started_at


def test_param_conflict_raises_and_keeps_first_value(store_ws):
    with store_ws.start_run("r") as run:
        run.log_param("lr", 0.1)
        run.flush()
        with pytest.raises(ParamConflict, match="write-once"):
            run.log_param("lr", 0.2)
    assert store_ws.get_run(run.id).params == {"lr": "0.1"}


def test_metric_must_be_a_number(store_ws):
    with store_ws.start_run("r") as run:
        with pytest.raises(InvalidValue, match="must be a number"):
            run.log_metric("acc", "high")
    assert store_ws.get_run(run.id).metrics == {}


def test_active_run_metrics_visible_before_exit(store_ws):
    with store_ws.start_run("r") as run:
        run.log_metric("x", 1.0)
        assert store_ws.get_run(run.id).metrics == {"x": 1.0}
        assert store_ws.get_run(run.id).status == "running"


def test_exception_marks_failed_and_reraises(store_ws):
    with pytest.raises(RuntimeError, match="boom"):
        with store_ws.start_run("bad") as run:
            run.log_metric("before", 1.0)
            raise RuntimeError("boom")
    info = store_ws.get_run(run.id)
    assert info.status == "failed"
    assert "RuntimeError: boom" in info.error
    assert info.metrics == {"before": 1.0}  # what was logged before the failure is kept


def test_nested_runs_record_parent(store_ws):
    with store_ws.start_run("outer") as outer:
        with store_ws.start_run("inner") as inner:
            assert store_ws.active_run() is inner
        assert store_ws.active_run() is outer
    assert store_ws.active_run() is None
    assert store_ws.get_run(inner.id).parent_id == outer.id
    assert store_ws.get_run(outer.id).parent_id is None


def test_artifacts_logged_by_name(store_ws, tmp_path):
    f = tmp_path / "report.json"
    f.write_text('{"ok": true}')
    with store_ws.start_run("r") as run:
        d1 = run.log_artifact(f)
        d2 = run.log_artifact(b"plain", name="notes/a.txt")
    info = store_ws.get_run(run.id)
    assert info.artifacts == {"report.json": d1, "notes/a.txt": d2}
    assert store_ws.artifacts.get(d2) == b"plain"


def test_get_run_by_prefix_and_unknown(store_ws):
    with store_ws.start_run("r") as run:
        pass
    assert store_ws.get_run(run.id[:16]).id == run.id
    # a served answer's OpenAI id names its request run: `runs show`, lineage, feedback and replay take it
    assert store_ws.get_run(f"chatcmpl-{run.id}").id == store_ws.get_run(f"cmpl-{run.id[:12]}").id == run.id
    with pytest.raises(RunNotFound, match="no run with id 'doesnotexist'") as info:
        store_ws.get_run("doesnotexist")
    assert "llmops" not in str(info.value)  # the store names no CLI command; the CLI adds the hint


@pytest.mark.parametrize("pattern", ["______", "%%%%%%", "0_____", "%", "______" + "_" * 26])
def test_like_wildcards_are_not_run_id_prefixes(store_ws, pattern):
    with store_ws.start_run("r"):
        pass
    with pytest.raises(RunNotFound, match="no run with id"):
        store_ws.get_run(pattern)


def test_an_ambiguous_prefix_says_so(store_ws):
    ids = []
    for _ in range(2):
        with store_ws.start_run("r") as run:
            ids.append(run.id)
    common = next(i for i in range(32) if ids[0][i] != ids[1][i])
    if common >= 6:
        with pytest.raises(RunNotFound, match="matches several runs"):
            store_ws.get_run(ids[0][:common])
