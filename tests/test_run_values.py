"""Nothing a user logs is lost: bad keys and values are refused when logged, with the same limits on SQLite
and PostgreSQL, and a row the database still refuses costs that row only, never its batch."""

import math
import time

import pytest
from sqlalchemy import insert

from llmops.errors import InvalidValue
from llmops.store import runs as run_store
from llmops.store.values import MAX_KEY, MAX_STEP, MAX_TEXT

BAD_CALLS = [
    ("log_param", (None, 1), "param key None is a NoneType"),
    ("log_param", (b"k", 1), "param key b'k' is a bytes"),
    ("log_param", (5, 1), "param key 5 is a int"),
    ("log_param", ("", 1), "param key is empty"),
    ("log_param", ("k" * 256, 1), f"the limit is {MAX_KEY}"),
    ("log_param", ("nul", "a\x00b"), "param 'nul' contains a NUL"),
    ("log_param", ("k\x00", "v"), "contains a NUL"),
    ("log_param", ("sur", "\ud800"), "param 'sur' is not valid Unicode"),
    ("log_param", ("raw", b"abc"), "param 'raw' is bytes"),
    ("log_param", ("mixed", {1: "a", "b": 2}), "param 'mixed' cannot be written as JSON"),
    ("log_metric", ("m", 1.0, 2**70), f"step {2**70} of metric 'm' is out of range: steps are 0..{MAX_STEP}"),
    ("log_metric", ("m", 1.0, 2**31), "is out of range"),
    ("log_metric", ("m", 1.0, -1), "is out of range"),
    ("log_metric", ("m", 1.0, 1.5), "must be an integer"),
    ("log_metric", ("m", 10**400), "out of the range of a 64-bit float"),
    ("log_metric", ("m", float("nan")), "got NaN"),
    ("log_metric", ("m", "high"), "must be a number"),
    ("log_metric", (None, 1.0), "metric key None"),
    ("log_metric", ("m" * 300, 1.0), f"the limit is {MAX_KEY}"),
    ("set_tag", (b"k", "v"), "tag key b'k' is a bytes"),
    ("set_tag", ("t", "\x00"), "tag 't' contains a NUL"),
    ("set_tag", ("big", "x" * (MAX_TEXT + 1)), f"the limit is {MAX_TEXT}"),
    ("log_params", ({"fine": 1, None: 2},), "param key None"),
    ("log_metrics", ([("m", 1.0)],), "metrics must be a dict"),
]


def test_bad_values_are_refused_when_logged_and_every_good_one_is_stored(store_ws):
    with store_ws.start_run("mixed") as run:
        for i, (method, args, message) in enumerate(BAD_CALLS):
            run.log_param(f"p{i}", i)
            run.log_metric("m", float(i), step=i)
            run.set_tag(f"t{i}", str(i))
            with pytest.raises(InvalidValue) as info:
                getattr(run, method)(*args)
            assert message in str(info.value), (method, args, str(info.value))
            if i % 5 == 0:
                run.flush()
        run.log_param("k" * MAX_KEY, "x" * 1000)  # the limits themselves are fine, on both stores
        run.log_metric("edge", 1.0, step=MAX_STEP)
        run.log_metric("diverged", float("inf"), step=0)
        run.log_metric("diverged", float("-inf"), step=1)
    info = store_ws.get_run(run.id)
    n = len(BAD_CALLS)
    assert info.status == "finished"
    assert info.params == {**{f"p{i}": str(i) for i in range(n)}, "k" * MAX_KEY: "x" * 1000}
    assert info.tags == {f"t{i}": str(i) for i in range(n)}
    assert [(p.step, p.value) for p in info.metric_history("m")] == [(i, float(i)) for i in range(n)]
    assert info.metrics["edge"] == 1.0 and info.metric_history("edge")[0].step == MAX_STEP
    assert [p.value for p in info.metric_history("diverged")] == [math.inf, -math.inf]
    assert [r.name for r in store_ws.search_runs("metrics.diverged < 0")] == ["mixed"]


