"""The default backend: a local causal LM run by transformers (on the CPU unless the spec names a device).

Decoding is a small explicit loop over the model's forward pass with its KV cache,
rather than `model.generate`, because the loop gives what the protocol promises
without threads: streamed deltas, stop strings cut exactly, a per-request seeded
sampler (no global RNG), and a stream that stops the moment its consumer does.
That loop is `Decoder`: rows decoded together, left-padded, joining and leaving between steps;
`stream`, `batch` and the serving batcher (llmops.serve.batcher) all drive it.

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
import re
import threading
import time
import warnings
from collections import deque
from contextlib import contextmanager
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmops.errors import BackendError
from llmops.models.fingerprint import ModelFingerprint, fingerprint
from llmops.models.protocol import Backend, FinishReason, Generation, GenerationParams, Request
from llmops.models.sources import DEFAULT_MODEL, ModelSource, resolve_source
from llmops.models.stops import cut_at_stop, emittable

__all__ = ["Decoder", "Row", "TransformersBackend", "TransformersSpec", "clear_model_cache", "peft_quiet", "resolve_device"]

log = logging.getLogger(__name__)

# Nothing reaches a model hub at run time (from_pretrained also gets local_files_only=True).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


_DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


class TransformersSpec(BaseModel):
    """A transformers model as a spec (the `spec` of a `model/<name>` asset)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers"] = "transformers"
    source: str = Field(DEFAULT_MODEL, description="'smollm2', a Hugging Face model folder or a .gguf file")
    adapter_path: str | None = Field(None, description="a LoRA adapter folder saved by PEFT")
    fingerprint: str | None = Field(None, description="if set, loading checks the files still hash to it")
    max_batch_size: int = Field(8, ge=1, description="rows decoded together by `batch`")
    device: str = Field("cpu", description="where the weights go: 'cpu', 'cuda', 'cuda:N', or 'auto' (CUDA when "
                                           "available)")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"unknown device {value[:40]!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'")
        return value


def resolve_device(device: str = "cpu") -> str:
    """The torch device `device` names: 'auto' is 'cuda' when CUDA is available, else 'cpu'.

    Checked before any weights load, so a wrong name or a missing GPU fails at once and clearly.
    """
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise BackendError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available)")
    if device == "cpu":
        return device
    import torch

    available = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise BackendError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU here; "
                           "use device 'cpu' or 'auto'")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise BackendError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                           f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return device


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


def _load_base(source: ModelSource, device: str = "cpu") -> _Loaded:
    key = (str(source.folder), source.gguf_file or "", device)
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
        if converted is not None and folder != converted:
            _save_converted(model, tokenizer, converted)  # from the CPU, before the move
        model.to(device).eval()
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



