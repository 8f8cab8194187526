"""An in-process vLLM engine, for teams with a CUDA GPU.

vLLM is an optional extra (`pip install 'llmops[vllm]'`) and is imported only when this
backend is built. The offline engine does not stream, so a stream yields the whole text
once; `batch` hands every request to the engine in one call, which is where vLLM shines.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmops.errors import BackendError
from llmops.models.protocol import Backend, Generation, Request

__all__ = ["VLLMBackend", "VLLMSpec"]


class VLLMSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["vllm"] = "vllm"
    model: str = Field(description="a local model folder (models are never downloaded at run time)")
    adapter_path: str | None = Field(None, description="a LoRA adapter folder saved by PEFT")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="passed to vllm.LLM, e.g. gpu_memory_utilization")


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise BackendError("the vLLM backend needs vLLM and a CUDA GPU: pip install 'llmops[vllm]' "
                           "(or use the default transformers backend)") from exc
    return vllm


class VLLMBackend(Backend):
    def __init__(self, model: str | os.PathLike[str], *, adapter_path: str | os.PathLike[str] | None = None,
                 **engine_args: Any):
        vllm = _import_vllm()
        self._vllm = vllm
        self.model_id = Path(os.fspath(model)).name
        self._lora = None
        if adapter_path is not None:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest(Path(adapter_path).name, 1, os.fspath(adapter_path))
            self.model_id += "+" + Path(adapter_path).name
            engine_args.setdefault("enable_lora", True)
        self._llm = vllm.LLM(model=os.fspath(model), **engine_args)
        self._tokenizer = self._llm.get_tokenizer()

    def _prompt(self, request: Request) -> dict[str, list[int]]:
        tok = self._tokenizer
        if request.messages is not None:
            text = tok.apply_chat_template([m.model_dump() for m in request.messages],
                                           add_generation_prompt=True, tokenize=False)
            return {"prompt_token_ids": tok(text, add_special_tokens=False)["input_ids"]}
        return {"prompt_token_ids": tok(request.prompt)["input_ids"]}

    def _sampling(self, request: Request) -> Any:
        p = request.params
        return self._vllm.SamplingParams(temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                                         stop=list(p.stop) or None, seed=p.seed)

    def batch(self, requests: Sequence[Request]) -> list[Generation]:
        outputs = self._llm.generate([self._prompt(r) for r in requests], [self._sampling(r) for r in requests],
                                     lora_request=self._lora, use_tqdm=False)
        results = []
        for out in outputs:
            best = out.outputs[0]
            results.append(Generation(
                text=best.text, prompt_tokens=len(out.prompt_token_ids), completion_tokens=len(best.token_ids),
                finish_reason="length" if best.finish_reason == "length" else "stop", model=self.model_id))
        return results

    def _stream(self, request: Request) -> Generator[str, None, Generation]:
        result = self.batch([request])[0]
        if result.text:
            yield result.text
        return result
