"""A backend for any OpenAI-compatible server (vLLM, llama.cpp, TGI, Ollama, `llmops serve`, OpenAI).

Chats go to `POST {base_url}/chat/completions`, completions to `POST {base_url}/completions`;
streams are read as server-sent events with `stream_options.include_usage` so the last
event carries the token counts. The API key is read from an environment variable named
in the spec, never stored in a spec.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Generator, Iterator
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from llmops.errors import BackendError
from llmops.models.protocol import Backend, FinishReason, Generation, Request

__all__ = ["OpenAIBackend", "OpenAISpec"]

log = logging.getLogger(__name__)


class OpenAISpec(BaseModel):
    """A model behind an OpenAI-compatible HTTP API."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai"] = "openai"
    base_url: str = Field(description="the API root, e.g. http://127.0.0.1:8000/v1")
    model: str | None = Field(None, description="the served model name; the server's first model when unset")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    timeout_s: float = Field(120.0, gt=0)


def _finish(reason: Any) -> FinishReason:
    return "length" if reason == "length" else "stop"


class OpenAIBackend(Backend):
    """Talks to one model on one OpenAI-compatible server over httpx."""

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", timeout_s: float = 120.0):
        self.base_url = base_url.rstrip("/")
        key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self.model_id = model or self._first_model()

    def close(self) -> None:
        self._client.close()

    # -- HTTP -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach {self.base_url}{path}: {exc} (is the server running?)") from exc
        self._check(response, path)
        return response

    def _check(self, response: httpx.Response, path: str) -> None:
        if response.status_code < 400:
            return
        try:
            detail = response.json().get("error", response.text)
            if isinstance(detail, dict):
                detail = detail.get("message", detail)
        except (ValueError, AttributeError):
            detail = response.text
        error = BackendError(f"{self.base_url}{path} answered {response.status_code}: {detail}")
        error.status_code = response.status_code  # a server in front (llmops serve) answers a client error alike
        raise error

    def _first_model(self) -> str:
        data = self._call("GET", "/models").json().get("data") or []
        if not data:
            raise BackendError(f"{self.base_url}/models lists no model; name one in the spec (`model`)")
        return str(data[0]["id"])

    def _body(self, request: Request, stream: bool) -> tuple[str, dict]:
        p = request.params
        body: dict[str, Any] = {"model": self.model_id, "temperature": p.temperature, "top_p": p.top_p,
                                "max_tokens": p.max_tokens, "stream": stream}
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        if stream:
            body["stream_options"] = {"include_usage": True}
        if request.messages is not None:
            body["messages"] = [m.model_dump() for m in request.messages]
            return "/chat/completions", body
        body["prompt"] = request.prompt
        return "/completions", body

    # -- protocol ---------------------------------------------------------------------------

    def generate(self, request: Request) -> Generation:
        path, body = self._body(request, stream=False)
        data = self._call("POST", path, body).json()
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] if request.messages is not None else choice["text"]
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"{self.base_url}{path} sent an answer without choices: {str(data)[:200]}") from exc
        usage = data.get("usage") or {}
        return Generation(text=text or "", prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)),
                          finish_reason=_finish(choice.get("finish_reason")), model=self.model_id)

    def _events(self, path: str, body: dict) -> Iterator[dict]:
        try:
            with self._client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response, path)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[len("data:"):].strip()
                    if payload == "[DONE]":
                        return
                    yield json.loads(payload)
        except httpx.HTTPError as exc:
            raise BackendError(f"the stream from {self.base_url}{path} broke: {exc}") from exc
        except ValueError as exc:
            raise BackendError(f"{self.base_url}{path} sent an event that is not JSON: {exc}") from exc

    def _stream(self, request: Request) -> Generator[str, None, Generation]:
        path, body = self._body(request, stream=True)
        parts: list[str] = []
        finish: FinishReason = "stop"
        usage: dict | None = None
        for event in self._events(path, body):
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                if request.messages is not None:
                    delta = (choice.get("delta") or {}).get("content") or ""
                else:
                    delta = choice.get("text") or ""
                if delta:
                    parts.append(delta)
                    yield delta
                if choice.get("finish_reason"):
                    finish = _finish(choice["finish_reason"])
        if usage is None:
            log.warning("%s sent no usage in its stream; token counts are reported as 0", self.base_url)
            usage = {}
        return Generation(text="".join(parts), prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)), finish_reason=finish,
                          model=self.model_id)
