"""Reading and writing runs: creation, batched flushes of params/metrics/tags, finishing, lookup, search."""

from __future__ import annotations

import logging
import os
import socket
from numbers import Integral
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError

from llmops.errors import InvalidValue, LLMOpsError, ParamConflict, RunNotFound
from llmops.store import search
from llmops.store.engine import read, write
from llmops.store.lineage import add_edges
from llmops.store.schema import MetricRow, ParamRow, RunArtifactRow, RunRow, TagRow

log = logging.getLogger(__name__)
MIN_PREFIX = 6
MAX_LIMIT = 2**31 - 1
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


def _clip(text: object) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "...'"


def _text(value) -> str:
    """Keys and values as text: older releases let SQLite store bytes, which no reader can print."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    return value if isinstance(value, str) else str(value)


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
          finish: tuple[str, str | None] | None = None) -> list[str]:
    """Write one batch in one transaction; returns a description of each row the database refused.

    Rows are checked when they are logged (llmops.store.values), so a refusal here is a last line of
    defence: the batch is retried row by row, each in a savepoint, and only the refused rows are left
    out (and logged), never the batch. A store that is down or locked (OperationalError) fails the whole
    flush instead, so the caller keeps its buffer and tries again. Params are write-once: a param whose
    stored value differs is one of the refused rows. `finish=(status, error)` also ends the run, in the
    same transaction (one commit per short run's end).
    """
    rows = _batch_rows(run_id, params, metrics, tags, edges)
    refused: list[str] = []
    with write(engine) as conn:
        try:
            with conn.begin_nested():
                for write_row in _batch_writers(conn, rows, heartbeat):
                    write_row()
        except OperationalError:
            raise
        except Exception:
            refused = _write_row_by_row(conn, run_id, rows, heartbeat)
        values = {"heartbeat_at": heartbeat}
        if finish is not None:
            values.update(status=finish[0], error=finish[1], ended_at=heartbeat)
        conn.execute(update(RunRow).where(RunRow.id == run_id).values(**values))
    for what in refused:
        log.warning("run %s: the store refused %s; the rest of the batch was written", run_id, what)
    return refused


def _batch_rows(run_id, params, metrics, tags, edges) -> list[tuple[str, str, object]]:
    """(table, description, row) for every row of a batch."""
    out: list[tuple[str, str, object]] = []
    out += [("param", f"param {k!r}", {"run_id": run_id, "key": k, "value": v}) for k, v in params]
    out += [("metric", f"metric {k!r} step {s}", {"run_id": run_id, "key": k, "value": v, "step": s, "timestamp": t})
            for k, v, s, t in metrics]
    out += [("tag", f"tag {k!r}", {"run_id": run_id, "key": k, "value": v}) for k, v in tags.items()]
    out += [("edge", f"lineage edge {e!r}", e) for e in edges]
    return out


def _batch_writers(conn, rows, now: float):
    """One callable per table, writing all of the batch's rows of that table."""
    by_table: dict[str, list] = {}
    for table, _, row in rows:
        by_table.setdefault(table, []).append(row)
    return [lambda t=t, r=r: _write(conn, t, r, now) for t, r in by_table.items()]


def _write(conn, table: str, rows: list, now: float) -> None:
    if table == "param":
        try:
            with conn.begin_nested():
                conn.execute(insert(ParamRow), rows)
        except IntegrityError:
            _insert_params_checked(conn, rows[0]["run_id"], [(r["key"], r["value"]) for r in rows])
    elif table == "metric":
        conn.execute(insert(MetricRow), rows)
    elif table == "tag":
        _upsert(conn, TagRow, rows, ["run_id", "key"], ["value"])
    else:
        add_edges(conn, rows, now)


def _write_row_by_row(conn, run_id: str, rows, now: float) -> list[str]:
    """Write each row in its own savepoint; return what was refused. A store that is down still raises."""
    refused = []
    for table, what, row in rows:
        try:
            with conn.begin_nested():
                _write(conn, table, [row], now)
        except OperationalError:
            raise
        except Exception as exc:
            refused.append(f"{what} ({_reason(exc)})")
    return refused


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0] if text else ''}"[:200]


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


@dataclass(frozen=True)
class Reopened:
    """What a resumed run's handle needs: its stored row, params and the last step of each metric."""

    name: str
    kind: str
    parent_id: str | None
    params: dict[str, str]
    steps: dict[str, int]


