"""Request limits as pure ASGI middleware, answered in the OpenAI error format before any route runs.

- `BodyLimit`: a body over `max_body_bytes` is a 413, judged by Content-Length when given and by the
  bytes actually received otherwise (a chunked upload cannot slip past); the body is read whole before
  the route runs.
- `ConcurrencyLimit`: at most `max_concurrency` generation requests (POST under /v1/) in flight; one
  more is a 429 with `Retry-After` at once rather than a queue the client cannot see. A request counts
  until its response (a whole stream) ends.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from llmops.serve.errors import error_body

__all__ = ["BodyLimit", "ConcurrencyLimit", "InFlight"]

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


async def _send_error(send: Callable, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def route_of(path: str) -> str:
    """The metrics label of a path: `/v1/chat/completions` -> `chat.completions`, `/v1/chains/x/invoke` ->
    `chains.invoke`."""
    parts = [p for p in path.split("/") if p][1:] if path.startswith("/v1/") else [path.strip("/") or "/"]
    if parts[:1] == ["chains"] and len(parts) == 3:
        return f"chains.{parts[2]}"
    return ".".join(parts)[:64]


Rejected = Callable[[str, int, str], None]  # (route, status, code): counted in the metrics


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int, on_reject: Rejected | None = None):
        self.app, self.limit, self.on_reject = app, max_body_bytes, on_reject

    async def _reject(self, scope: Scope, send: Callable) -> None:
        if self.on_reject is not None:
            self.on_reject(route_of(scope.get("path", "")), 413, "request_too_large")
        await _send_error(send, 413, self._error())

    def _error(self) -> dict:
        return error_body(f"the request body is larger than this server's limit of {self.limit} bytes; "
                          "send less (or raise --max-body-bytes)", type="invalid_request_error",
                          code="request_too_large")

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.limit
                except ValueError:
                    too_large = False
                if too_large:
                    return await self._reject(scope, send)
        # Read the body here (it is small by then) so that going over the limit is a 413, not a parse error.
        parts, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before its body was complete
                return
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.limit:
                return await self._reject(scope, send)
            parts.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()  # then disconnects, as the server reports them

        await self.app(scope, replay, send)


def is_generation(scope: Scope) -> bool:
    return scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path", "").startswith("/v1/") \
        and scope["path"] not in ("/v1/feedback", "/v1/load_lora_adapter", "/v1/unload_lora_adapter")


class InFlight:
    """The count of generation requests being answered (read by /metrics); only touched on the event loop."""

    value = 0


class ConcurrencyLimit:
    def __init__(self, app: ASGIApp, max_concurrency: int, in_flight: InFlight, on_reject: Rejected | None = None):
        self.app, self.limit, self.in_flight, self.on_reject = app, max_concurrency, in_flight, on_reject

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if not is_generation(scope):
            return await self.app(scope, receive, send)
        if self.in_flight.value >= self.limit:
            if self.on_reject is not None:
                self.on_reject(route_of(scope["path"]), 429, "too_many_requests")
            return await _send_error(send, 429, error_body(
                f"the server is answering its limit of {self.limit} requests at once; retry shortly",
                type="rate_limit_error", code="too_many_requests"), {"retry-after": "1"})
        self.in_flight.value += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.value -= 1
