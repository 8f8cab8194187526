"""Render a lineage graph as a tree: upstream (what went into a node) and downstream (what came of it)."""

from __future__ import annotations

from rich.markup import escape
from rich.tree import Tree

from llmops.store.lineage import LineageGraph


_UP = {"used": "used", "produced": "produced by", "derived_from": "derived from", "child_of": "child of"}
_DOWN = {"used": "used by", "produced": "produced", "derived_from": "derived into", "child_of": "parent of"}


def _safe(text: str) -> str:
    """Run names are user text: no rich markup, no terminal escapes (control characters shown as '?')."""
    return escape("".join(c if c.isprintable() else "?" for c in text))


def _label(graph: LineageGraph, node: str) -> str:
    info = graph.nodes.get(node, {})
    if info.get("type") == "run":
        return _safe(f"run {node[:12]} [{info['kind']}] {info['name']} ({info['status']})")
    return _safe(f"{node}  {info.get('digest', '')[:12]}")


def _grow(tree: Tree, graph: LineageGraph, node: str, edges, upstream: bool, seen: set[str]) -> None:
    for src, rel, dst in edges:
        if upstream:
            # upstream edges point from the cause: (run used X) means X is upstream of run, etc.
            near, far = (src, dst) if rel in ("used", "derived_from", "child_of") else (dst, src)
        else:
            near, far = (dst, src) if rel in ("used", "derived_from", "child_of") else (src, dst)
        if near != node or far in seen:
            continue
        branch = tree.add(f"{(_UP if upstream else _DOWN)[rel]} {_label(graph, far)}")
        _grow(branch, graph, far, edges, upstream, seen | {far})


def render_tree(graph: LineageGraph) -> Tree:
    root = Tree(_label(graph, graph.root))
    up = root.add("upstream: what went into it")
    _grow(up, graph, graph.root, graph.upstream, True, {graph.root})
    down = root.add("downstream: what was made from it")
    _grow(down, graph, graph.root, graph.downstream, False, {graph.root})
    return root
