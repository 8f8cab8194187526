"""The run-search filter grammar: semantics against real stores, and errors that point at the column."""

import pytest

from llmops.errors import FilterSyntaxError


@pytest.fixture
def runs(store_ws):
    made = {}
    for name, acc, lr, team, kind in [
        ("a", 0.91, "1e-3", "search", "eval"),
        ("b", 0.85, "3e-4", "search", "eval"),
        ("c", 0.60, "1e-3", "ads", "finetune"),
        ("d", None, "1e-2", "ads", "custom"),
    ]:
        with store_ws.start_run(name, kind=kind) as run:
            run.log_param("lr", lr)
            run.set_tag("team", team)
            if acc is not None:
                run.log_metric("acc", 0.1, step=0)
                run.log_metric("acc", acc, step=1)  # the latest step counts
        made[name] = run.id
    return made


def names(ws, f, **kw):
    return sorted(r.name for r in ws.search_runs(f, **kw))


@pytest.mark.parametrize("flt, expected", [
    ("metrics.acc > 0.8", ["a", "b"]),
    ("metrics.acc >= 0.85 AND params.lr = '1e-3'", ["a"]),
    ("metrics.acc < 0.7 OR tags.team = 'search'", ["a", "b", "c"]),
    ("NOT tags.team = 'ads'", ["a", "b"]),
    ("(tags.team = 'ads' OR metrics.acc > 0.9) AND NOT params.lr IN ('1e-2')", ["a", "c"]),
    ("params.lr IN ('1e-3', '3e-4')", ["a", "b", "c"]),
    ("params.lr NOT IN ('1e-3')", ["b", "d"]),
    ("tags.team LIKE 'se%'", ["a", "b"]),
    ("attributes.kind = 'eval'", ["a", "b"]),
    ("attributes.name != 'a' AND attributes.status = 'finished'", ["b", "c", "d"]),
    ("attributes.started_at > '2000-01-01'", ["a", "b", "c", "d"]),
    ("attributes.started_at < 946684800", []),
    ("params.missing = 'x'", []),
    ("", ["a", "b", "c", "d"]),
])
def test_filter_semantics(store_ws, runs, flt, expected):
    assert names(store_ws, flt) == expected


def test_order_and_limit(store_ws, runs):
    ordered = store_ws.search_runs("metrics.acc > 0", order_by="metrics.acc DESC")
    assert [r.name for r in ordered] == ["a", "b", "c"]
    assert [r.name for r in store_ws.search_runs(order_by=["attributes.name ASC"], limit=2)] == ["a", "b"]
    assert [r.name for r in store_ws.search_runs()][:1] == ["d"]  # newest first by default


def test_injection_is_just_a_value(store_ws, runs):
    assert names(store_ws, "tags.team = 'x'' OR 1=1 --'") == []
    assert names(store_ws, "tags.`team` = 'ads'") == ["c", "d"]


@pytest.mark.parametrize("flt, column, message", [
    ("metrics.acc >", 14, "expected a number or a quoted string"),
    ("metrics.acc > 'high'", 15, "compares with numbers"),
    ("acc > 1", 1, "expected metrics.KEY"),
    ("metrics.acc > 1 AND", 20, "expected metrics.KEY"),
    ("attributes.colour = 'red'", 12, "unknown attribute 'colour'"),
    ("(metrics.acc > 1", 17, "expected ')'"),
    ("metrics.acc > 1 tags.a = 'b'", 17, "expected AND, OR"),
    ("params.lr = 'x' ; DROP TABLE runs", 17, "unexpected character ';'"),
    ("metrics.acc LIKE 'a%'", 18, "LIKE takes a quoted pattern"),
])
def test_syntax_errors_point_at_column(store_ws, flt, column, message):
    with pytest.raises(FilterSyntaxError) as info:
        store_ws.search_runs(flt)
    assert info.value.column == column
    assert message in str(info.value)
    assert str(info.value).splitlines()[-1].index("^") == column - 1 + 2  # two spaces of indent


@pytest.mark.parametrize("flt, column, message", [
    ("(" * 60 + "metrics.acc > 1" + ")" * 60, 51, "nests more than 50 parentheses or NOTs"),
    ("NOT " * 300 + "metrics.acc > 1", 201, "nests more than 50"),
    (" OR ".join(["metrics.acc > 1"] * 201), 200 * 19 + 1, "more than 200 comparisons"),
    ("params.lr IN (" + ", ".join(["'x'"] * 1001) + ")", 14 + 1000 * 5 + 1, "at most 1000 values"),
    ("metrics.acc > 99999999999999999999" + "9" * 400, 15, "is out of range"),
    ("metrics.acc > -1e400", 15, "is out of range"),
    ("attributes.started_at > 1e999", 25, "is out of range"),
    ("metrics.acc > " + "9" * 5000, 15, "is out of range"),
    ("params.x = 'a'" + " " * 10_000, 10_001, "longer than 10000 characters"),
])
def test_hostile_filters_are_refused_at_a_column(store_ws, flt, column, message):
    with pytest.raises(FilterSyntaxError) as info:
        store_ws.search_runs(flt)
    assert info.value.column == column and message in str(info.value)


def test_big_numbers_in_range_still_work(store_ws, runs):
    assert names(store_ws, "metrics.acc < 99999999999999999999") == ["a", "b", "c"]
    assert names(store_ws, "params.lr != 99999999999999999999") == ["a", "b", "c", "d"]
    assert names(store_ws, " OR ".join(["tags.team = 'ads'"] * 200)) == ["c", "d"]
    assert names(store_ws, "(" * 50 + "tags.team = 'ads'" + ")" * 50) == ["c", "d"]


@pytest.mark.parametrize("limit", [0, -1, 2**31, 99999999999999999999, True, 1.5, "3"])
def test_limit_out_of_range_is_refused(store_ws, limit):
    from llmops.errors import InvalidValue

    with pytest.raises(InvalidValue, match="give a whole number 1..2147483647"):
        store_ws.search_runs(limit=limit)