@contextmanager
def peft_quiet():
    """PEFT calls `is_gradient_checkpointing`, which transformers 5 deprecates: a FutureWarning on every
    adapter built or loaded that users can do nothing about. Silence that one warning, nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield

def _load(source: ModelSource, adapter_path: str | None, device: str = "cpu") -> _Loaded:
    base = _load_base(source, device)
    if adapter_path is None:
        return base
    adapter = Path(adapter_path).expanduser().resolve()
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise BackendError(f"{adapter} is not a PEFT adapter folder: it has no adapter_config.json "
                           "(save one with peft_model.save_pretrained(folder))")
    # The mtime is in the key so that an adapter retrained into the same folder is reloaded.
    key = (str(source.folder), source.gguf_file or "", device, str(adapter), str(config.stat().st_mtime_ns))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    from peft import PeftModel

    started = time.perf_counter()
    # PEFT injects layers in place, so wrap a copy: the cached base stays clean for other users.
    try:
        with peft_quiet():
            peft_model = PeftModel.from_pretrained(copy.deepcopy(base.model), str(adapter), local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise BackendError(f"cannot apply the adapter in {adapter} to {source.model_id}: {exc}") from exc
    # Merging folds the low-rank update into the weights: same outputs, no per-token adapter cost.
    model = peft_model.merge_and_unload().eval()
    loaded = _Loaded(model, base.tokenizer, base.load_seconds + time.perf_counter() - started)
    with _cache_lock:
        _cache[key] = loaded
    return loaded


@dataclass(eq=False)
class Row:
    """The decoding state of one sequence (compared by identity: a decoder keeps rows, not copies)."""

    prompt_ids: list[int]
    params: GenerationParams
    limit: int          # max new tokens: max_tokens, or less where the context window ends
    generator: Any = None  # a seeded torch.Generator when sampling; None when greedy
    ids: list[int] = field(default_factory=list)
    text: str = ""      # the decoded text, cut at a stop string
    ready: str = ""     # the prefix of `text` that later tokens cannot change
    emitted: str = ""   # what has been streamed so far; the final text
    finish: FinishReason | None = None
    error: Exception | None = None  # set when this row failed; it left the batch

    @property
    def done(self) -> bool:
        return self.finish is not None or self.error is not None

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


class Decoder:
    """Rows decoded together over one KV cache; rows join (`add`) and leave (finished, or `remove`) at any step.

    This is the one decoding loop: `TransformersBackend.stream` and `.batch` drive a Decoder, and so
    does the serving batcher (llmops.serve.batcher), so a row decodes alike whoever drives it. A
    joining row is prefilled on its own pass, then its cache is merged into the running one by
    left-padding (llmops.models.kvcache); positions are explicit, so padding shifts nothing.

        decoder = Decoder(backend)
        decoder.add([backend.new_row(request)])   # prefill; picks the first token
        while decoder.rows:
            decoder.step()                        # one forward pass over every row
    """

    def __init__(self, backend: TransformersBackend):
        self.backend = backend
        self.rows: list[Row] = []
        self._cache: Any = None
        self._mask: Any = None  # (rows, cache length) long: 1 for a real token, 0 for left padding
        self.mergeable = True   # False once the model's cache proves not reshapeable (see kvcache)

    @property
    def can_join(self) -> bool:
        """Whether `add` may be called now (always, except mid-batch for a cache that cannot be merged)."""
        return not self.rows or self.mergeable

    def add(self, rows: Sequence[Row]) -> None:
        """Prefill `rows` together and pick each one's first token; the unfinished ones join the batch.

        If the forward pass raises, nothing changed: the running rows are intact.
        """
        import torch

        from llmops.models import kvcache

        rows = list(rows)
        if not rows:
            return
        if not self.can_join:
            raise BackendError("this model's KV cache cannot be merged; add rows once the batch is empty")
        b = self.backend
        longest = max(len(r.prompt_ids) for r in rows)
        input_ids = torch.full((len(rows), longest), b._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, longest - len(r.prompt_ids):] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, longest - len(r.prompt_ids):] = 1
        input_ids, mask = input_ids.to(b.device), mask.to(b.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = b._forward(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **b._keep_extra)
        cache = getattr(out, b._cache_kw)
        self._take(rows, out.logits[:, -1, :])
        keep = [i for i, r in enumerate(rows) if not r.done]
        if not keep:
            return
        if len(keep) < len(rows):
            cache, mask = kvcache.select(cache, keep), mask[keep]
        if not self.rows:
            self._cache, self._mask = cache, mask
            self.mergeable = kvcache.mergeable(cache)
        else:
            self._cache, self._mask = kvcache.merge(self._cache, self._mask, cache, mask)
        self.rows += [rows[i] for i in keep]

    def step(self) -> None:
        """One forward pass over every row: feed each its last token, pick its next; finished rows leave.

        If the forward pass raises, the batch is emptied (its cache may be half-updated) and the
        exception propagates: the caller fails the rows it held.
        """
        import torch

        rows, b = self.rows, self.backend
        if not rows:
            return
        feed = torch.tensor([[r.ids[-1]] for r in rows], dtype=torch.long, device=b.device)
        positions = torch.tensor([[len(r.prompt_ids) + len(r.ids) - 1] for r in rows], dtype=torch.long,
                                 device=b.device)
        mask = torch.cat([self._mask, self._mask.new_ones((len(rows), 1))], dim=-1)
        try:
            out = b._forward(input_ids=feed, attention_mask=mask, position_ids=positions, use_cache=True,
                             **{b._cache_kw: self._cache}, **b._keep_extra)
        except BaseException:
            self.clear()
            raise
        self._cache, self._mask = getattr(out, b._cache_kw), mask
        self._take(rows, out.logits[:, -1, :])
        self._keep([r for r in rows if not r.done])

    def remove(self, rows: Sequence[Row]) -> None:
        """Take `rows` out of the batch (a cancelled request); their slots are free at once."""
        gone = {id(r) for r in rows}
        self._keep([r for r in self.rows if id(r) not in gone])

    def clear(self) -> None:
        self.rows, self._cache, self._mask = [], None, None

    def _keep(self, rows: list[Row]) -> None:
        from llmops.models import kvcache

        if len(rows) == len(self.rows):
            return
        if not rows:
            self.clear()
            return
        where = {id(r): i for i, r in enumerate(self.rows)}
        index = [where[id(r)] for r in rows]
        self._cache, self._mask = kvcache.select(self._cache, index), self._mask[index]
        self.rows = rows
        unused = kvcache.leading_padding(self._mask)
        if unused and self.mergeable:  # the longest row left: attend over fewer columns
            self._cache, self._mask = kvcache.trim_left(self._cache, unused), self._mask[:, unused:]

    def _take(self, rows: list[Row], logits: Any) -> None:
        """Pick each row's next token from its logits; a row whose processing raises fails alone."""
        greedy = logits.argmax(dim=-1).tolist() if any(r.params.greedy for r in rows) else []
        for i, row in enumerate(rows):
            try:
                token = greedy[i] if row.params.greedy else _sample(logits[i:i + 1], row)
                self.backend._advance(row, token)
            except Exception as exc:  # a tokenizer that cannot decode this row's ids, ...
                log.exception("decoding a row failed; failing that request only")
                row.error = exc if isinstance(exc, BackendError) else BackendError(f"decoding failed: {exc}")


