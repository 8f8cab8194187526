"""The OpenAI wire format: request bodies (checked), responses and stream chunks (built).

Requests accept what OpenAI's clients send. A parameter the server cannot honour is refused with a 400
naming it rather than silently ignored (`n` other than 1, `logprobs`, tools, non-zero penalties); an unknown
one is refused as OpenAI does (`unrecognized request argument`). `temperature` defaults to 0 (greedy, so an
answer can be replayed exactly), not OpenAI's 1; `max_completion_tokens` is a synonym of `max_tokens`.
A chain named as the model (`chain/NAME`) decodes with its own prompts' and steps' params: the request's
sampling params are checked but do not override them.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmops.serve.errors import APIError

__all__ = ["ChatCompletion", "ChatCompletionRequest", "Completion", "CompletionRequest", "ModelCard", "ModelList",
           "Usage", "chat_chunk", "completion_chunk"]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = Field(False, description="Send a last chunk with `usage` (and no choices) before [DONE].")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class Message(BaseModel):
    """A chat message. Content may be a string or a list of text parts (joined); roles tool/function are refused."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="`developer` is taken as `system`.")
    content: str | list[ContentPart] | None = Field(description="The text, or text parts.")
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise APIError(400, f"content parts of type {part.type!r} are not supported; send text",
                               param="messages", code="unsupported_content")
            parts.append(part.text)
        return "".join(parts)

    def plain(self) -> dict[str, str]:
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


