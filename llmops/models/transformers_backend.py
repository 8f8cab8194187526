"""The default backend: a local causal LM run by transformers on the CPU.

Decoding is a small explicit loop over the model's forward pass with its KV cache,
rather than `model.generate`, because the loop gives what the protocol promises
without threads: streamed deltas, stop strings cut exactly, a per-request seeded
sampler (no global RNG), and a stream that stops the moment its consumer does.
Batches are left-padded and decoded together.

Loaded models are cached per process, and a GGUF's de-quantised weights are also saved once as
safetensors in the user cache (llmops.cachedir): de-quantising SmolLM2 takes ~18 s, loading the
saved weights ~0.2 s.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import random
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmops.errors import BackendError
from llmops.models.fingerprint import ModelFingerprint, fingerprint
from llmops.models.protocol import Backend, FinishReason, Generation, GenerationParams, Request
from llmops.models.sources import DEFAULT_MODEL, ModelSource, resolve_source
from llmops.models.stops import cut_at_stop, emittable

__all__ = ["TransformersBackend", "TransformersSpec", "clear_model_cache"]

log = logging.getLogger(__name__)

# Nothing reaches a model hub at run time (from_pretrained also gets local_files_only=True).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class TransformersSpec(BaseModel):
    """A transformers model as a spec (the `spec` of a `model/<name>` asset)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers"] = "transformers"
    source: str = Field(DEFAULT_MODEL, description="'smollm2', a Hugging Face model folder or a .gguf file")
    adapter_path: str | None = Field(None, description="a LoRA adapter folder saved by PEFT")
    fingerprint: str | None = Field(None, description="if set, loading checks the files still hash to it")
    max_batch_size: int = Field(8, ge=1, description="rows decoded together by `batch`")


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    load_seconds: float


_cache: dict[tuple[str, ...], _Loaded] = {}
_cache_lock = threading.Lock()


def clear_model_cache() -> None:
    """Forget every loaded model (frees memory; the next backend loads again)."""
    with _cache_lock:
        _cache.clear()


def _load_base(source: ModelSource) -> _Loaded:
    key = (str(source.folder), source.gguf_file or "")
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        folder, kwargs = source.folder, {"local_files_only": True}
        converted = _converted_dir(source) if source.gguf_file else None
        if converted is not None and converted.exists():
            folder = converted
        elif source.gguf_file:
            kwargs["gguf_file"] = source.gguf_file
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load the model in {folder}: {exc}") from exc
        model.to("cpu").eval()
        if converted is not None and folder != converted:
            _save_converted(model, tokenizer, converted)
        loaded = _Loaded(model, tokenizer, time.perf_counter() - started)
        log.info("loaded %s in %.1f s", source.model_id, loaded.load_seconds)
        _cache[key] = loaded
        return loaded


def _converted_dir(source: ModelSource) -> Path:
    """Cache folder for a GGUF's de-quantised weights, keyed by the file and the transformers version."""
    import transformers

    from llmops.cachedir import user_cache_dir
    from llmops.digests import sha256_hex

    gguf = (source.folder / source.gguf_file).resolve()
    stat = gguf.stat()
    key = f"{gguf}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    return user_cache_dir("models") / f"{gguf.stem}-{sha256_hex(key)[:16]}"


