"""Errors in the OpenAI format, `{"error": {"message", "type", "param", "code"}}`, with the status a client expects.

    status  type                      when
    400     invalid_request_error     a malformed body, an unsupported parameter (`n` != 1, tools), `max_tokens` over
                                      the server's limit, a prompt longer than the model's context, a chain with other
                                      inputs than one string named as a chat model
    401     authentication_error      a key is required and none (or an unknown or revoked one) was sent
    403     permission_error          the key does not cover that model or chain
    404     not_found_error           an unknown model, adapter, chain or ref (`code`: model_not_found)
    413     invalid_request_error     a body over `max_body_bytes` (`code`: request_too_large)
    422     invalid_request_error     a chain route's input that fails the chain's input schema (as LangServe)
    429     rate_limit_error          `max_concurrency` requests in flight, or the batch queue is full; `Retry-After`
    500     server_error              a chain failed while running (its parse step found no JSON, ...)
    503     service_unavailable_error the backend failed (a crashed engine, an unreachable upstream) or the request ran
                                      past `timeout_s` (`code`: timeout); the server keeps serving

An upstream server's client errors (400, 404, 413, 422, 429 from the server the openai/vllm backend
forwards to) are passed on with their status.

OpenAI's clients map these statuses to their exceptions (`openai.BadRequestError`, `NotFoundError`,
`RateLimitError`, `InternalServerError` for 503, …). Timeouts answer 503 rather than 504 because the server
itself, not a gateway, gave up; OpenAI's clients retry both alike.
"""

from __future__ import annotations

from typing import Any

__all__ = ["APIError", "error_body", "install_handlers"]

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 503: "service_unavailable_error"}


class APIError(Exception):
    """An error answered to the client in the OpenAI format."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "server_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def from_exception(exc: BaseException) -> APIError:
    """The APIError a route's exception answers as: llmops errors by class, anything else a 503."""
    from llmops.errors import AliasNotFound, AssetNotFound, BackendError, InvalidRef, NotFound, SpecError

    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, (AssetNotFound, AliasNotFound, NotFound)):
        return APIError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, InvalidRef):
        return APIError(400, str(exc), param="model", code="invalid_model")
    if isinstance(exc, BackendError):
        text = str(exc)
        upstream = getattr(exc, "status_code", None)  # an upstream server's answer (openai/vllm backends)
        if upstream in (400, 404, 413, 422, 429):
            return APIError(upstream, text, code="upstream_error",
                            headers={"retry-after": "1"} if upstream == 429 else None)
        if "overloaded" in text:  # the batcher's queue is full
            return APIError(429, text, code="queue_full", headers={"retry-after": "1"})
        if "shorten the prompt" in text:  # the transformers backend's context-length check
            return APIError(400, text, param="messages", code="context_length_exceeded")
        return APIError(503, f"the backend failed: {text}", code="backend_error")
    if isinstance(exc, SpecError):
        return APIError(400, str(exc), code="invalid_input")
    if isinstance(exc, TimeoutError):
        return APIError(503, "the request ran past the server's timeout; retry, or ask for fewer tokens",
                        code="timeout")
    return APIError(503, f"the server failed to answer: {type(exc).__name__}: {exc}", code="internal_error")


def _validation_message(errors: list[dict]) -> tuple[str, str | None]:
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid request")
    if first.get("type") == "extra_forbidden":
        msg = f"unrecognized request argument supplied: {param}"
    elif first.get("type") == "json_invalid":
        msg = "the body is not valid JSON"
        param = None
    elif param:
        msg = f"{param}: {msg}"
    return msg, param


def install_handlers(app: Any) -> None:
    """Answer every error in the OpenAI format: APIError, FastAPI's validation errors, HTTP errors, the rest."""
    import logging

    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    log = logging.getLogger("llmops.serve")

    def respond(err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(APIError)
    async def _api(request, exc: APIError):
        return respond(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        message, param = _validation_message(exc.errors())
        # chain routes answer 422 as LangServe does; the OpenAI routes 400 as OpenAI does
        status = 422 if request.url.path.startswith("/v1/chains/") else 400
        return respond(APIError(status, message, param=param, code="invalid_value"))

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        return respond(APIError(exc.status_code, message, headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def _other(request, exc: Exception):
        err = from_exception(exc)
        if err.code == "internal_error":
            log.exception("unexpected error on %s", request.url.path)
        return respond(err)
