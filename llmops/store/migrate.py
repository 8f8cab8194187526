"""Apply Alembic migrations on open, serialised across processes that open a blank store at once."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from llmops.store.engine import write

_HERE = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 7_305_311_001  # any constant: an advisory lock id private to llmops migrations


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the store to `revision` (the newest schema); a no-op (one query) when it is already there."""
    if current_revision(engine) == (head_revision() if revision == "head" else revision):
        return
    with write(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        cfg = _config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
