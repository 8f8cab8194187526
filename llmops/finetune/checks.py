"""Everything that can be known about a fine-tuning job before it trains, in one report.

`check_job` reads the spec, loads the base model (checking its fingerprint), builds the dataset through
the prompt and chat templates, and checks: bad records, the token-length histogram and the share that
`max_seq_len` cuts, a preview of the first example as the model sees it, the LoRA target modules
against the model's modules, the trainable parameter count (from the PEFT model, built on the `meta`
device so it costs no memory), an estimate of the memory training needs, whether vLLM can serve the
adapter, `max_seq_len` against the model's context, an adapter name already used by an adapter of
another base model, and free disk for checkpoints.

Why a report and not the first exception: a user fixing a job wants every problem at once. `errors`
stop `finetune run`; `warnings` do not. Checking writes nothing: a model not yet registered is
registered, and a dataset file pushed, only by `CheckReport.register_inputs`, which `run` calls after
the checks pass. The report keeps what training needs (`dataset`, `model`) so nothing is computed twice.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.errors import AssetNotFound, LLMOpsError, SpecError

__all__ = ["VLLM_MAX_LORA_RANKS", "BaseModelHandle", "CheckReport", "check_job", "lora_config", "resolve_device"]

log = logging.getLogger(__name__)

# vLLM's `--max-lora-rank` choices (vllm.config.lora.MaxLoRARanks); a rank above the largest cannot be served.
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass
class BaseModelHandle:
    """The base model of a job: its model spec, its version (None until registered), the loaded backend."""

    ref: str
    spec: dict
    backend: Any
    av: Any = None

    @property
    def tokenizer(self) -> Any:
        return self.backend.tokenizer

    @property
    def config(self) -> Any:
        return self.backend.model.config

    @property
    def fingerprint(self) -> str | None:
        return self.spec.get("fingerprint")

    @functools.cached_property
    def model(self) -> Any:
        """A private copy of the base weights to wrap with PEFT and train (the loaded backend is shared)."""
        return copy.deepcopy(self.backend.model)

    def register(self, ws: Any) -> Any:
        """The model version; a local model (`smollm2`) is registered on first use, as chains do."""
        if self.av is None:
            from llmops.store.refs import parse_ref

            name = parse_ref(self.ref, default_kind="model").name
            self.av = ws.registry.push("model", name, spec=self.spec, message="registered on first use")
        return self.av


@dataclass
class CheckReport:
    """What `check_job` found. `errors` stop a run; `facts` are the figures shown by `finetune check`."""

    job: Any
    device: str = "cpu"
    problems: list[SpecError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    dataset: Any = None           # llmops.finetune.data.Dataset
    model: BaseModelHandle | None = None

    @property
    def errors(self) -> list[str]:
        return [str(p) for p in self.problems]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def base_av(self) -> Any:
        """The base model's version (None while it is not registered; see `register_inputs`)."""
        return self.model.av if self.model is not None else None

    def add(self, error: SpecError) -> None:
        self.problems.append(error)

    def raise_for_errors(self) -> None:
        """Raise the first error as a SpecError (saying how many more there are); nothing when ok."""
        if not self.problems:
            return
        first = self.problems[0]
        if len(self.problems) == 1:
            raise first
        from llmops.finetune.data import _message

        more = len(self.problems) - 1
        raise SpecError(f"{_message(first)} (and {more} more problem{'s' if more > 1 else ''}; "
                        f"see llmops finetune check {self.job.path})",
                        file=first.file, field=first.field, line=first.line, fix=first.fix)

    def register_inputs(self, ws: Any) -> dict[str, Any]:
        """After the checks pass: register the base model and push the dataset file(s) as versions.

        Returns `{"base": av, "dataset": av, "validation": av or None, "uses": [prompt/index versions]}`.
        Call it before opening the job's run, then record each as used.
        """
        self.raise_for_errors()
        base = self.model.register(ws)
        dataset = self.dataset.push(ws)
        vs = self.dataset.validation_source
        return {"base": base, "dataset": dataset, "validation": vs.av if vs else None, "uses": list(self.dataset.uses)}

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors, "warnings": list(self.warnings), "device": self.device,
                "job": {"file": str(self.job.path), "digest": self.job.digest, "output": self.job.spec.output},
                **self.facts}


# -- helpers shared with training -------------------------------------------------------------------

