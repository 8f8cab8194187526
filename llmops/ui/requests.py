"""Requests: the served requests (runs of kind `request`, written by the server's tracer and by the
playground) and each one's trace (`/requests/{run_id}`): request and response, step latencies,
tokens, retrieved chunks with their scores, the versions that answered, and the feedback given."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from llmops.ui import queries
from llmops.ui.app import UI, page_number, page_size
from llmops.ui.svg import bar_chart

KIND = "request"
REF_PARAMS = ("model_ref", "adapter_ref", "chain_ref", "prompt_ref")


def latency(run: Any) -> float | None:
    """The request's total latency in ms: `latency_ms.total` when logged, else the sum of its steps."""
    m = run.metrics
    if "latency_ms.total" in m:
        return m["latency_ms.total"]
    steps = [v for k, v in m.items() if k.startswith("latency_ms.")]
    return sum(steps) if steps else None


def tokens(run: Any) -> tuple[float | None, float | None]:
    return run.metrics.get("tokens.prompt"), run.metrics.get("tokens.completion")


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def retrieved_chunks(run: Any) -> list[tuple[str, list[dict]]]:
    """(retrieve step, chunks) from the `retrieved` tag: one row per chunk with its `step` (as the
    server writes it), `[{"step", "chunks"}]`, a plain list of chunks, or step -> chunks."""
    value = _json(run.tags.get("retrieved"))
    if isinstance(value, list) and value and all(isinstance(v, dict) and "chunks" in v for v in value):
        value = {str(v.get("step", "retrieve")): v["chunks"] for v in value}
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "step" in v for v in value):
        by_step: dict[str, list] = {}
        for v in value:
            by_step.setdefault(str(v["step"]), []).append({k: x for k, x in v.items() if k != "step"})
        value = by_step
    elif isinstance(value, list):
        value = {"retrieve": value}
    if not isinstance(value, dict):
        return []
    out = []
    for step, chunks in value.items():
        if isinstance(chunks, list):
            out.append((str(step), [c if isinstance(c, dict) else {"chunk": c} for c in chunks]))
    return out


def _response_text(value: Any) -> Any:
    """The answer of an OpenAI response body (choices[0].message.content / text), else the value."""
    if isinstance(value, dict) and isinstance(value.get("choices"), list) and value["choices"]:
        c = value["choices"][0]
        if isinstance(c, dict):
            msg = c.get("message")
            if isinstance(msg, dict) and "content" in msg:
                return msg["content"]
            if "text" in c:
                return c["text"]
    return value


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    ws = ui.ws

    @r.get("/requests", response_class=HTMLResponse)
    def index(request: Request, filter: str = "", page: str = "1", per_page: str = "50") -> HTMLResponse:
        from llmops.errors import FilterSyntaxError

        error, result = None, None
        try:
            result = queries.search_runs(ws, filter=filter or None, kind=KIND, page=page_number(page),
                                         size=page_size(per_page))
        except FilterSyntaxError as exc:
            error = exc
        feedback = queries.feedback_for(ws, [run.id for run in result.items]) if result else {}
        return ui.render(request, "requests.html.j2", 400 if error else 200, page=result, error=error, filter=filter,
                         feedback=feedback, latency=latency, tokens=tokens, ref_params=REF_PARAMS,
                         args={"filter": filter, "per_page": result.size if result else 50})

    @r.get("/requests/{run_id}", response_class=HTMLResponse)
    def one(request: Request, run_id: str) -> HTMLResponse:
        run = ws.get_run(run_id)
        steps = sorted(((k.split(".", 1)[1], v) for k, v in run.metrics.items()
                        if k.startswith("latency_ms.") and k != "latency_ms.total"), key=lambda kv: kv[0])
        chart = bar_chart(f"step latency of {run.id}", steps) if steps else None
        kids, _ = queries.children(ws, run.id)
        req = _json(run.tags.get("request", run.tags.get("inputs")))
        # `response` is the answer's text; `output` a chain's output as JSON
        resp = run.tags["response"] if "response" in run.tags else _json(run.tags.get("output"))
        return ui.render(request, "request.html.j2", run=run, chart=chart, steps=steps, latency=latency(run),
                         tokens=tokens(run), request_body=req, response=resp, answer=_response_text(resp),
                         chunks=retrieved_chunks(run), edges=queries.edges_of_run(ws, run.id),
                         feedback=queries.feedback_for(ws, [run.id]).get(run.id, []), children=kids,
                         ref_params=REF_PARAMS)

    return r
