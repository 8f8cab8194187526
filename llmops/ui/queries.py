"""The reads behind the UI's pages, paged in SQL so a page costs the same on 100 runs or 100,000.

The workspace API answers "give me these runs"; a page also needs "how many are there", "page 7 of
them" and "the last verdict of every suite", which would otherwise mean loading everything. These
queries use the store's own tables, filter grammar (`llmops.store.search`) and run loader
(`llmops.store.runs.load`), so a run reads the same here as in `llmops runs show`.

Lineage is walked here with a node budget: a prompt version used by 10,000 served requests would
otherwise draw (and query) 10,000 nodes.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import MetaData, Table, and_, func, inspect, select

from llmops.store import runs as run_store
from llmops.store import search
from llmops.store.engine import read
from llmops.store.schema import AliasEventRow, AliasRow, AssetVersionRow, EdgeRow, MetricRow, RunArtifactRow, RunRow, TagRow

MAX_POINTS = 2000  # points per metric series drawn; longer series are thinned evenly (first and last kept)


@dataclass
class Page:
    """One page of a longer list: `items`, the `total` count, and the 1-based `number`."""

    items: list
    total: int
    number: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def first(self) -> int:
        return 0 if not self.total else (self.number - 1) * self.size + 1

    @property
    def last(self) -> int:
        return min(self.total, self.number * self.size)


def _load(ws: Any, rows: list) -> list[run_store.RunInfo]:
    return run_store.load(ws.engine, rows, ws.lost_after, time.time())


# -- runs ------------------------------------------------------------------------------------------
def search_runs(ws: Any, *, filter: str | None = None, order: str | None = None, kind: str | None = None,
                status: str | None = None, page: int = 1, size: int = 50) -> Page:
    """Runs matching the search grammar plus kind/status, one page of them, in `order` (grammar)."""
    conds = []
    where = search.compile_filter(filter)  # FilterSyntaxError names the column
    if where is not None:
        conds.append(where)
    order_by = search.compile_order(order or None)
    if kind:
        conds.append(RunRow.kind == kind)
    if status:
        conds.append(RunRow.status == status)
    with read(ws.engine) as conn:
        total = conn.execute(select(func.count()).select_from(RunRow.__table__).where(*conds)).scalar_one()
        rows = conn.execute(select(RunRow).where(*conds).order_by(*order_by)
                            .limit(size).offset((page - 1) * size)).all()
    return Page(_load(ws, rows), total, page, size)


def run_kinds(ws: Any) -> list[str]:
    with read(ws.engine) as conn:
        return list(conn.execute(select(RunRow.kind).distinct().order_by(RunRow.kind)).scalars())


def children(ws: Any, run_id: str, limit: int = 100) -> tuple[list[Any], int]:
    """Child runs (id, name, kind, status, started_at), oldest first, and how many there are."""
    with read(ws.engine) as conn:
        total = conn.execute(select(func.count()).select_from(RunRow.__table__)
                             .where(RunRow.parent_id == run_id)).scalar_one()
        rows = conn.execute(select(RunRow.id, RunRow.name, RunRow.kind, RunRow.status, RunRow.started_at)
                            .where(RunRow.parent_id == run_id).order_by(RunRow.started_at, RunRow.id)
                            .limit(limit)).all()
    return rows, total


def run_names(ws: Any, ids: list[str]) -> dict[str, tuple[str, str]]:
    """run id -> (name, kind) for the ids that exist."""
    if not ids:
        return {}
    with read(ws.engine) as conn:
        return {r.id: (r.name, r.kind) for r in conn.execute(
            select(RunRow.id, RunRow.name, RunRow.kind).where(RunRow.id.in_(ids)))}


def metric_series(ws: Any, run_id: str) -> dict[str, list[tuple[int, float, float]]]:
    """Every metric of a run as (step, value, timestamp) points, by key, thinned to MAX_POINTS."""
    out: dict[str, list[tuple[int, float, float]]] = {}
    with read(ws.engine) as conn:
        for key, step, value, ts in conn.execute(
                select(MetricRow.key, MetricRow.step, MetricRow.value, MetricRow.timestamp)
                .where(MetricRow.run_id == run_id)
                .order_by(MetricRow.key, MetricRow.step, MetricRow.timestamp, MetricRow.id)):
            out.setdefault(str(key), []).append((step, value, ts))
    return {k: _thin(v) for k, v in out.items()}


def _thin(points: list) -> list:
    if len(points) <= MAX_POINTS:
        return points
    stride = (len(points) - 1) / (MAX_POINTS - 1)
    return [points[round(i * stride)] for i in range(MAX_POINTS)]


def artifact_sizes(ws: Any, run_id: str) -> dict[str, int]:
    with read(ws.engine) as conn:
        return dict(conn.execute(select(RunArtifactRow.name, RunArtifactRow.size)
                                 .where(RunArtifactRow.run_id == run_id)).all())


def edges_of_run(ws: Any, run_id: str) -> dict[str, list[str]]:
    """Version refs a run used and produced."""
    out: dict[str, list[str]] = {"used": [], "produced": []}
    with read(ws.engine) as conn:
        for rel, dst in conn.execute(select(EdgeRow.relation, EdgeRow.dst).where(
                EdgeRow.src == run_id, EdgeRow.relation.in_(("used", "produced"))).order_by(EdgeRow.dst)):
            out[rel].append(dst)
    return out


# -- assets ----------------------------------------------------------------------------------------
def assets(ws: Any, *, kind: str | None = None, page: int = 1, size: int = 100) -> Page:
    """(kind, name, latest version, number of versions, last change) per asset, by kind and name."""
    conds = [AssetVersionRow.kind == kind] if kind else []
    grouped = (select(AssetVersionRow.kind, AssetVersionRow.name, func.max(AssetVersionRow.version).label("latest"),
                      func.count().label("versions"), func.max(AssetVersionRow.created_at).label("changed"))
               .where(*conds).group_by(AssetVersionRow.kind, AssetVersionRow.name))
    with read(ws.engine) as conn:
        total = conn.execute(select(func.count()).select_from(grouped.subquery())).scalar_one()
        rows = conn.execute(grouped.order_by(AssetVersionRow.kind, AssetVersionRow.name)
                            .limit(size).offset((page - 1) * size)).all()
        aliases: dict[tuple[str, str], dict[str, int]] = {}
        if rows:
            names = [r.name for r in rows]
            for k, n, a, v in conn.execute(select(AliasRow.kind, AliasRow.name, AliasRow.alias, AliasRow.version)
                                           .where(AliasRow.name.in_(names))):
                aliases.setdefault((k, n), {})[a] = v
    items = [{"kind": r.kind, "name": r.name, "latest": r.latest, "versions": r.versions, "changed": r.changed,
              "aliases": aliases.get((r.kind, r.name), {})} for r in rows]
    return Page(items, total, page, size)


def asset_kinds(ws: Any) -> list[str]:
    with read(ws.engine) as conn:
        return list(conn.execute(select(AssetVersionRow.kind).distinct().order_by(AssetVersionRow.kind)).scalars())


def versions(ws: Any, kind: str, name: str, *, page: int = 1, size: int = 50) -> Page:
    """Versions of one asset, newest first: (version, digest, message, created_at, created_by, run_id, parent, same_as)."""
    cond = and_(AssetVersionRow.kind == kind, AssetVersionRow.name == name)
    with read(ws.engine) as conn:
        total = conn.execute(select(func.count()).select_from(AssetVersionRow.__table__).where(cond)).scalar_one()
        rows = conn.execute(select(AssetVersionRow.version, AssetVersionRow.digest, AssetVersionRow.message,
                                   AssetVersionRow.created_at, AssetVersionRow.created_by, AssetVersionRow.run_id,
                                   AssetVersionRow.parent, AssetVersionRow.same_as)
                            .where(cond).order_by(AssetVersionRow.version.desc())
                            .limit(size).offset((page - 1) * size)).all()
    return Page(rows, total, page, size)


def alias_events(ws: Any, kind: str, name: str, limit: int = 200) -> tuple[list[Any], int]:
    """The audited alias moves of one asset, newest first, and how many there are."""
    cond = and_(AliasEventRow.kind == kind, AliasEventRow.name == name)
    with read(ws.engine) as conn:
        total = conn.execute(select(func.count()).select_from(AliasEventRow.__table__).where(cond)).scalar_one()
        rows = conn.execute(select(AliasEventRow).where(cond).order_by(AliasEventRow.id.desc()).limit(limit)).all()
    return rows, total


def used_by_count(ws: Any, ref: str) -> int:
    with read(ws.engine) as conn:
        return conn.execute(select(func.count()).select_from(EdgeRow.__table__)
                            .where(EdgeRow.dst == ref, EdgeRow.relation == "used")).scalar_one()


# -- evals -----------------------------------------------------------------------------------------
def eval_runs_using(ws: Any, ref: str, limit: int = 50) -> list[run_store.RunInfo]:
    """Finished eval runs that measured version `ref`, newest first."""
    with read(ws.engine) as conn:
        rows = conn.execute(select(RunRow).join(EdgeRow, EdgeRow.src == RunRow.id)
                            .where(EdgeRow.dst == ref, EdgeRow.relation == "used", RunRow.kind == "eval",
                                   RunRow.status == "finished")
                            .order_by(RunRow.started_at.desc(), RunRow.id.desc()).limit(limit)).all()
    return _load(ws, rows)


def suites(ws: Any, limit: int = 200) -> list[dict]:
    """Each suite (eval runs by name) with its run count and its newest run's verdict."""
    latest = (select(RunRow.name, func.max(RunRow.started_at).label("at"), func.count().label("runs"))
              .where(RunRow.kind == "eval").group_by(RunRow.name).subquery())
    with read(ws.engine) as conn:
        rows = conn.execute(select(RunRow, latest.c.runs).join(latest, and_(
            RunRow.name == latest.c.name, RunRow.started_at == latest.c.at, RunRow.kind == "eval"))
            .order_by(RunRow.name).limit(limit)).all()
    seen, out = set(), []
    infos = _load(ws, [r for r in rows])
    for info, row in zip(infos, rows):
        if info.name in seen:
            continue
        seen.add(info.name)
        out.append({"run": info, "runs": row.runs})
    return out


