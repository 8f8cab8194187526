"""Evals: every suite with its last verdict and the eval runs (`/evals`), one eval run's report
(`/evals/{run_id}`, the same HTML report `llmops eval run` writes, rendered from the stored result),
and the eval deltas between two versions that one suite measured (for the diff page)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from llmops.errors import LLMOpsError
from llmops.evals.charts import fmt_ci, fmt_pct, Interval
from llmops.ui import queries
from llmops.ui.app import UI, page_number, page_size

MAX_DELTA_EXAMPLES = 5000  # a paired bootstrap over more rows than this is left to `llmops eval compare`


def report_html(result: dict) -> str:
    """The eval report page of a stored result (what `write_reports` writes as report.html)."""
    from llmops.evals.report import render_html

    return render_html(result)


def _passed(run: Any) -> bool | None:
    value = run.tags.get("passed")
    return None if value is None else value == "true"


def eval_deltas(ws: Any, ref_a: str, ref_b: str) -> list[dict]:
    """For each suite that measured both versions on one dataset: the newest run of each and the
    per-metric deltas (b - a), from the stored paired bootstrap when one run was the other's
    baseline, else a fresh paired bootstrap (`llmops.evals.compare.paired_deltas`)."""
    from llmops.evals import load_result
    from llmops.evals.compare import paired_deltas

    runs_a, runs_b = queries.eval_runs_using(ws, ref_a), queries.eval_runs_using(ws, ref_b)
    newest_a: dict[tuple[str, str], Any] = {}
    for run in runs_a:
        newest_a.setdefault((run.name, run.tags.get("eval_dataset", "")), run)
    out, done = [], set()
    for run_b in runs_b:
        key = (run_b.name, run_b.tags.get("eval_dataset", ""))
        run_a = newest_a.get(key)
        if run_a is None or key in done or run_a.id == run_b.id:
            continue
        done.add(key)
        item = {"suite": run_b.name, "dataset": run_b.params.get("dataset", "?"), "a_run": run_a.id, "b_run": run_b.id,
                "a_passed": _passed(run_a), "b_passed": _passed(run_b), "metrics": [], "error": None}
        try:
            a, b = load_result(ws, run_a.id), load_result(ws, run_b.id)
            base = b.get("baseline") or {}
            if base.get("run_id") == a["run_id"]:
                deltas = base["deltas"]
            elif len(b["examples"]) > MAX_DELTA_EXAMPLES:
                deltas = {n: {"delta": b["metrics"][n]["value"] - a["metrics"][n]["value"]}
                          for n in b["metrics"] if n in a["metrics"]}
            else:
                deltas = paired_deltas(a, b)
        except (LLMOpsError, KeyError, TypeError, ValueError) as exc:
            item["error"] = f"cannot compare the two results: {exc}"
            out.append(item)
            continue
        for name, d in deltas.items():
            scale = float(b["metrics"][name].get("scale") or 1.0)
            delta = d.get("delta")
            item["metrics"].append({
                "name": name, "a": a["metrics"][name]["value"], "b": b["metrics"][name]["value"],
                "delta": fmt_ci(Interval(delta, d.get("low"), d.get("high")), scale, signed=True),
                "p_better": fmt_pct(d.get("p_better")),
                "trend": "" if not isinstance(delta, (int, float)) or delta == 0 else ("up" if delta > 0 else "down"),
            })
        out.append(item)
    return out


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    ws = ui.ws

    @r.get("/evals", response_class=HTMLResponse)
    def index(request: Request, suite: str = "", page: str = "1", per_page: str = "50") -> HTMLResponse:
        flt = "attributes.name = " + json.dumps(suite) if suite else None
        runs = queries.search_runs(ws, filter=flt, kind="eval", page=page_number(page), size=page_size(per_page))
        return ui.render(request, "evals.html.j2", suites=queries.suites(ws), page=runs, suite=suite,
                         args={"suite": suite, "per_page": runs.size} if suite else {"per_page": runs.size},
                         passed=_passed)

    @r.get("/evals/{run_id}", response_class=HTMLResponse)
    def one(request: Request, run_id: str) -> HTMLResponse:
        from llmops.evals import load_result

        run = ws.get_run(run_id)
        result = load_result(ws, run.id)
        return ui.render(request, "eval.html.j2", run=run, r=result, passed=result.get("passed"))

    @r.get("/evals/{run_id}/report.html", response_class=HTMLResponse)
    def report(run_id: str) -> HTMLResponse:
        from llmops.evals import load_result

        page = report_html(load_result(ws, ws.get_run(run_id).id))
        # the report declares its own, stricter policy (no script at all)
        return HTMLResponse(page, headers={"content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                                      "img-src data:; frame-ancestors 'self'"})

    return r