def reopen(engine: Engine, run_id: str, *, drop_metrics_after: int | None, lost_after: float, now: float) -> Reopened:
    """Mark an ended (killed, failed) or lost run running again, owned by this process.

    A finished run is refused (its results are final), and so is a run another live process still
    holds. The update is conditional on the status and heartbeat just read, so of two processes that
    resume the same run at once exactly one wins. `drop_metrics_after=S` deletes metric points with a
    step above S in the same transaction: what an interrupted process logged after its last checkpoint,
    which the resumed process logs again.
    """
    with write(engine) as conn:
        row = conn.execute(select(RunRow).where(RunRow.id == run_id)).first()
        if row is None:
            raise RunNotFound(f"no run with id {_clip(run_id)}")
        if row.status == "finished":
            raise LLMOpsError(f"run {run_id} has finished; a finished run cannot be resumed (start a new one)")
        if row.status == "running" and not is_lost(row, now, lost_after):
            raise LLMOpsError(f"run {run_id} is still running (pid {row.pid} on {_text(row.host)}); "
                              "stop that process first, or wait until it is reported lost")
        claimed = conn.execute(update(RunRow).where(
            RunRow.id == run_id, RunRow.status == row.status, RunRow.heartbeat_at == row.heartbeat_at,
        ).values(status="running", ended_at=None, error=None, heartbeat_at=now, host=HOST, pid=os.getpid()))
        if claimed.rowcount != 1:
            raise LLMOpsError(f"run {run_id} was resumed by another process at the same moment; nothing was changed")
        if drop_metrics_after is not None:
            conn.execute(delete(MetricRow).where(MetricRow.run_id == run_id, MetricRow.step > drop_metrics_after))
        params = {_text(k): _text(v) for k, v in conn.execute(
            select(ParamRow.key, ParamRow.value).where(ParamRow.run_id == run_id))}
        steps = {_text(k): s for k, s in conn.execute(
            select(MetricRow.key, func.max(MetricRow.step)).where(MetricRow.run_id == run_id).group_by(MetricRow.key))}
    return Reopened(name=_text(row.name), kind=_text(row.kind), parent_id=row.parent_id, params=params, steps=steps)


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
        out[rid][_text(key)] = value
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
            params[rid][_text(k)] = _text(v)
        tags = {rid: {} for rid in ids}
        for rid, k, v in conn.execute(select(TagRow.run_id, TagRow.key, TagRow.value).where(TagRow.run_id.in_(ids))):
            tags[rid][_text(k)] = _text(v)
        arts = {rid: {} for rid in ids}
        for rid, k, v in conn.execute(
                select(RunArtifactRow.run_id, RunArtifactRow.name, RunArtifactRow.digest).where(RunArtifactRow.run_id.in_(ids))):
            arts[rid][_text(k)] = v

    def history_of(run_id: str) -> Callable[[str], list[MetricPoint]]:
        return lambda key: metric_history(engine, run_id, key)

    return [
        RunInfo(
            id=r.id, name=_text(r.name), kind=_text(r.kind), status=r.status, parent_id=r.parent_id,
            started_at=_dt(r.started_at), ended_at=_dt(r.ended_at), heartbeat_at=_dt(r.heartbeat_at),
            user=_text(r.user), host=_text(r.host), pid=r.pid, error=r.error,
            params=params[r.id], metrics=metrics[r.id], tags=tags[r.id], artifacts=arts[r.id],
            lost=is_lost(r, now, lost_after), _history=history_of(r.id),
        )
        for r in rows
    ]


def get(engine: Engine, run_id: str, lost_after: float, now: float) -> RunInfo:
    """One run by id, or by a unique prefix of at least 6 hex digits (as `git` does).

    Run ids are lowercase hex, so a prefix is matched only when it is hex: `______` or `%` (LIKE
    wildcards) never match anything.
    """
    with read(engine) as conn:
        rows = conn.execute(select(RunRow).where(RunRow.id == run_id)).all()
        if not rows and MIN_PREFIX <= len(run_id) <= 32 and all(c in "0123456789abcdef" for c in run_id):
            rows = conn.execute(select(RunRow).where(RunRow.id.like(f"{run_id}%")).limit(2)).all()
    if len(rows) > 1:
        raise RunNotFound(f"run id prefix {run_id!r} matches several runs; give more of the id")
    if not rows:
        raise RunNotFound(f"no run with id {_clip(run_id)}")
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
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, Integral)
                              or not 1 <= limit <= MAX_LIMIT):
        raise InvalidValue(f"limit {_clip(limit)} is not allowed: give a whole number 1..{MAX_LIMIT}")
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