# -- lineage ---------------------------------------------------------------------------------------
@dataclass
class Lineage:
    """A lineage neighbourhood: nodes with their distance (negative upstream, positive downstream),
    flow edges (cause -> effect, relation) and whether the node budget cut the walk short."""

    root: str
    level: dict[str, int] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    info: dict[str, dict] = field(default_factory=dict)
    truncated: bool = False


def _is_ref(node: str) -> bool:
    return "/" in node


def _step(conn, nodes: list[str], up: bool, cap: int) -> list[tuple[str, str, str, str]]:
    """(near, far, flow source, relation) one hop from `nodes`, as `llmops.store.lineage` walks them."""
    refs = [n for n in nodes if _is_ref(n)]
    runs = [n for n in nodes if not _is_ref(n)]
    out = []
    q = select(EdgeRow.src, EdgeRow.relation, EdgeRow.dst)
    if up:
        if refs:  # the run that produced it, the version it derives from
            out += [(d, s, s, r) for s, r, d in conn.execute(
                q.where(EdgeRow.dst.in_(refs), EdgeRow.relation == "produced").limit(cap))]
            out += [(s, d, d, r) for s, r, d in conn.execute(
                q.where(EdgeRow.src.in_(refs), EdgeRow.relation == "derived_from").limit(cap))]
        if runs:  # what the run used, the run that started it
            out += [(s, d, d, r) for s, r, d in conn.execute(
                q.where(EdgeRow.src.in_(runs), EdgeRow.relation == "used").limit(cap))]
            out += [(i, p, p, "child_of") for i, p in conn.execute(
                select(RunRow.id, RunRow.parent_id).where(RunRow.id.in_(runs), RunRow.parent_id.is_not(None)))]
    else:
        if refs:  # runs that used it, versions derived from it
            out += [(d, s, d, r) for s, r, d in conn.execute(
                q.where(EdgeRow.dst.in_(refs), EdgeRow.relation.in_(("used", "derived_from"))).limit(cap))]
        if runs:  # what the run produced, its child runs
            out += [(s, d, s, r) for s, r, d in conn.execute(
                q.where(EdgeRow.src.in_(runs), EdgeRow.relation == "produced").limit(cap))]
            out += [(p, i, p, "child_of") for i, p in conn.execute(
                select(RunRow.id, RunRow.parent_id).where(RunRow.parent_id.in_(runs)).limit(cap))]
    return out


