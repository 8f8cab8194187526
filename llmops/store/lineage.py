"""Lineage edges and graph walks. Nodes are run ids or asset refs (`kind/name@N`).

    run  --used-->         version   (the run read it)
    run  --produced-->     version   (the run wrote it)
    version --derived_from--> version (forked or rebuilt from)

Upstream of a node is everything that went into it; downstream is everything made from it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from llmops.store.engine import read
from llmops.store.schema import EdgeRow, RunRow

RELATIONS = ("used", "produced", "derived_from")


def add_edges(conn, edges: list[tuple[str, str, str]], now: float) -> None:
    """Insert edges, ignoring ones already recorded."""
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    rows = [{"src": s, "relation": r, "dst": d, "created_at": now} for s, r, d in dict.fromkeys(edges)]
    conn.execute(mod.insert(EdgeRow).on_conflict_do_nothing(index_elements=["src", "relation", "dst"]), rows)


def is_ref(node: str) -> bool:
    """Lineage nodes are run ids (hex) or version refs (`kind/name@N`)."""
    return "/" in node


@dataclass
class LineageGraph:
    """Nodes reached from `root`, with the edges that reached them. `edges` are (src, relation, dst)."""

    root: str
    upstream: list[tuple[str, str, str]] = field(default_factory=list)
    downstream: list[tuple[str, str, str]] = field(default_factory=list)
    nodes: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"root": self.root, "nodes": self.nodes,
                "upstream": [list(e) for e in self.upstream], "downstream": [list(e) for e in self.downstream]}


def _neighbours(conn, node: str, direction: str) -> list[tuple[tuple[str, str, str], str]]:
    """Edges one step away from `node`, each with the node at its far end."""
    out = []
    if direction == "up":
        if is_ref(node):  # who produced it, what it derives from
            q1 = select(EdgeRow.src, EdgeRow.relation, EdgeRow.dst).where(EdgeRow.dst == node, EdgeRow.relation == "produced")
            q2 = select(EdgeRow.src, EdgeRow.relation, EdgeRow.dst).where(EdgeRow.src == node, EdgeRow.relation == "derived_from")
            out += [((s, r, d), s) for s, r, d in conn.execute(q1)] + [((s, r, d), d) for s, r, d in conn.execute(q2)]
        else:  # what the run used, and the run that started it
            q = select(EdgeRow.src, EdgeRow.relation, EdgeRow.dst).where(EdgeRow.src == node, EdgeRow.relation == "used")
            out += [((s, r, d), d) for s, r, d in conn.execute(q)]
            parent = conn.execute(select(RunRow.parent_id).where(RunRow.id == node)).scalar()
            if parent:
                out.append(((node, "child_of", parent), parent))
    else:
        if is_ref(node):  # runs that used it, versions derived from it
            q1 = select(EdgeRow.src, EdgeRow.relation, EdgeRow.dst).where(EdgeRow.dst == node, EdgeRow.relation.in_(("used", "derived_from")))
            out += [((s, r, d), s) for s, r, d in conn.execute(q1)]
        else:  # what the run produced, and its child runs
            q = select(EdgeRow.src, EdgeRow.relation, EdgeRow.dst).where(EdgeRow.src == node, EdgeRow.relation == "produced")
            out += [((s, r, d), d) for s, r, d in conn.execute(q)]
            for (child,) in conn.execute(select(RunRow.id).where(RunRow.parent_id == node)):
                out.append(((child, "child_of", node), child))
    return out


def walk(engine: Engine, root: str, *, depth: int | None = None) -> LineageGraph:
    """Breadth-first walk upstream and downstream from `root`, each direction on its own, up to `depth` hops."""
    graph = LineageGraph(root=root)
    with read(engine) as conn:
        for direction, edges in (("up", graph.upstream), ("down", graph.downstream)):
            seen = {root}
            queue = deque([(root, 0)])
            while queue:
                node, d = queue.popleft()
                if depth is not None and d >= depth:
                    continue
                for edge, far in _neighbours(conn, node, direction):
                    if edge not in edges:
                        edges.append(edge)
                    if far not in seen:
                        seen.add(far)
                        queue.append((far, d + 1))
            graph.nodes.update({n: {} for n in seen})
        run_ids = [n for n in graph.nodes if not is_ref(n)]
        if run_ids:
            for rid, name, kind, status in conn.execute(
                    select(RunRow.id, RunRow.name, RunRow.kind, RunRow.status).where(RunRow.id.in_(run_ids))):
                graph.nodes[rid] = {"type": "run", "name": name, "kind": kind, "status": status}
    for n in graph.nodes:
        if is_ref(n):
            graph.nodes[n] = {"type": "version"}
    return graph
