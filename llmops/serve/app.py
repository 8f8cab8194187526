"""The FastAPI app behind `llmops serve`: OpenAI-compatible completions, chains over HTTP, health, metrics.

    app = create_app(ws, settings=ServeSettings())        # then: uvicorn.run(app, host=..., port=...)

Routes are thin: a request's `model` is resolved to versions (`llmops.serve.models`), its generation goes
to the engine of its base model (`llmops.serve.engines`: the batcher, or an upstream server) or, for a
chain, to `LLMOpsChain.execute` on a worker thread; the answer carries the run id (OpenAI `id`
`chatcmpl-RUN_ID` / `cmpl-RUN_ID`, header `x-llmops-run-id`), and the request is recorded as a run by the
tracer after the answer, off the request path (`tracer.record` only queues). Errors answer in the OpenAI
format (`llmops.serve.errors`); limits are ASGI middleware (`llmops.serve.limits`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from llmops.serve.errors import APIError, from_exception, install_handlers
from llmops.serve.limits import BodyLimit, ConcurrencyLimit, InFlight
from llmops.serve.metrics import Metrics
from llmops.serve.models import Target, list_models, resolve
from llmops.serve.openai_api import (ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest, ModelList,
                                     chat_chunk, completion_chunk, now, usage)
from llmops.serve.settings import ServeSettings

if TYPE_CHECKING:
    from llmops.workspace import Workspace

__all__ = ["Outcome", "Server", "create_app"]

log = logging.getLogger("llmops.serve")

RUN_ID_HEADER = "x-llmops-run-id"
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"example": {"error": {
        "message": text, "type": "invalid_request_error", "param": None, "code": None}}}}}
    for status, text in ((400, "Bad request (OpenAI error format)"), (401, "Missing or unknown API key"),
                         (403, "The key does not cover this model or chain"), (404, "Unknown model or chain"),
                         (413, "Body too large"), (429, "Too many requests in flight; see Retry-After"),
                         (503, "Backend failed or timed out; the server keeps serving"))}


@dataclass
class Outcome:
    """What a finished generation or chain call produced, in the terms a response and a trace need."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    output: Any = None                      # a chain's output as it returned it
    latency_ms: dict[str, float] = field(default_factory=dict)
    retrieved: Any = None
    used: list[str] = field(default_factory=list)


@dataclass
class Call:
    """One request's bookkeeping: ids, timings, labels; ends in `Server.finish` (metrics + trace)."""

    route: str
    request: Any
    model: str | None = None
    run_id: str = ""
    started_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    first_token_ms: float | None = None
    target: Target | None = None
    params: dict[str, Any] = field(default_factory=dict)
    api_key: str | None = None
    finished: bool = False

    def __post_init__(self) -> None:
        from llmops.workspace import new_run_id

        self.run_id = self.run_id or new_run_id()

    @property
    def labels(self) -> dict[str, str]:
        return self.target.labels if self.target is not None else {"model": "", "adapter": "", "chain": ""}

    def mark_first_token(self) -> None:
        if self.first_token_ms is None:
            self.first_token_ms = (time.perf_counter() - self.t0) * 1000