def lineage(ws: Any, root: str, *, depth: int = 3, budget: int = 60) -> Lineage:
    """Walk up and down from `root` level by level (one query per relation and level), at most
    `depth` hops and `budget` nodes each way."""
    g = Lineage(root, {root: 0})
    with read(ws.engine) as conn:
        for up in (True, False):
            frontier, seen, sign = [root], {root}, -1 if up else 1
            for d in range(1, depth + 1):
                if not frontier:
                    break
                nxt = []
                for near, far, src, rel in _step(conn, frontier, up, budget + 1):
                    if far not in seen:
                        if len(seen) > budget:
                            g.truncated = True
                            continue
                        seen.add(far)
                        nxt.append(far)
                        g.level.setdefault(far, sign * d)
                    edge = (src, far if src == near else near, rel)
                    if edge not in g.edges:
                        g.edges.append(edge)
                frontier = nxt
            if frontier and any(far not in seen for _, far, _, _ in _step(conn, frontier[:50], up, 10)):
                g.truncated = True  # the depth cut it short
        runs = [n for n in g.level if not _is_ref(n)]
        if runs:
            for r in conn.execute(select(RunRow.id, RunRow.name, RunRow.kind, RunRow.status).where(RunRow.id.in_(runs))):
                g.info[r.id] = {"type": "run", "name": r.name, "kind": r.kind, "status": r.status}
    for n in g.level:
        g.info.setdefault(n, {"type": "version"} if _is_ref(n) else {"type": "run", "name": "?", "kind": "?", "status": "?"})
    return g


