"""How a server runs: address, backend, limits. One pydantic model, checked before anything starts.

`llmops serve` builds it from its options; tests build it directly (`ServeSettings(max_concurrency=1)`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ServeSettings"]

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


class ServeSettings(BaseModel):
    """Settings of one server. Limits answer in the OpenAI error format (see `llmops.serve.errors`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address to bind; loopback by default so nothing is exposed by accident.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to bind.")
    backend: Literal["transformers", "openai", "vllm"] = Field(
        "transformers", description="`transformers`: in-process, batched; `openai`: forward to `upstream_url`; "
                                    "`vllm`: start and supervise `vllm serve`, then forward to it.")
    upstream_url: str | None = Field(None, description="API root of the OpenAI-compatible server the `openai` backend "
                                                       "forwards to, e.g. http://127.0.0.1:8001/v1.")
    vllm_model: str | None = Field(None, description="The model the `vllm` backend starts `vllm serve` on "
                                                     "(default: smollm2); not for the other backends.")
    vllm: dict[str, Any] = Field(default_factory=dict, description="llmops.models.vllm_server.VLLMSettings fields "
                                                                   "(max_lora_rank, extra_args, command, ...).")
    api_keys_required: bool | None = Field(
        None, description="Require `Authorization: Bearer KEY`; unset means: required as soon as a key exists.")
    max_body_bytes: int = Field(1_000_000, ge=1024, le=1 << 30, description="Largest request body (413 beyond).")
    max_tokens_limit: int = Field(4096, ge=1, le=32768, description="Largest `max_tokens` a request may ask for (400 beyond).")
    default_max_tokens: int = Field(256, ge=1, le=32768, description="`max_tokens` of a request that gives none.")
    max_concurrency: int = Field(64, ge=1, le=100_000, description="Generation requests in flight at once (429 beyond).")
    timeout_s: float = Field(300.0, gt=0, le=86_400, allow_inf_nan=False,
                             description="Longest a request may take; beyond it the answer is 503 (or an error event "
                                         "in a stream) and its generation is cancelled.")
    max_batch_size: int = Field(8, ge=1, le=1024, description="Rows one batched forward pass decodes (transformers).")
    batch_wait_ms: float = Field(5.0, ge=0, le=10_000, allow_inf_nan=False,
                                 description="How long the batcher waits for more requests to join a batch.")
    max_queue: int = Field(256, ge=1, le=1_000_000, description="Requests waiting for a batch slot (429 beyond).")
    max_batch_inputs: int = Field(64, ge=1, le=10_000, description="Inputs in one /v1/chains/NAME/batch call.")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        if not _HOSTNAME.match(value):
            raise ValueError(f"{value[:80]!r} is not an IP address or a host name (e.g. 127.0.0.1, 0.0.0.0, ::1, localhost)")
        return value

    @field_validator("upstream_url")
    @classmethod
    def _upstream(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import httpx

        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ValueError(f"{value[:80]!r} is not a URL ({exc})") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{value[:80]!r} is not an http(s) URL such as http://127.0.0.1:8001/v1")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _backend_needs(self) -> ServeSettings:
        if self.backend == "openai" and not self.upstream_url:
            raise ValueError("the openai backend forwards to another server: give its API root as upstream_url "
                             "(--upstream http://HOST:PORT/v1)")
        if self.backend == "transformers" and self.upstream_url:
            raise ValueError("upstream_url only applies to the openai and vllm backends (--backend openai)")
        if self.backend == "vllm" and self.upstream_url and (self.vllm_model is not None or self.vllm):
            raise ValueError("with upstream_url the vllm backend forwards to a running vLLM; vllm_model and vllm "
                             "settings only apply when llmops starts it")
        if (self.vllm_model is not None or self.vllm) and self.backend != "vllm":
            raise ValueError("vllm_model and vllm settings only apply to the vllm backend (--backend vllm)")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_limit "
                             f"({self.max_tokens_limit})")
        return self
