"""Generation backends behind one protocol (see `protocol.py`), and `load_backend` to pick one.

    backend = load_backend("smollm2")                                  # the embedded default (transformers)
    backend = load_backend("path/to/hf-folder", adapter_path="adapters/qa-lora")
    backend = load_backend("http://127.0.0.1:8000/v1#smollm2")         # any OpenAI-compatible server
    backend = load_backend("vllm:/models/llama")                       # needs pip install 'llmops[vllm]'
    backend = load_backend(ws.registry.get("model/smollm2").spec)     # a registered model asset
    ws.registry.push("model", "smollm2", spec=model_spec("smollm2"))  # registering one (pinned by fingerprint)

Dispatch is a list of functions tried in order; the first that recognises the input
builds the backend, and an input none recognises gets an error listing what is supported.
Heavy libraries (torch, transformers, vllm) load only when a backend that needs them is built.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from llmops.errors import BackendError, SpecError
from llmops.models.fingerprint import ModelFingerprint, fingerprint, model_spec
from llmops.models.protocol import Backend, ChatMessage, Generation, GenerationParams, GenerationStream, Request
from llmops.models.sources import DEFAULT_MODEL, is_local_source

__all__ = [
    "Backend",
    "ChatMessage",
    "DEFAULT_MODEL",
    "Generation",
    "GenerationParams",
    "GenerationStream",
    "ModelFingerprint",
    "Request",
    "fingerprint",
    "load_backend",
    "model_spec",
]

SUPPORTED = (
    "'smollm2' (the embedded SmolLM2-135M-Instruct), a local Hugging Face model folder or .gguf file, "
    "'http(s)://host:port/v1#model' (an OpenAI-compatible server), 'vllm:<model folder>', "
    "a spec dict with backend 'transformers', 'openai' or 'vllm', a model asset, or a Backend"
)

Dispatcher = Callable[[Any, "str | None"], "Backend | None"]


def _from_backend(obj: Any, adapter_path: str | None) -> Backend | None:
    if not isinstance(obj, Backend):
        return None
    if adapter_path is not None:
        raise BackendError("adapter_path cannot be applied to an already built backend; pass it when building it")
    return obj


def _from_spec(obj: Any, adapter_path: str | None) -> Backend | None:
    if hasattr(obj, "spec") and getattr(obj, "kind", None) == "model":  # a registry AssetVersion
        obj = obj.spec
    if not isinstance(obj, Mapping):
        return None
    kind = obj.get("backend", "transformers")
    try:
        if kind == "transformers":
            from llmops.models.transformers_backend import TransformersBackend, TransformersSpec

            spec = TransformersSpec.model_validate(obj)
            if spec.fingerprint is not None:
                actual = fingerprint(spec.source).digest
                if actual != spec.fingerprint:
                    raise BackendError(
                        f"the model files at {spec.source!r} changed since the model was registered "
                        f"(fingerprint {actual[:12]} != {spec.fingerprint[:12]}); restore them or push the "
                        "model again with a new model_spec()")
            return TransformersBackend(spec.source, adapter_path=adapter_path or spec.adapter_path,
                                       max_batch_size=spec.max_batch_size, device=spec.device)
        if kind == "openai":
            from llmops.models.openai_backend import OpenAIBackend, OpenAISpec

            ospec = OpenAISpec.model_validate(obj)
            _no_adapter(adapter_path, "openai")
            return OpenAIBackend(ospec.base_url, ospec.model, api_key_env=ospec.api_key_env,
                                 timeout_s=ospec.timeout_s)
        if kind == "vllm":
            from llmops.models.vllm_backend import VLLMBackend, VLLMSpec

            vspec = VLLMSpec.model_validate(obj)
            return VLLMBackend(vspec.model, adapter_path=adapter_path or vspec.adapter_path, **vspec.engine_args)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SpecError(err["msg"], field=".".join(str(x) for x in err["loc"]) or None,
                        fix=f"see the fields of the {kind} backend spec") from exc
    raise SpecError(f"unknown backend {kind!r}", field="backend", fix="use 'transformers', 'openai' or 'vllm'")


def _no_adapter(adapter_path: str | None, kind: str) -> None:
    if adapter_path is not None:
        raise BackendError(f"the {kind} backend cannot apply a local adapter; serve the adapter on the server")


def _from_url(obj: Any, adapter_path: str | None) -> Backend | None:
    if not isinstance(obj, str) or not obj.startswith(("http://", "https://")):
        return None
    from llmops.models.openai_backend import OpenAIBackend

    _no_adapter(adapter_path, "openai")
    base_url, _, model = obj.partition("#")
    return OpenAIBackend(base_url, model or None)


def _from_vllm_name(obj: Any, adapter_path: str | None) -> Backend | None:
    if not isinstance(obj, str) or not obj.startswith("vllm:"):
        return None
    from llmops.models.vllm_backend import VLLMBackend

    return VLLMBackend(obj[len("vllm:"):], adapter_path=adapter_path)


def _from_local(obj: Any, adapter_path: str | None) -> Backend | None:
    if not isinstance(obj, (str, os.PathLike)) or not is_local_source(obj):
        return None
    from llmops.models.transformers_backend import TransformersBackend

    return TransformersBackend(obj, adapter_path=adapter_path)


DISPATCHERS: list[Dispatcher] = [_from_backend, _from_spec, _from_url, _from_vllm_name, _from_local]


def load_backend(spec_or_name: Any = DEFAULT_MODEL, adapter_path: str | os.PathLike[str] | None = None) -> Backend:
    """Build the backend `spec_or_name` describes (see the module docstring); first match wins."""
    adapter = os.fspath(adapter_path) if adapter_path is not None else None
    for dispatch in DISPATCHERS:
        backend = dispatch(spec_or_name, adapter)
        if backend is not None:
            return backend
    raise BackendError(f"cannot load a generation backend from {spec_or_name!r}; supported: {SUPPORTED}")
