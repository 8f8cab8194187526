"""Chains over HTTP, as LangServe serves a Runnable: `/v1/chains/{name}/invoke|batch|stream`, and
`/input_schema`, `/output_schema` (JSON Schema).

    POST /v1/chains/rag-qa/invoke      {"input": {"question": "..."}}
        -> {"output": "...", "metadata": {"run_id": "...", "used": ["chain/rag-qa@2", ...]}}
    POST /v1/chains/rag-qa@2/batch     {"inputs": [{...}, {...}]}  -> {"output": [...], "metadata": {"run_ids": [...]}}
    POST /v1/chains/rag-qa/stream      {"input": {...}}  -> events `metadata` (run id), `data` (each text delta,
                                       as JSON), `end`; or `error` ({"status_code", "message"})

`{name}` is `NAME` (latest) or `NAME@ref`. Each call is one run of kind `request`, recorded off the request
path with the chain's versions as `used` edges. A chain is pinned once per version and kept loaded.
Inputs that fail the chain's input schema answer 422 (as LangServe); a chain that fails while running 500.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from llmops.errors import AliasNotFound, AssetNotFound, InvalidAlias, InvalidRef, SpecError
from llmops.serve.errors import APIError, from_exception

if TYPE_CHECKING:
    from llmops.serve.app import Server
    from llmops.serve.models import Target

__all__ = ["ChainCache", "chains_router"]

_OUTPUT_SCHEMAS = {"str": {"type": "string"}, "documents": {"type": "array", "items": {"type": "object"}},
                   "prompt": {}, "any": {}}


class InvokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Any = Field(description="The chain's inputs, as its /input_schema describes them.")
    config: dict[str, Any] | None = Field(None, description="Accepted for LangServe clients; ignored.")
    kwargs: dict[str, Any] | None = Field(None, description="Accepted for LangServe clients; ignored.")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(min_length=1, description="One input per call; each call is its own run.")
    config: dict[str, Any] | list[dict[str, Any]] | None = Field(None, description="Accepted; ignored.")
    kwargs: dict[str, Any] | None = Field(None, description="Accepted; ignored.")


class InvokeMetadata(BaseModel):
    run_id: str = Field(description="The request's run: `llmops lineage RUN_ID`.")
    used: list[str] = Field(description="Every version the answer came from.")


class InvokeResponse(BaseModel):
    output: Any
    metadata: InvokeMetadata


class BatchMetadata(BaseModel):
    run_ids: list[str]


class BatchResponse(BaseModel):
    output: list[Any]
    metadata: BatchMetadata


class ChainCache:
    """Chain versions loaded once each (pinning loads their prompts, indexes and models)."""

    def __init__(self, ws: Any, engines: Any = None):
        self._ws, self._engines = ws, engines
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str) -> Target:
        """`NAME[@ref]` (or `chain/NAME[@ref]`) to its version; 404 for an unknown chain."""
        from llmops.serve.models import Target
        from llmops.store.refs import parse_ref

        try:
            av = self._ws.registry.get(str(parse_ref(name, default_kind="chain", kinds=("chain",))), record=False)
        except (InvalidRef, InvalidAlias) as exc:
            raise APIError(404, f"{name!r} is not a chain name: {exc}", code="chain_not_found") from None
        except (AssetNotFound, AliasNotFound) as exc:
            raise APIError(404, f"no chain {name!r}: {exc}", code="chain_not_found") from None
        return Target(name=f"chain/{name}", chain=av, labels={"model": "", "adapter": "", "chain": av.name})

    async def load(self, av: Any) -> Any:
        return await run_in_threadpool(self._load, av)

    def _load(self, av: Any) -> Any:
        with self._lock:
            chain = self._loaded.get(av.ref)
            if chain is None:
                chain = self._ws.chains.load(av.ref)
                if self._engines is not None:
                    _share(chain.pinned, self._engines)
                self._loaded[av.ref] = chain
            return chain

    @staticmethod
    def text_input(chain: Any, name: str) -> str:
        """The one input a chain served as a chat model reads (the last user message)."""
        inputs = chain.pinned.spec.inputs
        text = [n for n, v in inputs.items() if v.type == "str"]
        required = [n for n, v in inputs.items() if v.required]
        if len(text) == 1 and set(required) <= set(text):
            return text[0]
        names = ", ".join(f"{n}: {v.type}" for n, v in inputs.items()) or "none"
        raise APIError(400, f"{name} takes inputs ({names}), not a single text; call "
                            f"POST /v1/chains/{chain.pinned.spec.name}/invoke with {{\"input\": {{...}}}}",
                       param="model", code="chain_needs_inputs")


def _share(pinned: Any, engines: Any) -> None:
    """Route the chain's generate steps (and its sub-chains') through the server's batchers."""
    for bound in pinned.bound.values():
        if hasattr(bound, "backend") and hasattr(bound, "params"):
            bound.backend = engines.share(bound.backend)
    for sub in pinned.subchains:
        _share(sub, engines)


def execute(chain: Any, inputs: Any, stream: bool):
    """`chain.execute` with a failure inside the chain (not its inputs) reported as a 500."""
    try:
        return (yield from chain.execute(inputs, stream=stream))
    except SpecError as exc:
        raise APIError(500, f"chain {chain.ref} failed: {exc}", type="server_error", code="chain_error") from exc


def _input_error(exc: SpecError) -> APIError:
    return APIError(422, str(exc), param="input", code="invalid_input")