def _sample(logits: Any, row: Row) -> int:
    """One token from `logits` (shape (1, vocab)) with the row's temperature, top_p and sampler."""
    import torch

    params = row.params
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > params.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    # the per-row generators live on the CPU, so a seed samples alike on any device
    return int(torch.multinomial(probs[0].cpu(), 1, generator=row.generator).item())


class TransformersBackend(Backend):
    """A local causal LM (a Hugging Face folder or a GGUF file), optionally with a LoRA adapter."""

    def __init__(self, source: str | os.PathLike[str] | ModelSource = DEFAULT_MODEL, *,
                 adapter_path: str | os.PathLike[str] | None = None, max_batch_size: int = 8,
                 device: str = "cpu"):
        self.device_name = resolve_device(device)
        self.source = source if isinstance(source, ModelSource) else resolve_source(source)
        self.adapter_path = os.fspath(adapter_path) if adapter_path is not None else None
        self.max_batch_size = max_batch_size
        loaded = _load(self.source, self.adapter_path, self.device_name)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.load_seconds = loaded.load_seconds
        self.model_id = self.source.model_id
        if self.adapter_path:
            self.model_id += "+" + Path(self.adapter_path).name
        self._eos_ids = self._find_eos_ids()
        forward = inspect.signature(self.model.forward).parameters
        # transformers 5 renamed `past_key_values` to `cache`; support both.
        self._cache_kw = "cache" if "cache" in forward else "past_key_values"
        self._keep_extra = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}
        config = self.model.config
        self._max_positions = getattr(config, "max_position_embeddings", None)
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (min(self._eos_ids) if self._eos_ids else 0)

    @property
    def device(self) -> Any:
        """Where the model's weights are (`device`, unless a caller moved `model`); inputs are made there."""
        return getattr(self.model, "device", "cpu")

    def with_adapter(self, adapter_path: str | os.PathLike[str] | None) -> TransformersBackend:
        """The same base model with another adapter (or none); loaded models are shared via the cache."""
        return type(self)(self.source, adapter_path=adapter_path, max_batch_size=self.max_batch_size,
                          device=self.device_name)

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

    # -- decoding (the loop itself is `Decoder`) -------------------------------------------------

    def new_row(self, request: Request) -> Row:
        """Encode `request` into a Row ready to `Decoder.add` (raises BackendError for a bad prompt)."""
        prompt = self.encode(request)
        params = request.params
        window = self._max_positions or 1 << 62
        generator = None
        if not params.greedy:
            import torch

            # One sampler per row, so that a batched row samples as it would alone.
            seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**63)
            generator = torch.Generator().manual_seed(seed)
        return Row(prompt_ids=prompt, params=params, limit=min(params.max_tokens, window - len(prompt)),
                   generator=generator)

    def result(self, row: Row) -> Generation:
        """The Generation of a finished row (after its last `flush`)."""
        if row.error is not None:
            raise row.error
        return Generation(text=row.emitted, prompt_tokens=len(row.prompt_ids), completion_tokens=len(row.ids),
                          finish_reason=row.finish or "length", model=self.model_id)

    def _advance(self, row: Row, token: int) -> None:
        row.ids.append(token)
        if token in self._eos_ids:
            row.finish = "stop"
        else:
            self._decode_text(row)
        if not row.finish and len(row.ids) >= row.limit:
            row.finish = "length"

    def _decode_text(self, row: Row) -> None:
        ids = [i for i in row.ids if i not in self._eos_ids]
        full = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        row.text, hit = cut_at_stop(full, row.params.stop)
        if hit:
            row.finish = "stop"
        row.ready = emittable(row.text, row.params.stop)

    def _forward(self, **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.model(**kwargs)

    def _stream(self, request: Request) -> Generator[str, None, Generation]:
        row = self.new_row(request)
        decoder = Decoder(self)
        decoder.add([row])
        while True:
            delta = row.flush()
            if delta:
                yield delta
            if row.done:
                return self.result(row)
            decoder.step()

    def batch(self, requests: Sequence[Request]) -> list[Generation]:
        """Decode up to `max_batch_size` rows at a time, longest prompts first; a finished row's slot is refilled."""
        rows = [self.new_row(r) for r in requests]
        waiting = deque(sorted(rows, key=lambda r: -len(r.prompt_ids)))
        decoder = Decoder(self)
        while waiting or decoder.rows:
            room = self.max_batch_size - len(decoder.rows)
            if waiting and room > 0 and decoder.can_join:
                decoder.add([waiting.popleft() for _ in range(min(room, len(waiting)))])
            decoder.step()
        for row in rows:
            row.flush()
        return [self.result(row) for row in rows]
