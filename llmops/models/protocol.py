"""The one boundary between llmops and whatever produces text.

Chains (their `generate` step), the LangChain chat model adapter and the tests
call a `Backend`; a backend (transformers, vLLM, a remote OpenAI-compatible
server) implements a single method, `_stream`, much as an httpx transport
implements `handle_request`.
Everything else here is plain values:

    request = Request.chat([{"role": "user", "content": "Hi"}], max_tokens=32)
    for delta in backend.stream(request):      # text deltas, as they come
        ...
    gen = backend.generate(request)            # Generation(text=..., prompt_tokens=..., ...)
    gens = backend.batch([request, request])   # one Generation per request, in order

Decoding is greedy by default (`temperature=0`) so that chain runs and tests are
reproducible; sampling is opt-in and reproducible too when `seed` is given.
"""

from __future__ import annotations

import abc
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from llmops.errors import BackendError

__all__ = [
    "Backend",
    "ChatMessage",
    "FinishReason",
    "Generation",
    "GenerationParams",
    "GenerationStream",
    "Request",
]

FinishReason = Literal["stop", "length"]

DEFAULT_MAX_TOKENS = 256


def check_stop(value: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse an empty stop string (shared with the prompt spec's model_params)."""
    if any(s == "" for s in value):
        raise ValueError("an empty stop string would end every generation at once; remove it")
    return value


class GenerationParams(BaseModel):
    """How to decode. Unknown keys are an error so a typo never silently changes decoding."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    temperature: float = Field(
        0.0, ge=0.0, le=2.0,
        description="0 means greedy (argmax): the same input gives the same output on the same machine.")
    max_tokens: int = Field(
        DEFAULT_MAX_TOKENS, ge=1, le=32768,
        validation_alias=AliasChoices("max_tokens", "max_new_tokens"),
        description="Upper bound on generated tokens (`max_new_tokens` is accepted as a synonym).")
    stop: tuple[str, ...] = Field(
        (), description="Strings that end the generation; the text is cut before the first one found.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass; ignored when greedy.")
    seed: int | None = Field(None, description="Seeds sampling so that temperature > 0 is reproducible.")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_tuple(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_stop(value)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class ChatMessage(BaseModel):
    """One chat turn. Only role and content reach the model; extra OpenAI fields (`name`) are dropped."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class Request(BaseModel):
    """A chat (`messages`) or a completion (`prompt`), never both, plus how to decode it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    params: GenerationParams = GenerationParams()

    @model_validator(mode="after")
    def _exactly_one_input(self) -> Request:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give either `messages` (chat) or `prompt` (completion), not both or neither")
        if self.messages is not None and not self.messages:
            raise ValueError("`messages` is empty; a chat needs at least one message")
        return self

    @classmethod
    def chat(cls, messages: Sequence[Mapping[str, Any] | ChatMessage], **params: Any) -> Request:
        return cls(messages=tuple(messages), params=GenerationParams(**params))

    @classmethod
    def completion(cls, prompt: str, **params: Any) -> Request:
        return cls(prompt=prompt, params=GenerationParams(**params))


@dataclass(frozen=True)
class Generation:
    """What a backend produced for one request.

    `completion_tokens` counts every token the model generated, including the
    end-of-sequence token or the tokens of a stop string that was cut from `text`,
    because that is the work done (and what vLLM and OpenAI report).
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    model: str

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class GenerationStream:
    """An iterator of text deltas whose `result` (a `Generation`) is ready once it is exhausted.

    Wraps a generator that yields `str` deltas and *returns* the Generation. Closing the
    stream (or dropping it) stops the generation at the next token.
    """

    def __init__(self, gen: Generator[str, None, Generation]):
        self._gen = gen
        self._result: Generation | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._result is not None:
            raise StopIteration
        try:
            return next(self._gen)
        except StopIteration as stop:
            self._result = stop.value
            raise

    def close(self) -> None:
        self._gen.close()

    @property
    def result(self) -> Generation:
        if self._result is None:
            raise BackendError("the stream has not finished yet; iterate it to the end before reading `result`")
        return self._result


class Backend(abc.ABC):
    """A text generator. Subclasses implement `_stream`; `batch` may be overridden to batch for real.

    `model_id` names the model in each Generation (and so in chain run traces).
    """

    model_id: str = "unknown"

    @abc.abstractmethod
    def _stream(self, request: Request) -> Generator[str, None, Generation]:
        """Yield text deltas, then return the Generation whose text is their concatenation."""

    def stream(self, request: Request) -> GenerationStream:
        return GenerationStream(self._stream(request))

    def generate(self, request: Request) -> Generation:
        stream = self.stream(request)
        for _ in stream:
            pass
        return stream.result

    def batch(self, requests: Sequence[Request]) -> list[Generation]:
        """One Generation per request, in order; the same results as calling `generate` on each."""
        return [self.generate(r) for r in requests]

    # Conveniences: keyword params go to GenerationParams (so typos raise).
    def chat(self, messages: Sequence[Mapping[str, Any] | ChatMessage], **params: Any) -> Generation:
        return self.generate(Request.chat(messages, **params))

    def complete(self, prompt: str, **params: Any) -> Generation:
        return self.generate(Request.completion(prompt, **params))

    def stream_chat(self, messages: Sequence[Mapping[str, Any] | ChatMessage], **params: Any) -> GenerationStream:
        return self.stream(Request.chat(messages, **params))

    def stream_complete(self, prompt: str, **params: Any) -> GenerationStream:
        return self.stream(Request.completion(prompt, **params))

    def close(self) -> None:
        """Release connections or engines; a no-op for in-process models."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_id}>"