class Server:
    """The state of one app: workspace, settings, engines, chains, metrics and tracer."""

    def __init__(self, ws: Workspace, settings: ServeSettings):
        from llmops.serve.chains_api import ChainCache
        from llmops.serve.engines import Engines

        self.ws, self.settings = ws, settings
        self.engines = Engines(settings)
        self.chains = ChainCache(ws, self.engines)
        self.metrics = Metrics()
        self.in_flight = InFlight()
        from llmops.serve.tracing import Tracer

        self.tracer = Tracer(ws)
        self.loras: Any = None     # the LoraRegistry of adapters loaded at run time (lora_admin)
        self.vllm: Any = None      # the VLLMSupervisor of the vllm backend

    def start_vllm(self) -> None:
        """The vllm backend without an upstream: start and supervise `vllm serve`, then forward to it."""
        from llmops.models.vllm_server import VLLMSettings, VLLMSupervisor

        self.vllm = VLLMSupervisor(self.ws, self.settings.vllm_model or "smollm2", VLLMSettings(**self.settings.vllm))
        self.engines.use_upstream(self.vllm.start())

    def close(self) -> None:
        if self.vllm is not None:
            self.vllm.close()
        self.engines.close()
        self.tracer.close()

    # -- bookkeeping ----------------------------------------------------------------------

    def finish(self, call: Call, outcome: Outcome | None = None, error: APIError | None = None) -> None:
        """Count the request and queue its run (never blocks on the store)."""
        if call.finished:
            return
        call.finished = True
        seconds = time.perf_counter() - call.t0
        status = error.status if error is not None else 200
        self.metrics.observe(call.route, call.labels, status=status, seconds=seconds,
                             prompt_tokens=outcome.prompt_tokens if outcome else 0,
                             completion_tokens=outcome.completion_tokens if outcome else 0,
                             error_code=error.code if error is not None else None)
        if call.first_token_ms is not None:
            self.metrics.first_token(call.route, call.labels, call.first_token_ms / 1000)
        target = call.target
        latency = {"total": round(seconds * 1000, 3)}
        if call.first_token_ms is not None:
            latency["first_token"] = round(call.first_token_ms, 3)
        if outcome is not None:
            latency.update(outcome.latency_ms)
        used = list(dict.fromkeys((target.used if target else []) + (outcome.used if outcome else [])))
        fields = dict(
            run_id=call.run_id, name=f"{call.route} {call.model or ''}".strip()[:200], route=call.route,
            started_at=call.started_at, ended_at=time.time(), model=call.model,
            model_ref=target.model.ref if target and target.model else None,
            adapter_ref=target.adapter.ref if target and target.adapter else None,
            chain_ref=target.chain.ref if target and target.chain else None,
            used=used, request=call.request, response_text=outcome.text if outcome else None,
            output=outcome.output if outcome else None,
            prompt_tokens=outcome.prompt_tokens if outcome else 0,
            completion_tokens=outcome.completion_tokens if outcome else 0, latency_ms=latency,
            retrieved=outcome.retrieved if outcome else None,
            status="failed" if error is not None else "finished",
            error=f"{error.status} {error.code}: {error.message}" if error is not None else None,
            params=call.params, finish_reason=outcome.finish_reason if outcome else None, api_key=call.api_key)
        try:
            from llmops.serve.tracing import RequestTrace

            known = {f.name for f in dataclasses.fields(RequestTrace)}
            self.tracer.record(RequestTrace(**{k: v for k, v in fields.items() if k in known}))
        except Exception:  # tracing must never fail a request
            log.warning("could not record request %s", call.run_id, exc_info=True)

    # -- generation -----------------------------------------------------------------------

    async def start(self, call: Call, target: Target, body: ChatCompletionRequest | CompletionRequest,
                    chat: bool) -> tuple[Any, Callable[[Any], Outcome]]:
        """Submit the generation; returns the stream and how to turn its result into an Outcome."""
        if target.is_chain:
            from llmops.serve.chains_api import execute

            chain = await self.chains.load(target.chain)
            text = body.last_user_message() if chat else body.text()
            inputs = chain.coerce_inputs({self.chains.text_input(chain, target.name): text})
            # always streamed inside, so that a client that leaves stops the generation at its next token
            stream = self.engines.relay(lambda cancelled: execute(chain, inputs, True))
            return stream, lambda result: chain_outcome(chain, result)
        from pydantic import ValidationError

        from llmops.models import Request as LLMRequest

        try:
            if chat:
                request = LLMRequest.chat(body.plain_messages(), **call.params)
            else:
                request = LLMRequest.completion(body.text(), **call.params)
        except ValidationError as exc:
            err = exc.errors()[0]
            param = ".".join(str(p) for p in err["loc"]) or None
            raise APIError(400, f"{param}: {err['msg']}" if param else err["msg"], param=param) from None
        engine = await run_in_threadpool(self.engines.get, target)
        return engine.submit(request, target, stream=body.stream), generation_outcome

    async def wait(self, http: Request, stream: Any, deadline: float) -> Any:
        """The finished stream's result; cancels it when the client leaves or the deadline passes."""
        task = asyncio.ensure_future(stream.wait())
        watcher = asyncio.ensure_future(_until_disconnected(http))
        try:
            done, _ = await asyncio.wait({task, watcher}, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the server is shutting down
            task.cancel()
            stream.cancel()
            raise
        finally:
            watcher.cancel()
        if task in done:
            task.result()
            return stream.result
        task.cancel()
        stream.cancel()
        if watcher in done:
            raise APIError(499, "the client closed the connection", code="client_disconnected")
        raise TimeoutError

    async def complete(self, http: Request, body: ChatCompletionRequest | CompletionRequest, chat: bool) -> Response:
        route = "chat.completions" if chat else "completions"
        call = Call(route=route, request=body.model_dump(exclude_none=True), model=body.model)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{call.run_id}"
        headers = {RUN_ID_HEADER: call.run_id}
        deadline = time.monotonic() + self.settings.timeout_s
        try:
            call.params = body.params(limit=self.settings.max_tokens_limit, default=self.settings.default_max_tokens)
            call.target = await run_in_threadpool(resolve, self.ws, body.model, self.loras)
            call.api_key = key_name(http)
            if call.target.is_chain:  # a chain decodes with its own prompt's and steps' params
                call.params = {}
            stream, to_outcome = await self.start(call, call.target, body, chat)
        except Exception as exc:
            err = from_exception(exc)
            self.finish(call, error=err)
            raise _with_headers(err, headers) from None
        if body.stream:
            events = self.sse(call, stream, to_outcome, rid, body, chat, deadline)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        try:
            outcome = to_outcome(await self.wait(http, stream, deadline))
        except Exception as exc:
            err = from_exception(exc)
            self.finish(call, error=err)
            raise _with_headers(err, headers) from None
        self.finish(call, outcome)
        u = usage(outcome.prompt_tokens, outcome.completion_tokens)
        if chat:
            data = {"id": rid, "object": "chat.completion", "created": now(), "model": body.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": outcome.text},
                                 "logprobs": None, "finish_reason": outcome.finish_reason}],
                    "usage": u, "system_fingerprint": None}
        else:
            data = {"id": rid, "object": "text_completion", "created": now(), "model": body.model,
                    "choices": [{"index": 0, "text": outcome.text, "logprobs": None,
                                 "finish_reason": outcome.finish_reason}], "usage": u, "system_fingerprint": None}
        return JSONResponse(data, headers=headers)

    async def sse(self, call: Call, stream: Any, to_outcome: Callable[[Any], Outcome], rid: str,
                  body: ChatCompletionRequest | CompletionRequest, chat: bool, deadline: float) -> AsyncIterator[str]:
        """OpenAI server-sent events; an error after the first byte is sent as an `error` event before [DONE]."""
        created, model = now(), body.model
        done = False
        try:
            if chat:
                yield _event(chat_chunk(rid, model, created, role=True, content=""))
            async for delta in _deadline(stream, deadline):
                call.mark_first_token()
                if not isinstance(delta, str):  # a chain whose output is not text sends it whole, as JSON
                    delta = json.dumps(delta, ensure_ascii=False, default=str)
                yield _event(chat_chunk(rid, model, created, content=delta) if chat
                             else completion_chunk(rid, model, created, text=delta))
            outcome = to_outcome(stream.result)
            done = True
            if chat:
                yield _event(chat_chunk(rid, model, created, finish=outcome.finish_reason))
            else:
                yield _event(completion_chunk(rid, model, created, finish=outcome.finish_reason))
            if body.include_usage:
                u = usage(outcome.prompt_tokens, outcome.completion_tokens)
                yield _event(chat_chunk(rid, model, created, usage_=u) if chat
                             else completion_chunk(rid, model, created, usage_=u))
            yield "data: [DONE]\n\n"
            self.finish(call, outcome)
        except (asyncio.CancelledError, GeneratorExit):
            self.finish(call, error=APIError(499, "the client closed the connection", code="client_disconnected"))
            raise
        except Exception as exc:
            err = from_exception(exc)
            self.finish(call, error=err)
            yield _event(err.body())
            yield "data: [DONE]\n\n"
        finally:
            if not done:
                stream.cancel()


