"""Runs that are already over when they reach the store: many written in one transaction.

A served request is a run of kind `request`, but opening a run (`Workspace.start_run`) costs a
commit at its start and another at its end, on the request path. The server instead describes each
finished request as a `RecordedRun` and its tracer thread hands many of them to `record_runs`, which
writes their rows, params, metrics, tags and `used` edges in one transaction.

Values are expected to be checked already (`llmops.store.values`); a run the database still refuses
(a duplicate id, say) is left out and named in the returned list, never the rest of the batch. A store
that is down or locked (OperationalError) fails the whole call so the caller can keep the batch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from sqlalchemy import Engine, insert
from sqlalchemy.exc import OperationalError

from llmops.store.engine import write
from llmops.store.lineage import add_edges
from llmops.store.runs import HOST
from llmops.store.schema import MetricRow, ParamRow, RunRow, TagRow

__all__ = ["RecordedRun", "record_runs"]

log = logging.getLogger(__name__)


@dataclass
class RecordedRun:
    """One finished run as it will be stored; metrics are single points (step 0, at `ended_at`)."""

    id: str
    name: str
    kind: str
    status: str
    started_at: float
    ended_at: float
    user: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    used: list[str] = field(default_factory=list)
    error: str | None = None
    parent_id: str | None = None


def _rows(runs: list[RecordedRun]) -> dict[str, list[dict]]:
    pid = os.getpid()
    out: dict[str, list[dict]] = {"runs": [], "params": [], "metrics": [], "tags": []}
    for r in runs:
        out["runs"].append({
            "id": r.id, "name": r.name, "kind": r.kind, "status": r.status, "parent_id": r.parent_id,
            "started_at": r.started_at, "ended_at": r.ended_at, "heartbeat_at": r.ended_at, "user": r.user,
            "host": HOST, "pid": pid, "error": r.error})
        out["params"] += [{"run_id": r.id, "key": k, "value": v} for k, v in r.params.items()]
        out["metrics"] += [{"run_id": r.id, "key": k, "value": v, "step": 0, "timestamp": r.ended_at}
                           for k, v in r.metrics.items()]
        out["tags"] += [{"run_id": r.id, "key": k, "value": v} for k, v in r.tags.items()]
    return out


def _write(conn, runs: list[RecordedRun]) -> None:
    rows = _rows(runs)
    conn.execute(insert(RunRow), rows["runs"])  # first: the other rows point at it
    for table, key in ((ParamRow, "params"), (MetricRow, "metrics"), (TagRow, "tags")):
        if rows[key]:
            conn.execute(insert(table), rows[key])
    edges = [(r.id, "used", ref) for r in runs for ref in r.used]
    if edges:
        add_edges(conn, edges, max(r.ended_at for r in runs))


def record_runs(engine: Engine, runs: list[RecordedRun]) -> list[str]:
    """Write finished runs in one transaction; returns `id (reason)` for each run the store refused."""
    if not runs:
        return []
    refused: list[str] = []
    with write(engine) as conn:
        try:
            with conn.begin_nested():
                _write(conn, runs)
        except OperationalError:
            raise
        except Exception:
            for run in runs:  # one savepoint per run: only the refused ones are left out
                try:
                    with conn.begin_nested():
                        _write(conn, [run])
                except OperationalError:
                    raise
                except Exception as exc:
                    orig = getattr(exc, "orig", None) or exc
                    first = (str(orig).strip().splitlines() or [""])[0]
                    refused.append(f"{run.id} ({type(orig).__name__}: {first[:160]})")
    for what in refused:
        log.warning("the store refused request run %s; the rest of the batch was written", what)
    return refused
