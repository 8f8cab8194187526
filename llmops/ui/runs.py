"""Runs: the searchable table (`/runs`), one run (`/runs/{run_id}`), its artifacts, and several runs
compared on one chart per metric (`/compare?runs=a,b`)."""

from __future__ import annotations

import mimetypes
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from llmops.errors import FilterSyntaxError, RunNotFound
from llmops.ui import queries
from llmops.ui.app import UI, BadRequest, page_number, page_size
from llmops.ui.svg import line_chart

STATUSES = ("running", "finished", "failed", "killed")
SORTABLE = {"name": "attributes.name", "kind": "attributes.kind", "status": "attributes.status",
            "started": "attributes.started_at"}
MAX_COMPARE = 10
MAX_CHARTS = 40
PAGE_FOR_KIND = {"eval": "evals", "request": "requests"}


def metric_charts(series_by_run: list[tuple[str, dict[str, list]]], x: str) -> list[tuple[str, str]]:
    """(metric, svg) for every metric with more than one point in some run, x = step or seconds since start."""
    keys = sorted({k for _, s in series_by_run for k, pts in s.items() if len(pts) > 1 or len(series_by_run) > 1})
    out = []
    for key in keys[:MAX_CHARTS]:
        lines = []
        for label, series in series_by_run:
            pts = series.get(key, [])
            if not pts:
                continue
            t0 = min(p[2] for p in pts)
            lines.append((label, [((p[2] - t0) if x == "time" else p[0], p[1]) for p in pts]))
        out.append((key, line_chart(key, lines, x_label="seconds since the first point" if x == "time" else "step")))
    return out


def _x(value: str | None) -> str:
    if value not in (None, "", "step", "time"):
        raise BadRequest(f"x={value!r}: the x axis is 'step' or 'time'")
    return value or "step"


def router(ui: UI) -> APIRouter:
    r = APIRouter()

    @r.get("/runs", response_class=HTMLResponse)
    def runs(request: Request, filter: str = "", order: str = "", kind: str = "", status: str = "",
             page: str = "1", per_page: str = "50") -> HTMLResponse:
        number, size = page_number(page), page_size(per_page)
        if status and status not in STATUSES:
            raise BadRequest(f"status {status!r} is not one of {', '.join(STATUSES)}")
        error, result = None, None
        try:
            result = queries.search_runs(ui.ws, filter=filter or None, order=order or None, kind=kind or None,
                                         status=status or None, page=number, size=size)
        except FilterSyntaxError as exc:
            error = exc
        return ui.render(request, "runs.html.j2", 400 if error else 200, page=result, error=error,
                         filter=filter, order=order, kind=kind, status=status, per_page=size,
                         kinds=queries.run_kinds(ui.ws), statuses=STATUSES, sortable=SORTABLE,
                         page_for_kind=PAGE_FOR_KIND)

    @r.get("/runs/{run_id}", response_class=HTMLResponse)
    def run(request: Request, run_id: str, x: str = "step") -> HTMLResponse:
        info = ui.ws.get_run(run_id)
        series = queries.metric_series(ui.ws, info.id)
        kids, n_kids = queries.children(ui.ws, info.id)
        parent = queries.run_names(ui.ws, [info.parent_id]).get(info.parent_id) if info.parent_id else None
        return ui.render(request, "run.html.j2", run=info, x=_x(x), charts=metric_charts([(info.id[:12], series)], _x(x)),
                         points={k: len(v) for k, v in series.items()}, children=kids, n_children=n_kids,
                         parent=parent, edges=queries.edges_of_run(ui.ws, info.id),
                         sizes=queries.artifact_sizes(ui.ws, info.id), page_for_kind=PAGE_FOR_KIND)

    @r.get("/runs/{run_id}/artifacts/{name:path}")
    def artifact(run_id: str, name: str) -> Response:
        info = ui.ws.get_run(run_id)
        digest = info.artifacts.get(name)
        if digest is None:
            raise RunNotFound(f"run {info.id} has no artifact {name!r}")
        data = ui.ws.artifacts.get(digest)
        media = mimetypes.guess_type(name)[0] or "application/octet-stream"
        safe = media in ("application/json", "text/plain", "text/csv") or media.startswith("image/") and "svg" not in media
        # anything a browser could run (HTML, SVG) is downloaded, never rendered on this origin
        return Response(data, media_type=media if safe else "application/octet-stream", headers={
            "content-disposition": ("inline" if safe else "attachment") + f"; filename*=UTF-8''{_quote(name)}"})

    @r.get("/compare", response_class=HTMLResponse)
    def compare(request: Request, runs: list[str] = Query(default=[]), x: str = "step") -> HTMLResponse:
        ids = [i.strip() for part in (runs or []) for i in part.split(",") if i.strip()]
        ids = list(dict.fromkeys(ids))
        if not ids:
            raise BadRequest("no runs to compare: give ?runs=ID,ID (tick runs in the runs table)")
        if len(ids) > MAX_COMPARE:
            raise BadRequest(f"{len(ids)} runs given: compare at most {MAX_COMPARE} at once")
        infos = [ui.ws.get_run(i) for i in ids]
        series = [(f"{i.name} {i.id[:8]}", queries.metric_series(ui.ws, i.id)) for i in infos]
        params = sorted({k for i in infos for k in i.params})
        return ui.render(request, "compare.html.j2", runs=infos, x=_x(x), charts=metric_charts(series, _x(x)),
                         params=params, ids=",".join(i.id for i in infos))

    return r


def _quote(text: str) -> str:
    import urllib.parse

    return urllib.parse.quote(text.rsplit("/", 1)[-1], safe="")