def output_schema(spec: Any, plan: Any) -> dict[str, Any]:
    producer = plan.producer(spec, plan.output)
    kind = producer.output_type() if producer is not None else "any"
    return {"title": f"{spec.name} output", **_OUTPUT_SCHEMAS.get(kind, {})}


def chains_router(server: Server) -> APIRouter:
    from llmops.serve.app import Call, chain_outcome, key_name

    router = APIRouter(prefix="/v1/chains", tags=["chains"])
    cache = server.chains

    async def prepare(http: Request, route: str, name: str, inputs: list[Any]) -> tuple[list[Call], Any]:
        calls = [Call(route=route, request=i, model=f"chain/{name}") for i in inputs]
        try:
            target = await run_in_threadpool(cache.resolve, name)
            for call in calls:
                call.target = target
            for call in calls:
                call.api_key = key_name(http)
            chain = await cache.load(target.chain)
            for value in inputs:
                try:
                    chain.coerce_inputs(value)
                except SpecError as exc:
                    raise _input_error(exc) from None
        except Exception as exc:
            err = from_exception(exc)
            for call in calls:
                server.finish(call, error=err)
            raise err from None
        return calls, chain

    async def run_one(http: Request, call: Call, chain: Any, value: Any, deadline: float) -> Any:
        # streamed inside (deltas dropped) so that a client that leaves stops the generation at its next token
        stream = server.engines.relay(lambda cancelled: execute(chain, value, True))
        try:
            outcome = chain_outcome(chain, await server.wait(http, stream, deadline))
        except Exception as exc:
            err = from_exception(exc)
            server.finish(call, error=err)
            raise err from None
        server.finish(call, outcome)
        return outcome.output

    @router.post("/{name}/invoke", response_model=InvokeResponse, summary="Run a chain once (LangServe format)")
    async def invoke(name: str, body: InvokeRequest, request: Request) -> JSONResponse:
        deadline = time.monotonic() + server.settings.timeout_s
        (call,), chain = await prepare(request, "chains.invoke", name, [body.input])
        output = await run_one(request, call, chain, body.input, deadline)
        return JSONResponse({"output": output, "metadata": {"run_id": call.run_id, "used": chain.versions}},
                            headers={"x-llmops-run-id": call.run_id})

    @router.post("/{name}/batch", response_model=BatchResponse, summary="Run a chain on several inputs at once")
    async def batch(name: str, body: BatchRequest, request: Request) -> JSONResponse:
        if len(body.inputs) > server.settings.max_batch_inputs:
            raise APIError(413, f"{len(body.inputs)} inputs; this server takes at most "
                                f"{server.settings.max_batch_inputs} per batch", param="inputs",
                           code="too_many_inputs")
        deadline = time.monotonic() + server.settings.timeout_s
        calls, chain = await prepare(request, "chains.batch", name, body.inputs)
        outputs = await asyncio.gather(*(run_one(request, c, chain, v, deadline) for c, v in zip(calls, body.inputs)),
                                       return_exceptions=True)
        for out in outputs:
            if isinstance(out, BaseException):
                raise out
        run_ids = [c.run_id for c in calls]
        return JSONResponse({"output": outputs, "metadata": {"run_ids": run_ids}},
                            headers={"x-llmops-run-id": ",".join(run_ids)})

    @router.post("/{name}/stream", summary="Stream a chain's output (server-sent events, LangServe format)",
                 responses={200: {"content": {"text/event-stream": {}}}})
    async def stream(name: str, body: InvokeRequest, request: Request) -> StreamingResponse:
        deadline = time.monotonic() + server.settings.timeout_s
        (call,), chain = await prepare(request, "chains.stream", name, [body.input])
        relay = server.engines.relay(lambda cancelled: execute(chain, body.input, True))
        return StreamingResponse(_events(server, call, chain, relay, deadline), media_type="text/event-stream",
                                 headers={"x-llmops-run-id": call.run_id})

    @router.get("/{name}/input_schema", summary="JSON Schema of the chain's input")
    async def input_schema(name: str, request: Request) -> dict:
        version = await run_in_threadpool(_version, server, name)
        from llmops.chains import input_model

        return input_model(version.spec).model_json_schema()

    @router.get("/{name}/output_schema", summary="JSON Schema of the chain's output")
    async def output_schema_route(name: str, request: Request) -> dict:
        version = await run_in_threadpool(_version, server, name)
        return output_schema(version.spec, version.plan)

    return router


def _version(server: Server, name: str) -> Any:
    target = server.chains.resolve(name)
    return server.ws.chains.get(target.chain.ref)


def _sse(event: str, data: Any = None) -> str:
    if data is None:
        return f"event: {event}\n\n"
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


async def _events(server: Server, call: Any, chain: Any, relay: Any, deadline: float) -> AsyncIterator[str]:
    from llmops.serve.app import _deadline, chain_outcome

    done = False
    try:
        yield _sse("metadata", {"run_id": call.run_id, "used": chain.versions})
        async for delta in _deadline(relay, deadline):
            call.mark_first_token()
            yield _sse("data", delta)
        outcome = chain_outcome(chain, relay.result)
        done = True
        yield _sse("end")
        server.finish(call, outcome)
    except (asyncio.CancelledError, GeneratorExit):
        server.finish(call, error=APIError(499, "the client closed the connection", code="client_disconnected"))
        raise
    except Exception as exc:
        err = from_exception(exc)
        server.finish(call, error=err)
        yield _sse("error", {"status_code": err.status, "message": err.message})
    finally:
        if not done:
            relay.cancel()
