"""Feedback on served answers, and the corrected examples it yields as a fine-tuning dataset.

    POST /v1/feedback {"id": "chatcmpl-…" or a run id, "score": 0.2, "comment": "…", "correction": "…"}

stores one row against the request's run (404 for an id that names no run, 422 for a malformed body,
403 when the request's API key does not cover the model or chain that gave the answer).
`export_feedback(ws, min_score=0.8)` (`llmops feedback export --min-score 0.8`) turns it into a
`dataset` version of chat records the fine-tuning job reads:

    {"messages": [...the request's messages..., {"role": "assistant", "content": CORRECTION}]}

A request with a correction contributes the correction, whatever its score; one without contributes
the served answer when its score is at least `min_score`. The latest feedback on a run counts. A
completion's prompt becomes a user turn, and so does the single text input of a chain call.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import insert, select

from llmops.errors import InvalidValue, LLMOpsError, RunNotFound
from llmops.store.engine import read, write
from llmops.store.schema import FeedbackRow
from llmops.store.values import MAX_TEXT, check_text

if TYPE_CHECKING:
    from llmops.store.registry import AssetVersion
    from llmops.workspace import Workspace

__all__ = ["Feedback", "FeedbackIn", "ExportResult", "add_feedback", "export_feedback", "list_feedback", "router"]

log = logging.getLogger(__name__)
MAX_COMMENT = 10_000
DATASET_FILE = "feedback.jsonl"


class FeedbackIn(BaseModel):
    """The body of POST /v1/feedback."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200, description="The response id (`chatcmpl-…`, `cmpl-…`) or run id.")
    score: float = Field(description="How good the answer was; any finite number (e.g. 0..1 or -1/+1).")
    comment: str | None = Field(None, max_length=MAX_COMMENT, description="Free text.")
    correction: str | None = Field(None, min_length=1, max_length=MAX_TEXT,
                                   description="The answer it should have given; exported as a training example.")

    @field_validator("score")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("score must be a finite number")
        return value

    @field_validator("comment", "correction")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_text(value, "text", MAX_TEXT)
            except InvalidValue as exc:
                raise ValueError(str(exc).replace("text ", "", 1)) from None
        return value


@dataclass(frozen=True)
class Feedback:
    id: int
    run_id: str
    score: float
    comment: str | None
    correction: str | None
    created_at: datetime
    user: str

    def to_dict(self) -> dict:
        return {"id": self.id, "run_id": self.run_id, "score": self.score, "comment": self.comment,
                "correction": self.correction, "created_at": self.created_at.isoformat(), "user": self.user}


def _feedback(row) -> Feedback:
    return Feedback(id=row.id, run_id=row.run_id, score=row.score, comment=row.comment, correction=row.correction,
                    created_at=datetime.fromtimestamp(row.created_at, tz=timezone.utc), user=row.user)


def add_feedback(ws: "Workspace", some_id: str, score: float, *, comment: str | None = None,
                 correction: str | None = None, user: str | None = None, key: Any = None) -> Feedback:
    """Store feedback against the run a response id (or run id) names; RunNotFound when none.

    `key` (the request's ApiKey, if any) must cover the model the answer came from: PermissionError if not.
    """
    from llmops.store.registry import who

    body = FeedbackIn(id=some_id, score=score, comment=comment, correction=correction)
    run = ws.get_run(body.id)
    asked = run.params.get("model") or (f"chain/{run.name}" if run.kind == "chain" else None)
    if key is not None and not key.covers(asked):
        raise PermissionError(f"API key {key.name!r} may not rate answers of {asked!r} (its scopes: "
                              f"{', '.join(key.scopes)})")
    with write(ws.engine) as conn:
        new_id = conn.execute(insert(FeedbackRow).values(
            run_id=run.id, score=body.score, comment=body.comment, correction=body.correction,
            created_at=time.time(), user=(user or who())[:255])).inserted_primary_key[0]
        row = conn.execute(select(FeedbackRow).where(FeedbackRow.id == new_id)).one()
    return _feedback(row)


def list_feedback(ws: "Workspace", run_id: str | None = None) -> list[Feedback]:
    """Feedback, oldest first; only a run's when `run_id` (or a response id) is given."""
    stmt = select(FeedbackRow).order_by(FeedbackRow.created_at, FeedbackRow.id)
    if run_id is not None:
        stmt = stmt.where(FeedbackRow.run_id == ws.get_run(run_id).id)
    with read(ws.engine) as conn:
        return [_feedback(r) for r in conn.execute(stmt)]


# -- export --------------------------------------------------------------------------------------

@dataclass
class ExportResult:
    """What an export found: the dataset version (None when nothing qualified) and why rows were left out."""

    version: AssetVersion | None
    examples: int
    considered: int
    skipped: dict[str, int]


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def _prompt_turns(request: Any) -> list[dict] | None:
    """The chat turns a stored request body asked with (None when it holds no text to train on)."""
    if not isinstance(request, dict):
        return None
    messages = request.get("messages")
    if isinstance(messages, list) and messages:
        turns = [{"role": m.get("role"), "content": m.get("content")} for m in messages if isinstance(m, dict)]
        if turns and all(t["role"] in ("system", "user", "assistant") and isinstance(t["content"], str) for t in turns):
            return turns
        return None
    prompt = request.get("prompt")
    if isinstance(prompt, str) and prompt:
        return [{"role": "user", "content": prompt}]
    inputs = request.get("input", request)  # a chain call: one text input becomes the user turn
    if isinstance(inputs, dict):
        texts = [v for v in inputs.values() if isinstance(v, str)]
        if len(inputs) == 1 and len(texts) == 1 and texts[0]:
            return [{"role": "user", "content": texts[0]}]
    return None


