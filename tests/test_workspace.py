"""Opening a workspace: migrations on a blank store, bad store URLs that change nothing, the public API."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

import llmops
from llmops.errors import ConfigError
from llmops.store import migrate
from llmops.store.schema import Base


def test_public_api_is_exactly_this():
    assert llmops.__all__ == sorted(llmops.__all__)
    assert llmops.__all__ == ["AssetVersion", "LLMOpsError", "Workspace"]


def test_blank_store_is_migrated_to_head_and_matches_models(store_ws):
    assert migrate.current_revision(store_ws.engine) == migrate.head_revision()
    with store_ws.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    cols = {c["name"] for c in inspect(store_ws.engine).get_columns("runs")}
    assert cols == {"id", "name", "kind", "status", "parent_id", "started_at", "ended_at", "heartbeat_at",
                    "user", "host", "pid", "error"}


def test_old_store_is_upgraded_on_open_and_keeps_its_rows(tmp_path, store_url):
    from sqlalchemy import text

    from llmops.store.engine import make_engine, sqlite_url

    home = tmp_path / "w" / ".llmops"
    home.mkdir(parents=True)
    url = store_url or sqlite_url(home / "store.db")
    engine = make_engine(url)
    migrate.upgrade(engine, "0001")  # a store written by the first release
    with engine.begin() as conn:
        assert "meta" not in {c["name"] for c in inspect(conn).get_columns("asset_versions")}
        conn.execute(text(
            "INSERT INTO asset_versions (kind, name, version, digest, spec, files, message, parent, created_at, "
            "created_by, run_id) VALUES ('prompt', 'qa', 1, :d, '{\"t\": 1}', '{}', 'old', NULL, 0, 'me', NULL)"),
            {"d": "a" * 64})
    engine.dispose()
    ws = llmops.Workspace(tmp_path / "w", store_url=store_url)
    assert migrate.current_revision(ws.engine) == migrate.head_revision() == "0004"
    cols = [c["name"] for c in inspect(ws.engine).get_columns("asset_versions")]
    assert cols == ["id", "kind", "name", "version", "digest", "spec", "files", "message", "parent", "created_at",
                    "created_by", "run_id", "meta", "same_as"]
    old = ws.registry.get("prompt/qa@1")
    assert (old.spec, old.message, old.meta) == ({"t": 1}, "old", {})
    new = ws.registry.push("prompt", "qa", {"t": 2}, meta={"seconds": 1.5})
    assert (new.version, new.meta) == (2, {"seconds": 1.5})
    ws.close()


def test_meta_is_kept_but_not_digested(store_ws):
    a = store_ws.registry.push("index", "h", {"dim": 3}, meta={"seconds": 1.0})
    b = store_ws.registry.push("index", "h", {"dim": 3}, meta={"seconds": 9.0})
    assert a == b and b.meta == {"seconds": 1.0}  # same content: the existing version, first meta kept


def test_reopen_keeps_data(tmp_path, store_url):
    ws = llmops.Workspace(tmp_path / "w", store_url=store_url)
    v = ws.registry.push("prompt", "qa", {"t": 1})
    ws.close()
    ws2 = llmops.Workspace(tmp_path / "w", store_url=store_url)
    assert ws2.registry.get("prompt/qa@1") == v
    ws2.close()


def test_sqlite_store_is_in_wal_mode(ws):
    with ws.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@pytest.mark.parametrize("url, message", [
    ("not a url", "is not a database URL"),
    ("redis://localhost:6379/0", "names backend 'redis'"),
    ("mysql+pymysql://root@127.0.0.1/test", "names backend 'mysql'"),
    ("http://example.invalid/store", "names backend 'http'"),
])
def test_non_database_store_url_is_refused_and_writes_nothing(tmp_path, monkeypatch, url, message):
    target = tmp_path / "w"
    monkeypatch.setenv("LLMOPS_STORE_URL", url)
    with pytest.raises(ConfigError, match=message):
        llmops.Workspace(target)
    assert not target.exists()


def test_unreachable_postgres_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot open the store"):
        llmops.Workspace(tmp_path / "w", store_url="postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")


def test_workspace_path_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        llmops.Workspace(f)


def test_head_revision_from_file_names_is_alembics():
    assert migrate.head_revision() == migrate.alembic_head_revision()


def test_opening_a_store_at_head_imports_no_alembic_and_no_orm(tmp_path):
    import subprocess
    import sys

    llmops.Workspace(tmp_path / "w").close()
    code = ("import sys, llmops.workspace as w; ws = w.Workspace(sys.argv[1], create=False); ws.search_runs(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic' or m.startswith('sqlalchemy.orm')))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w")], capture_output=True, text=True)
    assert (r.returncode, r.stdout.strip()) == (0, "[]"), r.stderr
