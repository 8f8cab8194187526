"""Lineage (`/lineage/{run id or ref}`): what went into a run or version and what came of it, drawn
as a graph (upstream on the left, downstream on the right), every node a link to its page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from llmops.ui import queries
from llmops.ui.app import UI, BadRequest
from llmops.ui.svg import Node, graph

MAX_DEPTH = 10
MAX_BUDGET = 500
RUN_PAGE = {"eval": "evals", "request": "requests"}


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(f"{name}={value!r} is not a number: use {low}..{high}") from None
    if not low <= n <= high:
        raise BadRequest(f"{name}={n} is out of range: use {low}..{high}")
    return n


def node_href(base: str, node: str, info: dict) -> str:
    if "/" in node:
        kind, rest = node.split("/", 1)
        return f"{base}/assets/{kind}/{rest}"
    return f"{base}/{RUN_PAGE.get(info.get('kind', ''), 'runs')}/{node}"


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    ws = ui.ws

    @r.get("/lineage", response_class=HTMLResponse)
    def ask(request: Request, node: str = "") -> Response:
        if node.strip():
            return ui.redirect(request, f"/lineage/{node.strip()}")
        return ui.render(request, "lineage.html.j2", g=None, svg=None, rows=[], depth=3, budget=60)

    @r.get("/lineage/{node:path}", response_class=HTMLResponse)
    def show(request: Request, node: str, depth: str = "3", budget: str = "60") -> HTMLResponse:
        d, b = _int(depth, "depth", 1, MAX_DEPTH), _int(budget, "budget", 1, MAX_BUDGET)
        text = node.strip()  # a run id, a served response's id (chatcmpl-…) or a version ref
        root = ws.registry.get(text, record=False).ref if "/" in text else ws.get_run(text).id
        g = queries.lineage(ws, root, depth=d, budget=b)
        base = ui.base(request)
        nodes = []
        for n, level in sorted(g.level.items(), key=lambda kv: (kv[1], kv[0])):
            info = g.info[n]
            if info["type"] == "run":
                label, sub, kind = f"run {n[:10]}", f"{info['kind']} · {info['name']} · {info['status']}", "run"
            else:
                label, sub, kind = n, "version", "version"
            nodes.append(Node(n, label, sub, node_href(base, n, info), level, "root" if n == root else kind))
        svg = graph(f"lineage of {root}", nodes, g.edges, uid="lineage")
        rows = [(n, lvl, g.info[n], node_href(base, n, g.info[n])) for n, lvl in sorted(g.level.items(), key=lambda kv: kv[1])]
        return ui.render(request, "lineage.html.j2", g=g, svg=svg, rows=rows, depth=d, budget=b, root=root)

    return r