def _answer(tags: dict[str, str]) -> str | None:
    if "response" in tags:
        return tags["response"]
    output = _json(tags.get("output"))
    return output if isinstance(output, str) else None


def export_feedback(ws: "Workspace", *, min_score: float, name: str = "feedback",
                    message: str | None = None) -> ExportResult:
    """Push the corrected (and well-scored) answers as `dataset/<name>` in chat `messages` JSONL.

    Nothing is pushed when no feedback qualifies (`version` is None). The export is a run of kind
    `export` that produced the version; the version's meta lists the request runs it came from.
    """
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not math.isfinite(min_score):
        raise InvalidValue(f"--min-score {min_score!r} must be a finite number")
    latest: dict[str, Feedback] = {}
    for fb in list_feedback(ws):
        latest[fb.run_id] = fb
    skipped = {"low score": 0, "no text to train on": 0, "repeat": 0}
    records, sources, seen = [], [], set()
    runs = {r.id: r for r in _runs(ws, list(latest))}
    for run_id, fb in latest.items():
        if fb.correction is None and fb.score < min_score:
            skipped["low score"] += 1
            continue
        run = runs.get(run_id)
        turns = _prompt_turns(_json(run.tags.get("request"))) if run else None
        answer = fb.correction if fb.correction is not None else (_answer(run.tags) if run else None)
        if turns is None or not answer:
            skipped["no text to train on"] += 1
            continue
        record = {"messages": [*turns, {"role": "assistant", "content": answer}]}
        line = json.dumps(record, ensure_ascii=False, sort_keys=True)
        if line in seen:  # the fine-tuning reader refuses a repeated record
            skipped["repeat"] += 1
            continue
        seen.add(line)
        records.append(line)
        sources.append(run_id)
    result = ExportResult(version=None, examples=len(records), considered=len(latest),
                          skipped={k: v for k, v in skipped.items() if v})
    if not records:
        return result
    data = ("\n".join(records) + "\n").encode("utf-8")
    with ws.start_run(f"feedback export {name}", kind="export") as run:
        run.log_params({"min_score": min_score, "dataset": name})
        run.log_metrics({"examples": len(records), "considered": len(latest)})
        result.version = ws.registry.push(
            "dataset", name, {"format": "jsonl"}, files={DATASET_FILE: data},
            message=message or f"feedback export: {len(records)} examples (score >= {min_score:g} or corrected)",
            meta={"runs": sources, "min_score": min_score})
    return result


def _runs(ws: "Workspace", ids: list[str]) -> list[Any]:
    from llmops.store import runs as run_store

    if not ids:
        return []
    from sqlalchemy import select as sel

    from llmops.store.schema import RunRow

    out = []
    for i in range(0, len(ids), 500):
        with read(ws.engine) as conn:
            rows = conn.execute(sel(RunRow).where(RunRow.id.in_(ids[i:i + 500]))).all()
        out += run_store.load(ws.engine, rows, ws.lost_after, time.time())
    return out


# -- the route ---------------------------------------------------------------------------------------

def _error(status: int, message: str, *, type: str, param: str | None = None, code: str | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status)


def _make_router():
    from fastapi import APIRouter, Depends, Request
    from starlette.concurrency import run_in_threadpool

    from llmops.serve.keys import require_key

    api = APIRouter()
    schema = {"requestBody": {"required": True, "content": {"application/json": {"schema": FeedbackIn.model_json_schema()}}}}

    async def post_feedback(request: Request):
        """Store feedback against the request's run: 404 for an unknown id, 422 for a malformed body."""
        try:
            body = FeedbackIn.model_validate(json.loads(await request.body() or b"null"))
        except ValueError as exc:  # ValidationError is a ValueError, and so is bad JSON
            if isinstance(exc, ValidationError):
                err = exc.errors(include_url=False)[0]
                param = ".".join(str(p) for p in err["loc"]) or None
                message = f"{param}: {err['msg']}" if param else err["msg"]
                if err["type"] == "model_type":
                    message = 'the body must be a JSON object: {"id": "chatcmpl-…", "score": 1.0}'
            else:
                param, message = None, "the body is not valid JSON"
            return _error(422, message, type="invalid_request_error", param=param, code="invalid_value")
        ws = request.app.state.ws
        key = getattr(request.state, "api_key", None)
        tracer = getattr(request.app.state, "tracer", None)
        try:
            fb = await run_in_threadpool(_add, ws, tracer, body, key)
        except RunNotFound:
            return _error(404, f"no served answer or run with id {body.id[:80]!r}", type="not_found_error",
                          param="id", code="not_found")
        except PermissionError as exc:
            return _error(403, str(exc), type="permission_error", param="id", code="forbidden")
        except LLMOpsError as exc:
            return _error(422, str(exc), type="invalid_request_error", code="invalid_value")
        return {"object": "feedback", **fb.to_dict()}

    post_feedback.__annotations__ = {"request": Request}  # this module's annotations are strings
    api.add_api_route("/v1/feedback", post_feedback, methods=["POST"], dependencies=[Depends(require_key())],
                      openapi_extra=schema, tags=["feedback"], summary="Score a served answer (and correct it)")
    return api


def _add(ws: "Workspace", tracer: Any, body: FeedbackIn, key: Any) -> Feedback:
    kwargs = dict(comment=body.comment, correction=body.correction, key=key,
                  user=f"key:{key.name}" if key is not None else None)
    try:
        return add_feedback(ws, body.id, body.score, **kwargs)
    except RunNotFound:
        if tracer is None:
            raise
        tracer.flush(timeout=10)  # feedback may arrive before its request's run is written
        return add_feedback(ws, body.id, body.score, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "router":  # built on first use: FastAPI is imported only by the server
        global router
        router = _make_router()
        return router
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