def generation_outcome(gen: Any) -> Outcome:
    return Outcome(text=gen.text, prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                   finish_reason=gen.finish_reason)


def chain_outcome(chain: Any, result: tuple[Any, Any]) -> Outcome:
    output, trace = result
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, default=str)
    retrieved = [{"step": step, **{k: doc.get(k) for k in ("index", "chunk_id", "score", "rank", "source")}}
                 for step, docs in trace.retrieved.items() for doc in docs] or None
    return Outcome(text=text, prompt_tokens=trace.tokens.get("prompt", 0),
                   completion_tokens=trace.tokens.get("completion", 0), output=output,
                   latency_ms={f"step.{k}": v for k, v in trace.latency.items()}, retrieved=retrieved,
                   used=chain.versions)


def key_name(http: Request) -> str | None:
    """The name of the API key that authorised the request (set by `require_key`), for its run."""
    key = getattr(http.state, "api_key", None)
    return getattr(key, "name", None)


def _with_headers(err: APIError, headers: dict[str, str]) -> APIError:
    err.headers = {**headers, **err.headers}
    return err


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _deadline(stream: Any, deadline: float) -> AsyncIterator[Any]:
    """The stream's items; TimeoutError once `deadline` (time.monotonic) passes."""
    it = stream.__aiter__()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        try:
            item = await asyncio.wait_for(it.__anext__(), remaining)
        except StopAsyncIteration:
            return
        yield item


