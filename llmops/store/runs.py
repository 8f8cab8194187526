"""Reading and writing runs: creation, batched flushes of params/metrics/tags, finishing, lookup, search."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from llmops.errors import ParamConflict, RunNotFound
from llmops.store import search
from llmops.store.engine import read, write
from llmops.store.lineage import add_edges
from llmops.store.schema import MetricRow, ParamRow, RunArtifactRow, RunRow, TagRow

HOST = socket.gethostname()


@dataclass(frozen=True)
class MetricPoint:
    step: int
    value: float
    timestamp: float


@dataclass(frozen=True)
class RunInfo:
    """A snapshot of one run as stored. `status` is what was recorded; `state` adds `lost`."""

    id: str
    name: str
    kind: str
    status: str
    parent_id: str | None
    started_at: datetime
    ended_at: datetime | None
    heartbeat_at: datetime
    user: str
    host: str
    pid: int
    error: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: dict[str, str]
    lost: bool
    _history: Callable[[str], list[MetricPoint]] = field(repr=False, compare=False)

    @property
    def state(self) -> str:
        """`lost` for a run still marked running whose process is gone or whose heartbeat went stale."""
        return "lost" if self.lost else self.status

    def metric_history(self, key: str) -> list[MetricPoint]:
        return self._history(key)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "name": self.name, "kind": self.kind, "status": self.state,
            "parent_id": self.parent_id, "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "user": self.user, "host": self.host, "error": self.error,
            "params": self.params, "metrics": self.metrics, "tags": self.tags, "artifacts": self.artifacts,
        }


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_lost(row, now: float, lost_after: float) -> bool:
    if row.status != "running":
        return False
    if now - row.heartbeat_at > lost_after:
        return True
    return row.host == HOST and row.pid != os.getpid() and not _pid_alive(row.pid)


def create(engine: Engine, *, run_id: str, name: str, kind: str, parent_id: str | None, user: str, now: float) -> None:
    with write(engine) as conn:
        conn.execute(insert(RunRow).values(
            id=run_id, name=name, kind=kind, status="running", parent_id=parent_id, started_at=now,
            ended_at=None, heartbeat_at=now, user=user, host=HOST, pid=os.getpid(), error=None,
        ))


def _upsert(conn, table, rows: list[dict], keys: list[str], update_cols: list[str]) -> None:
    dialect = conn.dialect.name
    mod = postgresql if dialect == "postgresql" else sqlite
    stmt = mod.insert(table)
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update_cols})
    conn.execute(stmt, rows)


def flush(engine: Engine, run_id: str, *, params: list[tuple[str, str]], metrics: list[tuple[str, float, int, float]],
          tags: dict[str, str], edges: list[tuple[str, str, str]], heartbeat: float,
          finish: tuple[str, str | None] | None = None) -> None:
    """Write one batch in one transaction. Params are write-once: a clash with a stored value raises ParamConflict.

    `finish=(status, error)` also ends the run, in the same transaction (one commit per short run's end).
    """
    with write(engine) as conn:
        if params:
            try:
                with conn.begin_nested():
                    conn.execute(insert(ParamRow), [{"run_id": run_id, "key": k, "value": v} for k, v in params])
            except IntegrityError:
                _insert_params_checked(conn, run_id, params)
        if metrics:
            conn.execute(insert(MetricRow), [
                {"run_id": run_id, "key": k, "value": v, "step": s, "timestamp": t} for k, v, s, t in metrics
            ])
        if tags:
            _upsert(conn, TagRow, [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()],
                    ["run_id", "key"], ["value"])
        if edges:
            add_edges(conn, edges, heartbeat)
        if finish is not None:
            conn.execute(update(RunRow).where(RunRow.id == run_id).values(
                status=finish[0], error=finish[1], ended_at=heartbeat, heartbeat_at=heartbeat))
        else:
            conn.execute(update(RunRow).where(RunRow.id == run_id).values(heartbeat_at=heartbeat))


def _insert_params_checked(conn, run_id: str, params: list[tuple[str, str]]) -> None:
    stored = dict(conn.execute(select(ParamRow.key, ParamRow.value).where(
        ParamRow.run_id == run_id, ParamRow.key.in_([k for k, _ in params]))).all())
    for key, value in params:
        if key in stored and stored[key] != value:
            raise ParamConflict(
                f"param {key!r} of run {run_id} is already {stored[key]!r}; params are write-once, "
                f"so {value!r} was not stored (log it as a metric or a tag if it changes)"
            )
    fresh = [{"run_id": run_id, "key": k, "value": v} for k, v in params if k not in stored]
    if fresh:
        conn.execute(insert(ParamRow), fresh)


def add_artifact(engine: Engine, run_id: str, name: str, digest: str, size: int) -> None:
    with write(engine) as conn:
        _upsert(conn, RunArtifactRow, [{"run_id": run_id, "name": name, "digest": digest, "size": size}],
                ["run_id", "name"], ["digest", "size"])


def finish(engine: Engine, run_id: str, *, status: str, error: str | None, now: float) -> None:
    with write(engine) as conn:
        conn.execute(update(RunRow).where(RunRow.id == run_id).values(
            status=status, error=error, ended_at=now, heartbeat_at=now))


def _latest_metrics(conn, run_ids: list[str]) -> dict[str, dict[str, float]]:
    ranked = select(
        MetricRow.run_id, MetricRow.key, MetricRow.value,
        func.row_number().over(
            partition_by=(MetricRow.run_id, MetricRow.key),
            order_by=(MetricRow.step.desc(), MetricRow.timestamp.desc(), MetricRow.id.desc()),
        ).label("rn"),
    ).where(MetricRow.run_id.in_(run_ids)).subquery()
    out: dict[str, dict[str, float]] = {rid: {} for rid in run_ids}
    for rid, key, value in conn.execute(select(ranked.c.run_id, ranked.c.key, ranked.c.value).where(ranked.c.rn == 1)):
        out[rid][key] = value
    return out


def load(engine: Engine, rows: Iterable, lost_after: float, now: float) -> list[RunInfo]:
    rows = list(rows)
    ids = [r.id for r in rows]
    if not ids:
        return []
    with read(engine) as conn:
        metrics = _latest_metrics(conn, ids)
        params = {rid: {} for rid in ids}
        for rid, k, v in conn.execute(select(ParamRow.run_id, ParamRow.key, ParamRow.value).where(ParamRow.run_id.in_(ids))):
            params[rid][k] = v
        tags = {rid: {} for rid in ids}
        for rid, k, v in conn.execute(select(TagRow.run_id, TagRow.key, TagRow.value).where(TagRow.run_id.in_(ids))):
            tags[rid][k] = v
        arts = {rid: {} for rid in ids}
        for rid, k, v in conn.execute(
                select(RunArtifactRow.run_id, RunArtifactRow.name, RunArtifactRow.digest).where(RunArtifactRow.run_id.in_(ids))):
            arts[rid][k] = v

    def history_of(run_id: str) -> Callable[[str], list[MetricPoint]]:
        return lambda key: metric_history(engine, run_id, key)

    return [
        RunInfo(
            id=r.id, name=r.name, kind=r.kind, status=r.status, parent_id=r.parent_id,
            started_at=_dt(r.started_at), ended_at=_dt(r.ended_at), heartbeat_at=_dt(r.heartbeat_at),
            user=r.user, host=r.host, pid=r.pid, error=r.error,
            params=params[r.id], metrics=metrics[r.id], tags=tags[r.id], artifacts=arts[r.id],
            lost=is_lost(r, now, lost_after), _history=history_of(r.id),
        )
        for r in rows
    ]


def get(engine: Engine, run_id: str, lost_after: float, now: float) -> RunInfo:
    """One run by id, or by a unique prefix of at least 6 characters (as `git` does)."""
    with read(engine) as conn:
        rows = conn.execute(select(RunRow).where(RunRow.id == run_id)).all()
        if not rows and len(run_id) >= 6:
            rows = conn.execute(select(RunRow).where(RunRow.id.like(f"{run_id}%")).limit(2)).all()
    if len(rows) != 1:
        raise RunNotFound(f"no run with id {run_id!r}; list runs with `llmops runs list`")
    return load(engine, rows, lost_after, now)[0]


def metric_history(engine: Engine, run_id: str, key: str) -> list[MetricPoint]:
    with read(engine) as conn:
        rows = conn.execute(
            select(MetricRow.step, MetricRow.value, MetricRow.timestamp)
            .where(MetricRow.run_id == run_id, MetricRow.key == key)
            .order_by(MetricRow.step, MetricRow.timestamp, MetricRow.id)
        ).all()
    return [MetricPoint(step=s, value=v, timestamp=t) for s, v, t in rows]


def search_runs(engine: Engine, filter: str | None, order_by, limit: int | None, lost_after: float, now: float) -> list[RunInfo]:
    where = search.compile_filter(filter)
    stmt = select(RunRow)
    if where is not None:
        stmt = stmt.where(where)
    stmt = stmt.order_by(*search.compile_order(order_by))
    if limit is not None:
        stmt = stmt.limit(int(limit))
    with read(engine) as conn:
        rows = conn.execute(stmt).all()
    return load(engine, rows, lost_after, now)
