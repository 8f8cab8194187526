"""Where a workspace lives: any folder name, nothing created by reading, read-only workspaces readable."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import llmops
from llmops.errors import ConfigError


@pytest.mark.parametrize("name", ["q?mark", "h#ash", "p%41", "sp ace", "a?b=c&d#e%20f"])
def test_store_stays_inside_a_folder_with_url_characters(tmp_path, name):
    ws = llmops.Workspace(tmp_path / name)
    ws.registry.push("prompt", "qa", {"t": 1})
    ws.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing created beside it (no `q`, no `pA`)
    assert (tmp_path / name / ".llmops" / "store.db").is_file()
    again = llmops.Workspace(tmp_path / name, create=False)
    assert again.registry.get("prompt/qa").version == 1
    again.close()


def test_reading_a_missing_workspace_creates_nothing(tmp_path):
    target = tmp_path / "typo" / "path"
    with pytest.raises(ConfigError, match=f"no llmops workspace at {target}"):
        llmops.Workspace(target, create=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no llmops workspace at"):
        llmops.Workspace(tmp_path / "empty", create=False)
    assert list((tmp_path / "empty").iterdir()) == []


def test_reading_a_blank_postgres_store_is_an_error(tmp_path, pg_url):
    with pytest.raises(ConfigError, match="no llmops store at"):
        llmops.Workspace(tmp_path / "w", store_url=pg_url, create=False)
    assert not (tmp_path / "w").exists()
    llmops.Workspace(tmp_path / "w", store_url=pg_url).close()
    llmops.Workspace(tmp_path / "elsewhere", store_url=pg_url, create=False).close()  # a shared store: fine


def test_workspace_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="a part of that path is a file"):
        llmops.Workspace(tmp_path / "afile" / "sub")
    assert (tmp_path / "afile").read_text() == "x"


# read-only workspaces ------------------------------------------------------------------
# Root writes through any mode bits, so as root the reader runs as `nobody` (setpriv); as another user
# the folder is simply made read-only.
READER = textwrap.dedent("""
    import json, sys, llmops
    from llmops.errors import ConfigError
    ws = llmops.Workspace(sys.argv[1], create=False)
    out = {"read_only": ws.read_only, "runs": [r.to_dict()["metrics"] for r in ws.search_runs()],
           "asset": ws.registry.get("prompt/qa@production").version}
    try:
        with ws.start_run("nope"):
            pass
    except ConfigError as exc:
        out["write"] = str(exc)
    try:
        llmops.Workspace(sys.argv[2])
    except ConfigError as exc:
        out["init"] = str(exc)
    print(json.dumps(out))
""")


@pytest.fixture
def shared_dir():
    """A folder another user can traverse (pytest's own tmp folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="llmops-ro-"))
    path.chmod(0o755)
    yield path
    for p in [path, *path.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(path)


def _as_reader(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop write access")
        prefix = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    return subprocess.run(prefix + args, capture_output=True, text=True, env=env, cwd="/tmp", timeout=120)


def test_a_read_only_workspace_can_be_read_not_written(shared_dir):
    root = shared_dir / "w"
    ws = llmops.Workspace(root)
    ws.registry.push("prompt", "qa", {"t": 1})
    ws.registry.set_alias("prompt/qa", "production", 1)
    with ws.start_run("train") as run:
        run.log_metric("loss", float("inf"))
    ws.close()
    for p in [shared_dir, root, root / ".llmops", *(root / ".llmops").rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    before = sorted(str(p) for p in root.rglob("*"))

    r = _as_reader([sys.executable, "-c", READER, str(root), str(shared_dir / "new")])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["read_only"] is True
    assert out["runs"] == [{"loss": float("inf")}] and out["asset"] == 1
    assert "is read-only" in out["write"] and "nothing was changed" in out["write"]
    assert "cannot create the workspace folder" in out["init"] and "Permission denied" in out["init"]
    assert sorted(str(p) for p in root.rglob("*")) == before  # no -wal, -shm or journal left behind

    cli = _as_reader([sys.executable, "-m", "llmops.cli", "-w", str(root), "runs", "list", "--json"])
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)[0]["metrics"] == {"loss": "Infinity"}
    init = _as_reader([sys.executable, "-m", "llmops.cli", "-w", str(shared_dir / "new"), "init"])
    assert init.returncode == 2 and init.stderr.count("\n") == 1 and init.stderr.startswith("error: ")
    assert "Traceback" not in init.stderr
