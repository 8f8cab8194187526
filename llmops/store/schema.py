"""Tables of the store: runs (params, metrics, tags, artifacts), asset versions, aliases and lineage edges.

Times are float epoch seconds (UTC): portable across SQLite and PostgreSQL and cheap to compare in filters.

Plain SQLAlchemy Core tables (the ORM costs a quarter of a second of imports and nothing here needs it).
Each table is reached through a small handle whose attributes are its columns, so queries read
`select(RunRow).where(RunRow.status == "running")`; `RunRow.__table__` is the Table itself.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()


class _Rows:
    """A table's columns as attributes; usable wherever SQLAlchemy takes the table (select, insert, update)."""

    def __init__(self, table: Table):
        self.__table__ = table

    def __getattr__(self, name: str) -> Column:
        try:
            return self.__table__.c[name]
        except KeyError:
            raise AttributeError(f"table {self.__table__.name!r} has no column {name!r}") from None

    def __clause_element__(self) -> Table:
        return self.__table__

    def __repr__(self) -> str:
        return f"<table {self.__table__.name}>"


class Base:
    """What Alembic compares the migrations against: `Base.metadata`."""

    metadata = metadata


def _req(name: str, type_, *args, **kw) -> Column:
    return Column(name, type_, *args, nullable=False, **kw)


def _opt(name: str, type_, *args, **kw) -> Column:
    return Column(name, type_, *args, nullable=True, **kw)


RunRow = _Rows(Table(
    "runs", metadata,
    _req("id", String(32), primary_key=True),
    _req("name", String(255), index=True),
    _req("kind", String(64), index=True),
    _req("status", String(16), index=True),
    _opt("parent_id", String(32), ForeignKey("runs.id"), index=True),
    _req("started_at", Float, index=True),
    _opt("ended_at", Float),
    _req("heartbeat_at", Float),
    _req("user", String(255)),
    _req("host", String(255)),
    _req("pid", Integer),
    _opt("error", Text),
))

ParamRow = _Rows(Table(
    "params", metadata,
    _req("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    _req("key", String(255), primary_key=True),
    _req("value", Text),
))

MetricRow = _Rows(Table(
    "metrics", metadata,
    _req("id", Integer, primary_key=True, autoincrement=True),
    _req("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE")),
    _req("key", String(255)),
    _req("value", Float),
    _req("step", Integer),
    _req("timestamp", Float),
    Index("ix_metrics_run_key_step", "run_id", "key", "step"),
))

TagRow = _Rows(Table(
    "tags", metadata,
    _req("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    _req("key", String(255), primary_key=True),
    _req("value", Text),
))

RunArtifactRow = _Rows(Table(
    "run_artifacts", metadata,
    _req("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    _req("name", String(1024), primary_key=True),
    _req("digest", String(64)),
    _req("size", Integer),
))

AssetVersionRow = _Rows(Table(
    "asset_versions", metadata,
    _req("id", Integer, primary_key=True, autoincrement=True),
    _req("kind", String(64)),
    _req("name", String(255)),
    _req("version", Integer),
    _req("digest", String(64)),
    _req("spec", Text),
    _req("files", Text),
    _opt("meta", Text),  # how it was made (timings, …): not part of the digest
    _opt("message", Text),
    _opt("parent", Integer),
    _opt("same_as", Integer),  # a revert: the earliest version with this content
    _req("created_at", Float),
    _req("created_by", String(255)),
    _opt("run_id", String(32), ForeignKey("runs.id")),
    UniqueConstraint("kind", "name", "version", name="uq_asset_version"),
    Index("ix_asset_digest", "kind", "name", "digest"),
))

AliasRow = _Rows(Table(
    "aliases", metadata,
    _req("kind", String(64), primary_key=True),
    _req("name", String(255), primary_key=True),
    _req("alias", String(64), primary_key=True),
    _req("version", Integer),
))

AliasEventRow = _Rows(Table(
    "alias_events", metadata,
    _req("id", Integer, primary_key=True, autoincrement=True),
    _req("kind", String(64)),
    _req("name", String(255)),
    _req("alias", String(64)),
    _opt("from_version", Integer),
    _req("to_version", Integer),
    _req("at", Float),
    _req("who", String(255)),
    _opt("reason", Text),
    _opt("run_id", String(32)),
    Index("ix_alias_events_asset", "kind", "name"),
))

# Lineage: `run used ref`, `run produced ref`, `ref derived_from ref`. Nodes are run ids or `kind/name@N` refs.
EdgeRow = _Rows(Table(
    "edges", metadata,
    _req("id", Integer, primary_key=True, autoincrement=True),
    _req("src", String(400), index=True),
    _req("relation", String(32)),
    _req("dst", String(400), index=True),
    _req("created_at", Float),
    UniqueConstraint("src", "relation", "dst", name="uq_edge"),
))

# Serving (migration 0004). Feedback on a served answer, stored against the request's run.
FeedbackRow = _Rows(Table(
    "feedback", metadata,
    _req("id", Integer, primary_key=True, autoincrement=True),
    _req("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), index=True),
    _req("score", Float),
    _opt("comment", Text),
    _opt("correction", Text),
    _req("created_at", Float),
    _req("user", String(255)),
))

# API keys of `llmops serve`: only the sha256 of a secret is kept; `prefix` shows which key it is.
# `scopes` is a JSON list of fnmatch patterns over model and chain names (`["*"]`: everything).
ApiKeyRow = _Rows(Table(
    "api_keys", metadata,
    _req("id", Integer, primary_key=True, autoincrement=True),
    _req("name", String(255), unique=True),
    _req("hash", String(64)),
    _req("prefix", String(32), index=True),
    _req("scopes", Text),
    _req("created_at", Float),
    _opt("revoked_at", Float),
))
