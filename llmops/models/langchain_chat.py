"""Any llmops backend as a LangChain chat model, so it drops into LangChain code (chains, LCEL).

    chat = LLMOpsChatModel(backend=load_backend("smollm2"), max_tokens=64)
    chat.invoke("What is the capital of France?").usage_metadata
    # {'input_tokens': 37, 'output_tokens': 8, 'total_tokens': 45}

Decoding params set on the model are defaults; `invoke(..., stop=[...])` and
`.bind(max_tokens=...)` override them per call, and unknown ones raise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from llmops.errors import BackendError
from llmops.models.protocol import Backend, Generation, GenerationParams, Request

__all__ = ["LLMOpsChatModel", "to_chat_messages"]

_ROLES = {SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant"}


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            raise BackendError(f"a {type(message).__name__} holds a non-text block ({block.get('type')!r}); "
                               "llmops models take text only")
    return "".join(parts)


def to_chat_messages(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as `{role, content}` dicts (system, user, assistant)."""
    out = []
    for message in messages:
        role = next((r for cls, r in _ROLES.items() if isinstance(message, cls)), None)
        if role is None and isinstance(message, ChatMessage):
            role = message.role
        if role not in ("system", "user", "assistant"):
            raise BackendError(f"cannot send a {type(message).__name__} to an llmops model; "
                               "use system, human or AI messages")
        out.append({"role": role, "content": _text(message)})
    return out


def _usage(gen: Generation) -> dict[str, int]:
    return {"input_tokens": gen.prompt_tokens, "output_tokens": gen.completion_tokens,
            "total_tokens": gen.total_tokens}


class LLMOpsChatModel(BaseChatModel):
    """A LangChain `BaseChatModel` over an llmops `Backend`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Backend = Field(exclude=True)
    temperature: float = 0.0
    max_tokens: int = 256
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None

    @property
    def _llm_type(self) -> str:
        return "llmops"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.backend.model_id, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "top_p": self.top_p, "seed": self.seed, "stop": self.stop}

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> Request:
        params: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens,
                                  "top_p": self.top_p, "seed": self.seed, "stop": stop or self.stop}
        params.update(kwargs)
        return Request(messages=tuple(to_chat_messages(messages)), params=GenerationParams(**params))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        gen = self.backend.generate(self._request(messages, stop, kwargs))
        message = AIMessage(content=gen.text, usage_metadata=_usage(gen),
                            response_metadata={"finish_reason": gen.finish_reason, "model_name": gen.model})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        stream = self.backend.stream(self._request(messages, stop, kwargs))
        try:
            for delta in stream:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta))
                if run_manager:
                    run_manager.on_llm_new_token(delta, chunk=chunk)
                yield chunk
        finally:
            stream.close()
        gen = stream.result
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata=_usage(gen), chunk_position="last",
            response_metadata={"finish_reason": gen.finish_reason, "model_name": gen.model}))
