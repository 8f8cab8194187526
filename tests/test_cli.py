"""The `llmops` command end to end, in a subprocess, as a user runs it."""

import json
import subprocess
import sys

import llmops


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "llmops.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_init_runs_assets_lineage(tmp_path):
    root = tmp_path / "w"
    r = cli("-w", str(root), "init")
    assert r.returncode == 0 and (root / ".llmops" / "store.db").exists()
    ws = llmops.Workspace(root)
    ws.registry.push("prompt", "qa", {"t": 1})
    with ws.start_run("eval-1", kind="eval") as run:
        ws.registry.get("prompt/qa@1")
        run.log_metric("acc", 0.8)
    ws.close()

    listed = json.loads(cli("-w", str(root), "runs", "list", "--json").stdout)
    assert [(r["name"], r["status"], r["metrics"]) for r in listed] == [("eval-1", "finished", {"acc": 0.8})]
    found = json.loads(cli("-w", str(root), "runs", "search", "metrics.acc > 0.5", "--json").stdout)
    assert [r["id"] for r in found] == [run.id]
    assert json.loads(cli("-w", str(root), "runs", "search", "metrics.acc > 0.9", "--json").stdout) == []

    assert cli("-w", str(root), "assets", "alias", "prompt/qa", "production", "1", "-r", "launch").returncode == 0
    shown = json.loads(cli("-w", str(root), "assets", "show", "prompt/qa@production").stdout)
    assert shown["ref"] == "prompt/qa@1"
    history = json.loads(cli("-w", str(root), "assets", "history", "prompt/qa", "--json").stdout)
    assert [e["event"] for e in history] == ["version", "alias"]
    assets = json.loads(cli("-w", str(root), "assets", "list", "--json").stdout)
    assert [a["ref"] for a in assets] == ["prompt/qa@1"]

    tree = cli("-w", str(root), "lineage", run.id[:10])
    assert tree.returncode == 0
    assert "used prompt/qa@1" in tree.stdout


def test_errors_are_one_line_exit_2(tmp_path):
    root = tmp_path / "w"
    cli("-w", str(root), "init")
    for args, text in [
        (("runs", "search", "metrics.acc >"), "column 14"),
        (("assets", "show", "prompt/missing"), "no asset version 'prompt/missing'"),
        (("assets", "alias", "prompt/missing", "latest", "1"), "alias 'latest' is not allowed"),
        (("lineage", "nosuchrun"), "no run with id 'nosuchrun'"),
    ]:
        r = cli("-w", str(root), *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("error: ") and text in r.stderr
        assert "Traceback" not in r.stderr


def test_bad_store_url_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_STORE_URL", "redis://127.0.0.1:6379/0")
    r = cli("-w", str(tmp_path / "w"), "init")
    assert r.returncode == 2 and "names backend 'redis'" in r.stderr
    assert not (tmp_path / "w").exists()
