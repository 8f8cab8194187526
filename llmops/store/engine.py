"""Engines for the store: SQLite (WAL, busy timeout, IMMEDIATE write transactions) or PostgreSQL.

SQLite returns "database is locked" at once, without waiting, when a reader upgrades to a writer while
another process writes. Write transactions therefore start with BEGIN IMMEDIATE, which takes the write
lock up front and lets the busy timeout queue writers instead of failing them.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from llmops.errors import ConfigError

BUSY_TIMEOUT_MS = 60_000
_WRITE = "llmops_write"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def make_engine(url: str) -> Engine:
    """Build an engine for `url`, refusing anything that is not SQLite or PostgreSQL."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"store URL {url!r} is not a database URL: use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST:PORT/DB (LLMOPS_STORE_URL)"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "psycopg2"):
            raise ConfigError(f"store URL {url!r}: use the psycopg driver, postgresql+psycopg://...")
        return create_engine(parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True, future=True)
    raise ConfigError(
        f"store URL {url!r} names backend {backend!r}; llmops stores runs in SQLite or PostgreSQL "
        "(sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB)"
    )


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any error."""
    with engine.connect().execution_options(**{_WRITE: True}) as conn, conn.begin():
        yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


def default_url(home: Path) -> str:
    return os.environ.get("LLMOPS_STORE_URL") or sqlite_url(home / "store.db")