def resolve_device(device: str) -> str:
    """`auto` -> `cuda` when a GPU is visible, else `cpu`; `cuda` without a GPU is an error."""
    if device not in ("auto", "cpu", "cuda"):
        raise LLMOpsError(f"--device {device!r} is not one of auto, cpu, cuda")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise LLMOpsError("--device cuda: no CUDA device is visible to torch; use --device cpu or auto")
    return "cpu"


def resolve_precision(precision: str, device: str) -> str:
    """`auto` -> bf16 on a CUDA device that supports it, else fp32."""
    if precision != "auto":
        return precision
    if device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "fp32"


def lora_config(job_spec: Any) -> Any:
    """The PEFT `LoraConfig` of a job (the one definition: checks count with it, training trains with it)."""
    from peft import LoraConfig

    lora = job_spec.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias,
                      target_modules=lora.target_modules, layers_to_transform=lora.layers, task_type="CAUSAL_LM")


def _module_names(model: Any) -> dict[str, list[str]]:
    """Leaf name -> full names of the modules LoRA can adapt (linear, Conv1D and embedding layers)."""
    import torch

    kinds: tuple[type, ...] = (torch.nn.Linear, torch.nn.Embedding)
    try:
        from transformers.pytorch_utils import Conv1D

        kinds += (Conv1D,)
    except ImportError:  # pragma: no cover - older transformers
        pass
    out: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if name and isinstance(module, kinds):
            out.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    return out


