"""Engines for the store: SQLite (WAL, busy timeout, IMMEDIATE write transactions) or PostgreSQL.

SQLite returns "database is locked" at once, without waiting, when a reader upgrades to a writer while
another process writes. Write transactions therefore start with BEGIN IMMEDIATE, which takes the write
lock up front and lets the busy timeout queue writers instead of failing them.

A SQLite store the process cannot write (a read-only folder or file, another user's workspace) is
opened read-only: a WAL database needs its `-shm` file, which cannot be created in a read-only
folder, so such a store is opened `immutable` (nobody can be writing it). Writes then fail with a
ConfigError that says so.

SQLite URLs are built with `URL.create`, never by formatting a path into a string: a path holding
`?`, `#` or `%41` would otherwise be read as a query string or an escape.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from llmops.errors import ConfigError

BUSY_TIMEOUT_MS = 60_000
_WRITE = "llmops_write"


def sqlite_url(path: Path) -> URL:
    """The URL of the SQLite file at `path`, whatever characters the path holds."""
    return URL.create("sqlite", database=str(path))


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a SQLite store URL (None for PostgreSQL, an in-memory SQLite or a malformed URL)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def is_read_only(path: Path) -> bool:
    """Whether this process cannot write the SQLite file at `path` (or the folder that holds it)."""
    return (path.exists() and not os.access(path, os.W_OK)) or not os.access(path.parent, os.W_OK)


def make_engine(url: str | URL, *, read_only: bool = False) -> Engine:
    """Build an engine for `url`, refusing anything that is not SQLite or PostgreSQL.

    `read_only` opens a SQLite store without writing anything to its folder (see the module doc).
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"store URL {url!r} is not a database URL: use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST:PORT/DB (LLMOPS_STORE_URL)"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, read_only)
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "psycopg2"):
            raise ConfigError(f"store URL {url!r}: use the psycopg driver, postgresql+psycopg://...")
        return create_engine(parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True, future=True)
    raise ConfigError(
        f"store URL {url!r} names backend {backend!r}; llmops stores runs in SQLite or PostgreSQL "
        "(sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB)"
    )


def _connect_read_only(path: str):
    """A read-only connection; `immutable` when the WAL's shared-memory file cannot be made."""
    base = f"file:{urllib.parse.quote(path)}"
    conn = sqlite3.connect(f"{base}?mode=ro", uri=True, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        return sqlite3.connect(f"{base}?mode=ro&immutable=1", uri=True, check_same_thread=False)


def _sqlite_engine(url: URL, read_only: bool) -> Engine:
    if read_only and url.database not in (None, "", ":memory:"):
        engine = create_engine(url, creator=lambda: _connect_read_only(url.database))
    else:
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        if not read_only:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any error.

    A store opened read-only raises ConfigError rather than a driver error.
    """
    try:
        with engine.connect().execution_options(**{_WRITE: True}) as conn, conn.begin():
            yield conn
    except OperationalError as exc:
        if "readonly" not in str(exc.orig).replace("read-only", "readonly"):
            raise
        raise ConfigError(f"the store at {engine.url.render_as_string(hide_password=True)} is read-only "
                          "(this process cannot write its folder or file); nothing was changed") from None


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


def default_url(home: Path) -> str | URL:
    return os.environ.get("LLMOPS_STORE_URL") or sqlite_url(home / "store.db")
