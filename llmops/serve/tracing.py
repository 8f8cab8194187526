"""Every served request is a run of kind `request`, written off the request path.

The route builds a `RequestTrace` when the answer is done and calls `tracer.record(trace)`, which
only appends to an in-memory queue. One background thread drains the queue and writes whatever has
accumulated in one transaction (`llmops.store.recorded.record_runs`), so under load many requests
share a commit and none waits for the store. A store error keeps the batch and retries it with
backoff; it is logged, never raised into the server.

    tracer = Tracer(ws)
    tracer.record(RequestTrace(run_id=new_run_id(), name="chat smollm2", route="chat.completions", ...))
    tracer.flush()      # wait until everything recorded so far is in the store (tests, shutdown)
    tracer.close()

The response carries the run id: OpenAI's `id` is `chatcmpl-<run id>` (`cmpl-` for completions) and
the `x-llmops-run-id` header the bare id; `run_id_of` turns either back into the run id, so
`llmops lineage`, `llmops replay` and `POST /v1/feedback` accept both.

What a request run holds:

    params    route, model (as asked), model_ref, adapter_ref, chain_ref, and the generation params
              (temperature, top_p, max_tokens, seed, stop) — what `llmops replay` needs
    tags      request (the body as JSON), response (the text), output (a chain's output as JSON),
              retrieved (chunk ids and scores as JSON), api_key (the key's name), finish_reason
    metrics   latency_ms.<part> (total, queue, first_token, a chain's steps …), tokens.prompt, tokens.completion
    edges     used -> every version the answer came from (model, adapter, chain, prompts, indexes)
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmops.store.values import MAX_KEY, MAX_TEXT

if TYPE_CHECKING:
    from llmops.store.recorded import RecordedRun
    from llmops.workspace import Workspace

__all__ = ["RESPONSE_PREFIXES", "RequestTrace", "Tracer", "response_id", "run_id_of"]

log = logging.getLogger(__name__)

RESPONSE_PREFIXES = ("chatcmpl-", "cmpl-")
RUN_KIND = "request"
GENERATION_PARAMS = ("temperature", "top_p", "max_tokens", "seed", "stop")


def response_id(run_id: str, route: str) -> str:
    """The OpenAI `id` of a response: `chatcmpl-<run id>` for chat, `cmpl-<run id>` for completions."""
    return f"{'cmpl' if route == 'completions' else 'chatcmpl'}-{run_id}"


def run_id_of(some_id: str) -> str:
    """A run id from a response id (`chatcmpl-…`, `cmpl-…`) or a run id (returned as it is).

    >>> run_id_of("chatcmpl-0193a1b2c3d4")
    '0193a1b2c3d4'
    """
    for prefix in RESPONSE_PREFIXES:
        if some_id.startswith(prefix):
            return some_id[len(prefix):]
    return some_id


@dataclass
class RequestTrace:
    """One served request as the route saw it; turned into a run by the tracer thread.

    `run_id` is allocated by the route (`llmops.workspace.new_run_id()`) before answering, so the
    response can carry it. `used` lists every version ref (`kind/name@N`) the answer came from.
    Times are epoch seconds; `latency_ms` maps parts (`total`, `queue`, `first_token`, steps) to ms.
    """

    run_id: str
    name: str
    route: str
    started_at: float
    ended_at: float
    model: str | None = None          # the model name as the client asked for it
    model_ref: str | None = None
    adapter_ref: str | None = None
    chain_ref: str | None = None
    used: list[str] = field(default_factory=list)
    request: Any = None               # the OpenAI body, or a chain's input
    response_text: str | None = None
    output: Any = None                # a chain's output (any JSON value)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    retrieved: Any = None             # chunk ids with scores, as the retriever returned them
    status: str = "finished"          # or "failed"
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # generation params as applied
    finish_reason: str | None = None
    api_key: str | None = None        # the name of the key that authorised it


# -- values the store always accepts --------------------------------------------------------------

def _safe_text(value: Any, limit: int = MAX_TEXT) -> str:
    """Text the store accepts on every backend: no NUL, no lone surrogate, at most `limit` characters."""
    if not isinstance(value, str):
        try:
            value = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            value = repr(value)
    text = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    if len(text) > limit:
        note = f"…[clipped {len(text) - limit} characters]"
        text = text[: max(0, limit - len(note))] + note
    return text


def _json(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return None if math.isnan(number) else number


def to_recorded(trace: RequestTrace, user: str) -> RecordedRun:
    """The run a trace becomes: params, tags, metrics and `used` edges (see the module docstring)."""
    from llmops.store.recorded import RecordedRun

    params = {"route": trace.route, "model": trace.model, "model_ref": trace.model_ref,
              "adapter_ref": trace.adapter_ref, "chain_ref": trace.chain_ref}
    params.update({k: trace.params.get(k) for k in GENERATION_PARAMS if k in trace.params})
    tags: dict[str, Any] = {"request": _json(trace.request)}  # JSON values always as JSON, a string too
    if trace.response_text is not None:
        tags["response"] = trace.response_text
    if trace.output is not None:
        tags["output"] = _json(trace.output)
    if trace.retrieved:
        tags["retrieved"] = _json(trace.retrieved)
    if trace.api_key:
        tags["api_key"] = trace.api_key
    if trace.finish_reason:
        tags["finish_reason"] = trace.finish_reason
    metrics: dict[str, float] = {}
    for part, ms in (trace.latency_ms or {}).items():
        number = _number(ms)
        if number is not None:
            metrics[_safe_text(f"latency_ms.{part}", MAX_KEY)] = number
    metrics["tokens.prompt"] = float(trace.prompt_tokens or 0)
    metrics["tokens.completion"] = float(trace.completion_tokens or 0)
    return RecordedRun(
        id=trace.run_id, name=_safe_text(trace.name or trace.route, MAX_KEY), kind=RUN_KIND,
        status="failed" if trace.status == "failed" else "finished",
        started_at=float(trace.started_at), ended_at=float(trace.ended_at), user=_safe_text(user, MAX_KEY),
        params={k: _safe_text(v) for k, v in params.items() if v is not None},
        metrics=metrics, tags={k: _safe_text(v) for k, v in tags.items() if v is not None},
        used=list(dict.fromkeys(r for r in [*trace.used, trace.model_ref, trace.adapter_ref, trace.chain_ref] if r)),
        error=_safe_text(trace.error) if trace.error else None)


# -- the tracer --------------------------------------------------------------------------------------

class Tracer:
    """A queue of finished requests and the thread that writes them, many per transaction.

    `record` never blocks (a full queue drops the trace and logs it); `flush` waits until every
    trace recorded before the call is stored; `close` flushes and stops the thread.
    """

    def __init__(self, ws: "Workspace", *, batch_size: int = 500, max_queue: int = 100_000,
                 retry_s: float = 0.2, max_retry_s: float = 5.0):
        from llmops.store.registry import who

        self._engine = ws.engine
        self._user = who()
        self.batch_size, self.max_queue = batch_size, max_queue
        self._retry_s, self._max_retry_s = retry_s, max_retry_s
        self._cond = threading.Condition()
        self._queue: deque[RequestTrace] = deque()
        self._enqueued = self._done = 0
        self.dropped = self.refused = self.failed_writes = 0
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="llmops-tracer", daemon=True)
        self._thread.start()

    # request path ----------------------------------------------------------------------------
    def record(self, trace: RequestTrace) -> bool:
        """Queue one finished request for writing; False (and a log line) when it was dropped."""
        with self._cond:
            if self._closing or len(self._queue) >= self.max_queue:
                self.dropped += 1
                why = "the tracer is closed" if self._closing else f"{self.max_queue} traces are waiting"
                log.warning("request run %s not recorded: %s", trace.run_id, why)
                return False
            self._queue.append(trace)
            self._enqueued += 1
            self._cond.notify_all()
        return True

    @property
    def pending(self) -> int:
        """Traces recorded but not yet in the store."""
        with self._cond:
            return self._enqueued - self._done

    # waiting ---------------------------------------------------------------------------------
    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every trace recorded before this call is stored (or refused); False on timeout."""
        with self._cond:
            target = self._enqueued
            return self._cond.wait_for(lambda: self._done >= target or not self._thread.is_alive(), timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued (waiting at most `timeout` s for a store that is down), then stop."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        left = self.pending
        if left:
            log.error("%d request run(s) could not be written before the tracer closed", left)

    # the writer thread ---------------------------------------------------------------------------
    def _take(self) -> list[RequestTrace] | None:
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._closing)
            if not self._queue:
                return None
            return [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._write(batch)
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()

    def _write(self, batch: list[RequestTrace]) -> None:
        """Write one batch, retrying with backoff while the store fails; gives up only on close."""
        from llmops.store.recorded import record_runs

        runs = []
        for trace in batch:
            try:
                runs.append(to_recorded(trace, self._user))
            except Exception:  # a trace the route built wrongly: lose it, not the thread
                self.refused += 1
                log.exception("request run %s could not be turned into a run; it was not recorded",
                              getattr(trace, "run_id", "?"))
        delay = self._retry_s
        while runs:
            try:
                self.refused += len(record_runs(self._engine, runs))
                return
            except Exception as exc:
                self.failed_writes += 1
                log.warning("writing %d request run(s) failed (%s); retrying in %.1f s",
                            len(runs), str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__, delay)
                with self._cond:
                    if self._cond.wait_for(lambda: self._closing, delay):
                        log.error("the tracer is closing while the store fails: %d request run(s) lost", len(runs))
                        return
                delay = min(delay * 2, self._max_retry_s)