# -- requests and feedback -------------------------------------------------------------------------
def feedback_for(ws: Any, run_ids: list[str]) -> dict[str, list[dict]]:
    """Rows of the `feedback` table (added by the serving migration) per run id; {} when there is none.

    Read by reflection so this works whatever columns the table has; a row belongs to a run through a
    `run_id` column (or `response_id` holding the run id or its `chatcmpl-` form).
    """
    if not run_ids:
        return {}
    table = _feedback_table(ws.engine)
    if table is None:
        return {}
    col = next((table.c[c] for c in ("run_id", "response_id", "request_id") if c in table.c), None)
    if col is None:
        return {}
    keys = set(run_ids) | {f"{p}-{r}" for r in run_ids for p in ("chatcmpl", "cmpl")}
    out: dict[str, list[dict]] = {}
    with read(ws.engine) as conn:
        for row in conn.execute(select(table).where(col.in_(keys)).limit(1000)):
            data = dict(row._mapping)
            rid = str(data.get(col.name, "")).rsplit("-", 1)[-1]
            out.setdefault(rid, []).append(data)
    return out


_reflected: "weakref.WeakKeyDictionary[Any, Table]" = weakref.WeakKeyDictionary()


def _feedback_table(engine) -> Table | None:
    """The reflected `feedback` table, cached once it exists (a migration may add it while we run)."""
    table = _reflected.get(engine)
    if table is None and inspect(engine).has_table("feedback"):
        table = _reflected[engine] = Table("feedback", MetaData(), autoload_with=engine)
    return table


def tag_values(ws: Any, run_ids: list[str], key: str) -> dict[str, str]:
    if not run_ids:
        return {}
    with read(ws.engine) as conn:
        return dict(conn.execute(select(TagRow.run_id, TagRow.value).where(TagRow.run_id.in_(run_ids), TagRow.key == key)).all())