def _skeleton(config: Any) -> Any:
    """The model built from its config on the `meta` device: every module and shape, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


# -- the checks -------------------------------------------------------------------------------------

def _base(ws: Any, job: Any, report: CheckReport) -> BaseModelHandle | None:
    from llmops.models import load_backend, model_spec
    from llmops.models.sources import is_local_source
    from llmops.models.transformers_backend import TransformersBackend

    ref = job.spec.base_model
    av = None
    try:
        try:
            av = ws.registry.get(ref, kind="model", record=False)
            spec = av.spec
        except AssetNotFound:
            if "@" in ref or not is_local_source(ref):
                raise
            spec = model_spec(ref)
        backend = load_backend(spec)
    except LLMOpsError as exc:
        report.add(job.error("base_model", f"cannot load {ref!r}: {exc}",
                             fix="register it: ws.registry.push('model', NAME, spec=model_spec(PATH))"))
        return None
    if not isinstance(backend, TransformersBackend):
        report.add(job.error("base_model", f"{ref!r} is served by {type(backend).__name__}; fine-tuning needs "
                                           "local transformers weights"))
        return None
    return BaseModelHandle(ref, dict(spec), backend, av)


def _data(ws: Any, job: Any, base: BaseModelHandle, report: CheckReport) -> None:
    from llmops.finetune.data import build_dataset

    try:
        ds = build_dataset(ws, job, base.tokenizer)
    except SpecError as exc:
        report.add(exc)
        return
    except LLMOpsError as exc:
        report.add(job.error("dataset", str(exc)))
        return
    report.dataset = ds
    stats = ds.stats
    report.facts["data"] = {"format": ds.format, "source": ds.source.label, **stats.to_dict()}
    report.facts["preview"] = {"line": ds.preview_line, "text": ds.preview}
    if stats.truncated:
        report.warnings.append(f"{stats.truncated} of {len(stats.lengths)} examples ({stats.truncated_share:.0%}) "
                               f"are longer than max_seq_len {stats.max_seq_len} and are cut at the end")
    trained = [e for e in ds.train if e.prompt_tokens < stats.max_seq_len]
    if stats.no_completion:
        msg = (f"{stats.no_completion} example(s) lose their whole completion to max_seq_len {stats.max_seq_len} "
               "(their prompt alone fills it), so they teach nothing")
        if not trained:
            report.add(job.error("training.max_seq_len", msg, fix="raise max_seq_len or shorten the prompts"))
        else:
            report.warnings.append(msg)
    if not ds.validation:
        report.warnings.append("no validation examples: the validation loss cannot be measured")


def _lora(job: Any, base: BaseModelHandle, report: CheckReport) -> Any:
    """Check the target modules, then count parameters on a PEFT model built on the meta device."""
    from peft import get_peft_model

    from llmops.models.transformers_backend import peft_quiet

    spec = job.spec
    skeleton = _skeleton(base.config)
    names = _module_names(skeleton)
    targets = spec.lora.target_modules
    if isinstance(targets, list):
        missing = [t for t in targets if t not in names and not any(
            full == t or full.endswith("." + t) for fulls in names.values() for full in fulls)]
        if missing:
            report.add(job.error("lora.target_modules",
                                 f"{', '.join(repr(m) for m in missing)} {'is' if len(missing) == 1 else 'are'} not "
                                 f"a module of {spec.base_model}",
                                 fix=f"available: {', '.join(sorted(names))} (or all-linear)"))
            return None
    depth = getattr(base.config, "num_hidden_layers", None)
    if spec.lora.layers and depth is not None and max(spec.lora.layers) >= depth:
        report.add(job.error("lora.layers", f"layer {max(spec.lora.layers)} does not exist: {spec.base_model} "
                                            f"has {depth} layers", fix=f"use indices 0 to {depth - 1}"))
        return None
    try:
        with peft_quiet():
            peft_model = get_peft_model(skeleton, lora_config(spec))
    except (ValueError, TypeError, RuntimeError) as exc:
        report.add(job.error("lora", f"PEFT cannot build this adapter on {spec.base_model}: {exc}"))
        return None
    trainable, total = peft_model.get_nb_trainable_parameters()
    report.facts["params"] = {"trainable": int(trainable), "total": int(total),
                              "share": round(trainable / total, 6) if total else 0.0}
    return peft_model.peft_config["default"]


def _vllm(job: Any, config: Any, report: CheckReport) -> None:
    r = job.spec.lora.r
    reasons = []
    fits = [x for x in VLLM_MAX_LORA_RANKS if x >= r]
    if not fits:
        reasons.append(f"rank {r} is over vLLM's largest --max-lora-rank ({VLLM_MAX_LORA_RANKS[-1]})")
    if config is not None and getattr(config, "modules_to_save", None):
        reasons.append(f"modules_to_save ({', '.join(config.modules_to_save)}) is not loaded by vLLM")
    if job.spec.lora.bias != "none":
        reasons.append(f"bias: {job.spec.lora.bias} trains biases; vLLM serves LoRA weights without bias terms")
    report.facts["vllm"] = {"servable": not reasons, "max_lora_rank": fits[0] if fits else None, "reasons": reasons}
    for reason in reasons:
        report.warnings.append(f"vLLM cannot serve this adapter: {reason} (transformers can)")


def _context(job: Any, base: BaseModelHandle, report: CheckReport) -> None:
    limit = getattr(base.config, "max_position_embeddings", None)
    report.facts["model"] = {"ref": job.spec.base_model, "fingerprint": base.fingerprint,
                             "registered": base.av.ref if base.av is not None else None,
                             "max_position_embeddings": limit}
    n = job.spec.training.max_seq_len
    if limit is not None and n > limit:
        report.add(job.error("training.max_seq_len", f"{n} is over {job.spec.base_model}'s context of {limit} tokens",
                             fix=f"set max_seq_len to {limit} or less"))


def _name_taken(ws: Any, job: Any, base: BaseModelHandle, report: CheckReport) -> None:
    from llmops.finetune.adapters import base_fingerprint

    name = job.spec.output
    try:
        versions = ws.registry.versions(f"adapter/{name}")
    except AssetNotFound:
        return
    for av in versions:
        theirs = base_fingerprint(av)
        if theirs is None:
            report.warnings.append(f"{av.ref} records no base model fingerprint; cannot tell which base it was "
                                   "trained on")
        elif base.fingerprint is not None and theirs != base.fingerprint:
            trained_on = (av.spec.get("base") or {}).get("ref", "another model")
            report.add(job.error("output", f"adapter/{name} is already used by {av.ref}, trained on {trained_on} "
                                           f"(fingerprint {theirs[:12]}), not on {job.spec.base_model} "
                                           f"(fingerprint {base.fingerprint[:12]})",
                                 fix="give this job another output name"))
            return


def _steps(job: Any, train: int) -> int:
    """Optimizer steps; the global batch is batch_size x grad_accum whatever the number of processes."""
    t = job.spec.training
    if t.max_steps is not None:
        return t.max_steps
    per_epoch = max(1, math.ceil(train / (t.batch_size * t.grad_accum)))
    return max(1, math.ceil(per_epoch * t.epochs))


def _memory(job: Any, base: BaseModelHandle, report: CheckReport, device: str) -> None:
    """A rough estimate (labelled so) of the memory one training step needs, for decoder-only models.

    weights (total params at the training precision) + LoRA weights, grads and AdamW's two moments (fp32) +
    activations, ~(20·h + 4·i) values per token per layer (h hidden size, i MLP size; calibrated on SmolLM2,
    fp32 on CPU with sdpa attention: one step of 4 x 842 tokens took 8.7 GiB over the loaded model, activations
    and logits are estimated at 8.5 GiB), plus the
    s x s scores per head under eager attention; with gradient checkpointing only each layer's input is
    kept, plus one layer being recomputed + logits: fp32 logits, their log-softmax and its gradient.
    Batches are padded to their longest example, so `s` is the longest example, at most max_seq_len.
    """
    t = job.spec.training
    cfg = base.config
    precision = resolve_precision(t.precision, device)
    nbytes = _BYTES[precision]
    params = report.facts.get("params", {})
    total, trainable = params.get("total", 0), params.get("trainable", 0)
    s = t.max_seq_len
    if report.dataset is not None and report.dataset.stats.lengths:
        s = min(s, max(report.dataset.stats.lengths))
    b = t.batch_size
    h = getattr(cfg, "hidden_size", 0) or 0
    inner = getattr(cfg, "intermediate_size", None) or 4 * h
    layers = getattr(cfg, "num_hidden_layers", 0) or 0
    heads = getattr(cfg, "num_attention_heads", 1) or 1
    vocab = getattr(cfg, "vocab_size", 0) or 0
    eager = getattr(cfg, "_attn_implementation", None) in (None, "eager")  # sdpa / flash keep no s x s scores
    per_layer = (b * s * (20 * h + 4 * inner) + (2 * heads * s * s * b if eager else 0)) * nbytes
    if t.gradient_checkpointing:
        activations = layers * b * s * h * nbytes + per_layer
    else:
        activations = layers * per_layer
    figures = {"weights": total * nbytes, "lora_weights_grads_adam": trainable * 4 * 4,
               "activations": int(activations), "logits": b * s * vocab * 4 * 3}
    figures["total"] = int(sum(figures.values()))
    report.facts["memory"] = {"estimate": True, "device": device, "precision": precision, "tokens": s,
                              **{k: int(v) for k, v in figures.items()}}


def _disk(ws: Any, job: Any, report: CheckReport) -> None:
    t = job.spec.training
    trainable = report.facts.get("params", {}).get("trainable", 0)
    checkpoint = trainable * 4 * 3 + (1 << 20)          # weights + AdamW's two moments, + states and config
    needed = checkpoint * (t.keep_checkpoints + 1) + trainable * 4  # one more while the next is written; the result
    folder = Path(ws.home)
    free = shutil.disk_usage(folder).free
    report.facts["disk"] = {"folder": str(folder), "free": int(free), "needed": int(needed),
                            "checkpoint": int(checkpoint), "keep": t.keep_checkpoints}
    if free < needed:
        report.add(job.error("training.keep_checkpoints",
                             f"{free / 2**20:,.1f} MiB free under {folder}, but {t.keep_checkpoints} checkpoint(s) "
                             f"of ~{checkpoint / 2**20:,.1f} MiB and the adapter need ~{needed / 2**20:,.1f} MiB",
                             fix="free disk space, or keep fewer checkpoints"))


def check_job(ws: Any, job: Any, *, device: str = "auto") -> CheckReport:
    """Check a job (a Job or a path) without training or writing anything; see the module docstring.

    A spec that does not validate raises SpecError at once (nothing else can be checked).
    """
    from llmops.finetune.spec import Job, load_job

    if not isinstance(job, Job):
        job = load_job(job, ws)
    report = CheckReport(job)
    try:
        report.device = resolve_device(device)
    except LLMOpsError as exc:
        report.add(SpecError(str(exc)))
        report.device = "cpu"
    base = _base(ws, job, report)
    if base is None:
        return report
    report.model = base
    _context(job, base, report)
    _data(ws, job, base, report)
    config = _lora(job, base, report)
    _vllm(job, config, report)
    _name_taken(ws, job, base, report)
    if report.dataset is not None:
        report.facts["steps"] = _steps(job, len(report.dataset.train))
    _memory(job, base, report, report.device)
    _disk(ws, job, report)
    return report
