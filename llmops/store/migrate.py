"""Apply Alembic migrations on open, serialised across processes that open a blank store at once.

Opening a store that is already at the newest schema is one query and imports nothing of Alembic
(about 0.3 s of imports): the revision is read with plain SQL and the newest one is the highest
numbered file in `migrations/versions/` (revision ids are those numbers; a test checks it against
Alembic's own answer).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from llmops.store.engine import write

_HERE = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 7_305_311_001  # any constant: an advisory lock id private to llmops migrations


def _config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    return cfg


def head_revision() -> str:
    """The newest revision, from the file names alone (`0003_reverts.py` is revision "0003")."""
    return max(p.name.split("_", 1)[0] for p in (_HERE / "versions").glob("[0-9]*_*.py"))


def alembic_head_revision() -> str:
    """The newest revision as Alembic reads it from the scripts (slower; for tests)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The store's schema revision, or None for a blank store."""
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, "alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the store to `revision` (the newest schema); a no-op (one query) when it is already there."""
    if current_revision(engine) == (head_revision() if revision == "head" else revision):
        return
    from alembic import command

    with write(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        cfg = _config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