class _Sampling(BaseModel):
    """Fields common to chat and completions."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="`BASE` (`smollm2`), `BASE:ADAPTER[@N|@alias]` or `chain/NAME[@ref]`; see /v1/models.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (the server's limit applies).")
    temperature: float | None = Field(None, ge=0, le=2, description="0 (the default) decodes greedily.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int | None = Field(None, description="Makes sampling (temperature > 0) reproducible.")
    stop: str | list[str] | None = Field(None, description="Up to 4 strings that end the generation (cut from the text).")
    n: int | None = Field(None, description="Only 1 is supported.")
    stream: bool = Field(False, description="Answer as server-sent events ending with `data: [DONE]`.")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="Recorded with the request's run.")
    frequency_penalty: float | None = Field(None, description="Only 0 is supported.")
    presence_penalty: float | None = Field(None, description="Only 0 is supported.")
    logit_bias: dict[str, float] | None = Field(None, description="Not supported.")
    logprobs: bool | int | None = Field(None, description="Not supported.")
    metadata: dict[str, Any] | None = Field(None, description="Recorded with the request's run.")
    store: bool | None = None
    service_tier: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: Any) -> Any:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop strings")
        if any(s == "" for s in stops):
            raise ValueError("an empty stop string would end every generation at once; remove it")
        return value

    def check_supported(self) -> None:
        if self.n not in (None, 1):
            raise APIError(400, "only n=1 is supported; send n requests", param="n", code="unsupported_value")
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise APIError(400, f"{name} is not supported; leave it 0", param=name, code="unsupported_value")
        if self.logit_bias:
            raise APIError(400, "logit_bias is not supported", param="logit_bias", code="unsupported_value")
        if self.logprobs not in (None, False, 0):
            raise APIError(400, "logprobs are not supported", param="logprobs", code="unsupported_value")

    def params(self, *, limit: int, default: int) -> dict[str, Any]:
        """GenerationParams keywords; `max_tokens` over `limit` is a 400."""
        self.check_supported()
        max_tokens = self.requested_max_tokens()
        name = self.max_tokens_param()
        if max_tokens is not None and max_tokens > limit:
            raise APIError(400, f"{name} is {max_tokens} but this server allows at most {limit}; ask for fewer tokens",
                           param=name, code="max_tokens_too_large")
        params: dict[str, Any] = {"max_tokens": max_tokens or min(default, limit),
                                  "temperature": self.temperature or 0.0}
        if self.top_p is not None:
            params["top_p"] = self.top_p
        if self.seed is not None:
            params["seed"] = self.seed
        if self.stop:
            params["stop"] = self.stop
        return params

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def max_tokens_param(self) -> str:
        return "max_tokens"

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: list[Message] = Field(min_length=1, description="The conversation; a chain model reads the last user message.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Synonym of max_tokens (OpenAI's newer name).")
    top_logprobs: int | None = Field(None, description="Not supported.")
    response_format: dict[str, Any] | None = Field(None, description="Only {\"type\": \"text\"}.")
    tools: list[Any] | None = Field(None, description="Not supported.")
    tool_choice: Any = Field(None, description="Not supported.")
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = Field(None, description="Not supported.")
    function_call: Any = Field(None, description="Not supported.")

    def check_supported(self) -> None:
        super().check_supported()
        for name in ("tools", "tool_choice", "functions", "function_call", "top_logprobs"):
            if getattr(self, name) not in (None, [], "none"):
                raise APIError(400, f"{name} is not supported by this server", param=name, code="unsupported_value")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise APIError(400, "only response_format {\"type\": \"text\"} is supported", param="response_format",
                           code="unsupported_value")

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def max_tokens_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    def plain_messages(self) -> list[dict[str, str]]:
        return [m.plain() for m in self.messages]

    def last_user_message(self) -> str:
        for m in reversed(self.messages):
            if m.role == "user":
                return m.text()
        raise APIError(400, "a chain model reads the last user message, and there is none", param="messages",
                       code="no_user_message")


class CompletionRequest(_Sampling):
    """POST /v1/completions."""

    prompt: str | list[str] = Field(description="The text to continue (one prompt; a list of one is accepted).")
    echo: bool | None = Field(None, description="Not supported.")
    suffix: str | None = Field(None, description="Not supported.")
    best_of: int | None = Field(None, description="Only 1 is supported.")

    def check_supported(self) -> None:
        super().check_supported()
        if self.echo:
            raise APIError(400, "echo is not supported", param="echo", code="unsupported_value")
        if self.suffix:
            raise APIError(400, "suffix is not supported", param="suffix", code="unsupported_value")
        if self.best_of not in (None, 1):
            raise APIError(400, "only best_of=1 is supported", param="best_of", code="unsupported_value")

    def text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise APIError(400, f"one prompt per request is supported, got {len(self.prompt)}; send one request each",
                           param="prompt", code="unsupported_value")
        return self.prompt[0]


# -- responses ----------------------------------------------------------------------------

class Usage(BaseModel):
    prompt_tokens: int = Field(description="Tokens of the prompt as the model saw it (chat template applied).")
    completion_tokens: int = Field(description="Tokens generated, including an end-of-sequence or cut stop string.")
    total_tokens: int


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    """A chat answer; `id` is `chatcmpl-RUN_ID` (the request's run: `llmops lineage RUN_ID`)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Completion(BaseModel):
    """A completion; `id` is `cmpl-RUN_ID`."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str = Field(description="The name to send as `model`.")
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llmops"
    root: str | None = Field(None, description="The asset version the name resolves to now.")
    parent: str | None = Field(None, description="For an adapter: its base model's name.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_chunk(id: str, model: str, created: int, *, content: str | None = None, role: bool = False,
               finish: str | None = None, usage_: dict | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk`; with `usage_` it is the usage chunk (no choices)."""
    out: dict[str, Any] = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "system_fingerprint": None}
    if usage_ is not None:
        out["choices"], out["usage"] = [], usage_
        return out
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    out["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return out


def completion_chunk(id: str, model: str, created: int, *, text: str = "", finish: str | None = None,
                     usage_: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id, "object": "text_completion", "created": created, "model": model,
                           "system_fingerprint": None}
    if usage_ is not None:
        out["choices"], out["usage"] = [], usage_
        return out
    out["choices"] = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
    return out


def now() -> int:
    return int(time.time())