def _save_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Save de-quantised weights as safetensors (temp folder + rename); a failure only costs speed."""
    from llmops.atomic import atomic_dir

    saved = {name: getattr(model, name) for name in ("hf_quantizer",) if hasattr(model, name)}
    qconfig = getattr(model.config, "quantization_config", None)
    try:
        # the weights are already plain fp32 tensors; the GGUF quantizer only blocks serialisation
        model.hf_quantizer = None
        if qconfig is not None:
            del model.config.quantization_config
        with atomic_dir(target) as tmp:  # another process that saved first keeps its copy
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except Exception as exc:  # read-only home, disk full: load from the GGUF next time
        log.warning("could not cache de-quantised weights in %s: %s", target, exc)
    finally:
        for name, value in saved.items():
            setattr(model, name, value)
        if qconfig is not None:
            model.config.quantization_config = qconfig


def _load(source: ModelSource, adapter_path: str | None) -> _Loaded:
    base = _load_base(source)
    if adapter_path is None:
        return base
    adapter = Path(adapter_path).expanduser().resolve()
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise BackendError(f"{adapter} is not a PEFT adapter folder: it has no adapter_config.json "
                           "(save one with peft_model.save_pretrained(folder))")
    # The mtime is in the key so that an adapter retrained into the same folder is reloaded.
    key = (str(source.folder), source.gguf_file or "", str(adapter), str(config.stat().st_mtime_ns))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    from peft import PeftModel

    started = time.perf_counter()
    # PEFT injects layers in place, so wrap a copy: the cached base stays clean for other users.
    try:
        peft_model = PeftModel.from_pretrained(copy.deepcopy(base.model), str(adapter), local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise BackendError(f"cannot apply the adapter in {adapter} to {source.model_id}: {exc}") from exc
    # Merging folds the low-rank update into the weights: same outputs, no per-token adapter cost.
    model = peft_model.merge_and_unload().eval()
    loaded = _Loaded(model, base.tokenizer, base.load_seconds + time.perf_counter() - started)
    with _cache_lock:
        _cache[key] = loaded
    return loaded


@dataclass
class _Row:
    """The decoding state of one sequence."""

    prompt_ids: list[int]
    limit: int          # max new tokens: max_tokens, or less where the context window ends
    ids: list[int] = field(default_factory=list)
    text: str = ""      # the decoded text, cut at a stop string
    ready: str = ""     # the prefix of `text` that later tokens cannot change
    emitted: str = ""   # what has been streamed so far; the final text
    finish: FinishReason | None = None

    def flush(self) -> str:
        """The next streamable delta (everything left, once the row is finished)."""
        ready = self.text if self.finish else self.ready
        if not ready.startswith(self.emitted):
            # Decoding a longer sequence rewrote earlier text; what was streamed stands.
            log.warning("decoded text changed after it was streamed; keeping the streamed text")
            return ""
        delta = ready[len(self.emitted):]
        self.emitted = ready
        return delta


class TransformersBackend(Backend):
    """A local causal LM (a Hugging Face folder or a GGUF file), optionally with a LoRA adapter."""

    def __init__(self, source: str | os.PathLike[str] = DEFAULT_MODEL, *,
                 adapter_path: str | os.PathLike[str] | None = None, max_batch_size: int = 8):
        self.source = resolve_source(source)
        self.adapter_path = os.fspath(adapter_path) if adapter_path is not None else None
        self.max_batch_size = max_batch_size
        loaded = _load(self.source, self.adapter_path)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.load_seconds = loaded.load_seconds
        self.model_id = self.source.model_id
        if self.adapter_path:
            self.model_id += "+" + Path(self.adapter_path).name
        self._eos_ids = self._find_eos_ids()
        forward = inspect.signature(self.model.forward).parameters
        # transformers 5 renamed `past_key_values` to `cache`; support both.
        self._cache_kw = "cache" if "cache" in forward else "past_key_values"
        self._keep_kw = "logits_to_keep" in forward
        config = self.model.config
        self._max_positions = getattr(config, "max_position_embeddings", None)
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (min(self._eos_ids) if self._eos_ids else 0)

    def fingerprint(self, cache_dir: str | os.PathLike[str] | None = None) -> ModelFingerprint:
        """The base model's fingerprint (for lineage; an adapter is versioned as its own asset)."""
        folder = self.source.folder
        return fingerprint(folder / self.source.gguf_file if self.source.gguf_file else folder, cache_dir=cache_dir)

    def _find_eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for value in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(v for v in value if isinstance(v, int))
        return frozenset(ids)

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, request: Request) -> list[int]:
        """The prompt token ids the model sees for `request` (chat template applied for chats)."""
        tok = self.tokenizer
        if request.messages is not None:
            if not getattr(tok, "chat_template", None):
                raise BackendError(f"{self.model_id} has no chat template; send a completion (`prompt`) "
                                   "or use a chat model")
            text = tok.apply_chat_template([m.model_dump() for m in request.messages],
                                           add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(request.prompt)["input_ids"]
            if not ids:
                if tok.bos_token_id is None:
                    raise BackendError("the prompt is empty and the model has no BOS token to start from; "
                                       "give a non-empty prompt")
                ids = [tok.bos_token_id]
        if self._max_positions is not None and len(ids) >= self._max_positions:
            raise BackendError(f"the prompt has {len(ids)} tokens but {self.model_id} accepts at most "
                               f"{self._max_positions}; shorten the prompt")
        return list(ids)

    # -- decoding ---------------------------------------------------------------------------

    def _decode_text(self, row: _Row, stops: Sequence[str]) -> None:
        ids = [i for i in row.ids if i not in self._eos_ids]
        full = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        row.text, hit = cut_at_stop(full, stops)
        if hit:
            row.finish = "stop"
        row.ready = emittable(row.text, stops)

    def _forward(self, **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.model(**kwargs)

    def _pick(self, logits: Any, params: GenerationParams, generators: list[Any]) -> list[int]:
        import torch

        if params.greedy:
            return logits.argmax(dim=-1).tolist()
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs > params.top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        return [int(torch.multinomial(probs[i], 1, generator=g).item()) for i, g in enumerate(generators)]

    def _run(self, prompts: list[list[int]], params: GenerationParams) -> Generator[list[_Row], None, None]:
        """Decode all `prompts` together, yielding the rows after every new token."""
        import torch

        window = self._max_positions or 1 << 62
        rows = [_Row(prompt_ids=p, limit=min(params.max_tokens, window - len(p))) for p in prompts]
        longest = max(len(p) for p in prompts)
        # One sampler per row, each seeded alike, so a batched row samples as it would alone.
        generators = [] if params.greedy else [
            torch.Generator().manual_seed(params.seed if params.seed is not None
                                          else random.SystemRandom().randrange(2**63))
            for _ in rows]

        input_ids = torch.full((len(rows), longest), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, longest - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, longest - len(p):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if self._keep_kw else {}
        out = self._forward(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                            use_cache=True, **extra)
        for _ in range(max(row.limit for row in rows)):
            next_ids = self._pick(out.logits[:, -1, :], params, generators)
            for row, token in zip(rows, next_ids):
                if row.finish:
                    continue
                row.ids.append(token)
                if token in self._eos_ids:
                    row.finish = "stop"
                else:
                    self._decode_text(row, params.stop)
                if not row.finish and len(row.ids) >= row.limit:
                    row.finish = "length"
            yield rows
            if all(row.finish for row in rows):
                return
            feed = [self._pad_id if row.finish else token for row, token in zip(rows, next_ids)]
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=-1)
            positions = positions[:, -1:] + 1
            out = self._forward(input_ids=torch.tensor(feed, dtype=torch.long)[:, None], attention_mask=mask,
                                position_ids=positions, use_cache=True,
                                **{self._cache_kw: getattr(out, self._cache_kw)}, **extra)

    def _result(self, row: _Row) -> Generation:
        return Generation(text=row.emitted, prompt_tokens=len(row.prompt_ids), completion_tokens=len(row.ids),
                          finish_reason=row.finish or "length", model=self.model_id)

    def _stream(self, request: Request) -> Generator[str, None, Generation]:
        prompt = self.encode(request)
        row = _Row(prompt_ids=prompt, limit=0)
        for rows in self._run([prompt], request.params):
            row = rows[0]
            delta = row.flush()
            if delta:
                yield delta
        return self._result(row)

    def batch(self, requests: Sequence[Request]) -> list[Generation]:
        """Decode requests with equal params together, `max_batch_size` rows at a time, longest first."""
        results: list[Generation | None] = [None] * len(requests)
        groups: dict[GenerationParams, list[tuple[int, list[int]]]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.params, []).append((i, self.encode(request)))
        for params, members in groups.items():
            members.sort(key=lambda m: -len(m[1]))
            for start in range(0, len(members), self.max_batch_size):
                chunk = members[start:start + self.max_batch_size]
                rows: list[_Row] = []
                for rows in self._run([ids for _, ids in chunk], params):
                    pass
                for (i, _), row in zip(chunk, rows):
                    row.flush()
                    results[i] = self._result(row)
        return [r for r in results if r is not None]