def test_a_row_the_database_refuses_costs_only_that_row(store_ws):
    """Past the call-time checks (a value handed to the store directly), the flush keeps every good row."""
    with store_ws.start_run("direct") as run:
        pass
    now = time.time()
    refused = run_store.flush(
        store_ws.engine, run.id,
        params=[("a", "1"), ("bad", object()), ("b", "2")],
        metrics=[("m", 1.0, 0, now), ("m", 2.0, 2**70, now), ("m", 3.0, 2, now)],
        tags={"t": "1", "u": object()}, edges=[], heartbeat=now)
    assert len(refused) == 3
    assert any("param 'bad'" in r for r in refused) and any(f"step {2**70}" in r for r in refused)
    assert any("tag 'u'" in r for r in refused)
    info = store_ws.get_run(run.id)
    assert info.params == {"a": "1", "b": "2"} and info.tags == {"t": "1"}
    assert [(p.step, p.value) for p in info.metric_history("m")] == [(0, 1.0), (2, 3.0)]


def test_a_conflicting_param_from_another_writer_costs_only_that_param(store_ws):
    with store_ws.start_run("shared") as run:
        run.log_param("lr", "0.1")
    now = time.time()
    refused = run_store.flush(store_ws.engine, run.id, params=[("lr", "0.2"), ("seed", "1")],
                              metrics=[("m", 1.0, 0, now)], tags={}, edges=[], heartbeat=now)
    assert len(refused) == 1 and "param 'lr'" in refused[0] and "write-once" in refused[0]
    info = store_ws.get_run(run.id)
    assert info.params == {"lr": "0.1", "seed": "1"} and info.metrics == {"m": 1.0}


def test_old_rows_with_bytes_keys_or_missing_values_are_still_readable(ws):
    """Older releases let SQLite store bytes keys and values (it does not check types): readers must cope."""
    from llmops.store.schema import MetricRow, ParamRow, TagRow

    with ws.start_run("old") as run:
        run.log_metric("acc", 0.5)
    with ws.engine.begin() as conn:
        conn.execute(insert(ParamRow).values(run_id=run.id, key=b"raw\xff", value="v"))
        conn.execute(insert(TagRow).values(run_id=run.id, key="t", value=b"bytes"))
        conn.execute(insert(MetricRow).values(run_id=run.id, key=b"k", value=2.0, step=0, timestamp=0.0))
    info = ws.get_run(run.id)
    assert info.params == {"raw\\xff": "v"}
    assert info.tags == {"t": "bytes"}
    assert info.metrics == {"acc": 0.5, "k": 2.0}
    assert [r.id for r in ws.search_runs()] == [run.id]
    assert info.to_dict()["params"] == {"raw\\xff": "v"}


@pytest.mark.parametrize("name, kind, message", [
    (None, "custom", "run name None is a NoneType"),
    ("x" * 256, "custom", "the limit is 255"),
    ("ok", "k" * 65, "the limit is 64"),
    ("a\x00b", "custom", "contains a NUL"),
])
def test_bad_run_names_are_refused_before_anything_is_stored(store_ws, name, kind, message):
    with pytest.raises(InvalidValue, match=message):
        with store_ws.start_run(name, kind=kind):
            pass
    assert store_ws.search_runs() == []


def test_an_artifact_name_longer_than_the_store_holds_is_refused(store_ws):
    with store_ws.start_run("r") as run:
        with pytest.raises(InvalidValue, match="the limit is 1024"):
            run.log_artifact(b"x", name="a/" * 600 + "b")
        run.log_artifact(b"x", name="a" * 1024)
    assert list(store_ws.get_run(run.id).artifacts) == ["a" * 1024]


def test_postgres_traps_past_the_checks_cost_only_their_rows(tmp_path, pg_url):
    """What PostgreSQL refuses and SQLite takes (long keys, NUL, steps >= 2**31), handed to the store
    directly: each such row is left out, every good row of the batch is written."""
    import llmops

    ws = llmops.Workspace(tmp_path / "w", store_url=pg_url)
    with ws.start_run("pg") as run:
        pass
    now = time.time()
    refused = run_store.flush(
        ws.engine, run.id, params=[("k" * 300, "v"), ("good", "1"), ("nul", "a\x00b")],
        metrics=[("m", 1.0, 2**31, now), ("m", 2.0, 1, now)], tags={"t\x00": "x", "t": "y"}, edges=[],
        heartbeat=now)
    assert len(refused) == 4, refused
    info = ws.get_run(run.id)
    assert (info.params, info.tags, info.metrics) == ({"good": "1"}, {"t": "y"}, {"m": 2.0})
    ws.close()
