"""`llmops init`, `runs`, `assets` and `lineage`, in process through `llmops.cli.run` (what the installed
command calls); one subprocess test checks the real exit status and stderr."""

import json
import subprocess
import sys

import pytest
from sqlalchemy import insert

import llmops
from llmops.cli import run

HUGE = "99999999999999999999"


def _strict(text: str):
    """Parse JSON as a strict parser would: no Infinity or NaN literals."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def cli(capsys, tmp_path):
    root = tmp_path / "w"

    def call(*args: str, code: int = 0) -> str:
        capsys.readouterr()
        got = run(["-w", str(root), *args])
        out, err = capsys.readouterr()
        assert got == code, (args, got, out, err)
        if code == 2:
            assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
            return err
        return out

    call.root = root
    return call


def test_init_runs_assets_lineage(cli):
    assert "workspace ready" in cli("init")
    ws = llmops.Workspace(cli.root)
    ws.registry.push("prompt", "qa", {"t": 1})
    with ws.start_run("eval-1", kind="eval") as run_:
        ws.registry.get("prompt/qa@1")
        run_.log_metric("acc", 0.8)
    ws.close()

    listed = _strict(cli("runs", "list", "--json"))
    assert [(r["name"], r["status"], r["metrics"]) for r in listed] == [("eval-1", "finished", {"acc": 0.8})]
    assert [r["id"] for r in _strict(cli("runs", "search", "metrics.acc > 0.5", "--json"))] == [run_.id]
    assert _strict(cli("runs", "search", "metrics.acc > 0.9", "--json")) == []
    assert _strict(cli("runs", "show", run_.id[:8]))["id"] == run_.id
    assert "eval-1" in cli("runs", "list")

    assert cli("assets", "alias", "prompt/qa", "production", "1", "-r", "launch").strip() == "prompt/qa@production -> 1"
    assert _strict(cli("assets", "show", "prompt/qa@production"))["ref"] == "prompt/qa@1"
    history = _strict(cli("assets", "history", "prompt/qa", "--json"))
    assert [e["event"] for e in history] == ["version", "alias"]
    assert "alias production: - -> 1" in cli("assets", "history", "prompt/qa")
    assert [a["ref"] for a in _strict(cli("assets", "list", "--json"))] == ["prompt/qa@1"]
    assert "prompt/qa@1" in cli("assets", "list", "--kind", "prompt")

    assert "used prompt/qa@1" in cli("lineage", run_.id[:10])
    assert _strict(cli("lineage", run_.id, "--depth", "0", "--json"))["root"] == run_.id


def test_non_finite_metrics_are_strict_json(cli):
    cli("init")
    ws = llmops.Workspace(cli.root)
    with ws.start_run("diverged") as run_:
        run_.log_metric("loss", float("inf"))
        run_.log_metric("floor", float("-inf"))
    ws.close()
    for args in (["runs", "list", "--json"], ["runs", "search", "metrics.loss > 0", "--json"]):
        assert _strict(cli(*args))[0]["metrics"] == {"loss": "Infinity", "floor": "-Infinity"}
    assert _strict(cli("runs", "show", run_.id))["metrics"] == {"loss": "Infinity", "floor": "-Infinity"}


def test_an_old_bytes_key_does_not_break_listings(cli):
    """Older releases let SQLite store a bytes key; every listing that includes the run must still work."""
    from llmops.store.schema import ParamRow, TagRow

    cli("init")
    ws = llmops.Workspace(cli.root)
    with ws.start_run("[bold]old[/]\x1b[2J") as run_:  # markup and terminal escapes in a name are text
        run_.log_metric("acc", 0.5)
    with ws.engine.begin() as conn:
        conn.execute(insert(ParamRow).values(run_id=run_.id, key=b"\xffraw", value=b"v"))
        conn.execute(insert(TagRow).values(run_id=run_.id, key=b"t", value="x"))
    ws.close()
    assert _strict(cli("runs", "list", "--json"))[0]["params"] == {"\\xffraw": "v"}
    assert _strict(cli("runs", "search", "metrics.acc > 0", "--json"))[0]["tags"] == {"t": "x"}
    assert _strict(cli("runs", "show", run_.id))["params"] == {"\\xffraw": "v"}
    for out in (cli("runs", "list"), cli("lineage", run_.id)):
        assert "[bold]" in out and "\x1b" not in out, out


@pytest.mark.parametrize("args, named", [
    (["runs", "search", "metrics.acc >"], "column 14"),
    (["runs", "search", ""], "the filter is empty"),
    (["runs", "search", "(" * 300 + "metrics.acc > 0" + ")" * 300], "nests more than"),
    (["runs", "search", f"metrics.acc > {HUGE}e400"], "out of range"),
    (["runs", "list", "--limit", HUGE], "--limit"),
    (["runs", "list", "--limit", "0"], "--limit 0 is out of range"),
    (["runs", "search", "metrics.acc > 0", "--limit", "-1"], "--limit -1"),
    (["runs", "show", "______"], "no run with id '______'"),
    (["assets", "show", "prompt/missing"], "no asset version 'prompt/missing'"),
    (["assets", "show", f"prompt/qa@{HUGE}"], HUGE),
    (["assets", "alias", "prompt/missing", "latest", "1"], "alias 'latest' is not allowed"),
    (["assets", "alias", "prompt/qa", "production", "-1"], "version '-1' is not a version number"),
    (["assets", "alias", "prompt/qa", "production", HUGE], HUGE),
    (["assets", "alias", "prompt/qa", "production", "²"], "'²'"),
    (["assets", "list", "--kind", "Bad Kind"], "asset kind 'Bad Kind' is not allowed"),
    (["lineage", "nosuchrun"], "no run with id 'nosuchrun'"),
    (["lineage", "nosuchrun", "--depth", "-1"], "--depth -1"),
])
def test_bad_arguments_are_one_error_line(cli, args, named):
    cli("init")
    llmops.Workspace(cli.root).registry.push("prompt", "qa", {"t": 1})
    err = cli(*args, code=2)
    assert named in err, err
    if "alias" in args:
        assert llmops.Workspace(cli.root).registry.aliases("prompt/qa") == {}


def test_reading_commands_do_not_create_a_workspace(cli, tmp_path):
    for args in (["runs", "list"], ["runs", "show", "abcdef"], ["assets", "list"], ["lineage", "abcdef"],
                 ["assets", "alias", "prompt/qa", "production", "1"]):
        assert "no llmops workspace at" in cli(*args, code=2)
    assert list(tmp_path.iterdir()) == []


def test_bad_store_url_from_env(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMOPS_STORE_URL", "redis://127.0.0.1:6379/0")
    assert "names backend 'redis'" in cli("init", code=2)
    assert not cli.root.exists()


def test_real_process_exit_status_and_stderr(tmp_path):
    root = tmp_path / "w"
    r = subprocess.run([sys.executable, "-m", "llmops.cli", "-w", str(root), "init"], capture_output=True, text=True)
    assert r.returncode == 0 and (root / ".llmops" / "store.db").exists(), r.stderr
    r = subprocess.run([sys.executable, "-m", "llmops.cli", "-w", str(root), "runs", "search", "metrics.acc >"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "column 14" in r.stderr