async def _until_disconnected(http: Request) -> None:
    while not await http.is_disconnected():
        await asyncio.sleep(0.05)  # a cheap check; a client that left frees its batch slot within 50 ms


def create_app(ws: Workspace, settings: ServeSettings | None = None, **overrides: Any) -> FastAPI:
    """The app for `ws`; `overrides` are ServeSettings fields (`create_app(ws, max_concurrency=4)`)."""
    if settings is None:
        settings = ServeSettings(**overrides)
    elif overrides:
        settings = ServeSettings(**{**settings.model_dump(), **overrides})
    server = Server(ws, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.backend == "vllm" and not settings.upstream_url:
            await run_in_threadpool(server.start_vllm)
        yield
        await run_in_threadpool(server.close)

    app = FastAPI(title="llmops", lifespan=lifespan, version="1",
                  description="OpenAI-compatible completions over the workspace's models, adapters and chains; "
                              "chains as LangServe-style routes. Every answer carries its run id "
                              f"(`{RUN_ID_HEADER}`); `llmops lineage RUN_ID` walks back from it.")
    app.state.server, app.state.ws, app.state.settings, app.state.tracer = server, ws, settings, server.tracer
    install_handlers(app)
    # outermost last: a request holds its concurrency slot while its body arrives
    def rejected(route: str, status: int, code: str) -> None:
        server.metrics.observe(route, {}, status=status, seconds=0.0, error_code=code)

    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes, on_reject=rejected)
    app.add_middleware(ConcurrencyLimit, max_concurrency=settings.max_concurrency, in_flight=server.in_flight,
                       on_reject=rejected)

    from fastapi import Depends

    from llmops.serve.keys import require_key

    model_key = [Depends(require_key("model"))]
    stream_doc = {200: {"description": "JSON, or server-sent events when `stream` is true",
                        "content": {"text/event-stream": {}}}, **ERRORS}

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses=stream_doc, tags=["openai"],
              summary="Chat completion (OpenAI format)", dependencies=model_key)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """`model` is `BASE`, `BASE:ADAPTER[@ref]` or `chain/NAME[@ref]` (see /v1/models)."""
        return await server.complete(request, body, chat=True)

    @app.post("/v1/completions", response_model=Completion, responses=stream_doc, tags=["openai"],
              summary="Text completion (OpenAI format)", dependencies=model_key)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await server.complete(request, body, chat=False)

    @app.get("/v1/models", response_model=ModelList, tags=["openai"], summary="Model names a request may use",
             dependencies=[Depends(require_key())], responses=ERRORS)
    async def models(request: Request) -> dict:
        """Base models, `BASE:ADAPTER` for each adapter of that base, and `chain/NAME` for each chain."""
        return {"object": "list", "data": await run_in_threadpool(list_models, ws, server.loras)}

    @app.get("/healthz", tags=["ops"], summary="Liveness: the server answers and its store is readable")
    async def healthz() -> dict:
        loaded = {name: {"queue_depth": getattr(e, "queue_depth", 0), "active": getattr(e, "active", 0)}
                  for name, e in server.engines.loaded().items()}
        return {"status": "ok", "backend": settings.backend, "engines": loaded,
                "in_flight": server.in_flight.value}

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics (text format)",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = server.metrics.render(server.engines.loaded(), server.in_flight.value)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    from llmops.serve import feedback, lora_admin
    from llmops.serve.chains_api import chains_router
    from llmops.serve.keys import keys_required
    from llmops.ui import create_ui_app

    # adapters loaded by name at run time (vLLM's routes); one reloaded in place is loaded again
    server.loras = app.state.loras = lora_admin.LoraRegistry(check=lambda lora: server.engines.forget(lora.path))
    app.include_router(chains_router(server), dependencies=[Depends(require_key("chain"))])
    app.include_router(feedback.router)
    app.include_router(lora_admin.router)
    app.mount("/ui", create_ui_app(ws, api_keys_required=lambda: keys_required(ws.engine, server.settings)))
    return app
