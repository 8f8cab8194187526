"""The LoRA training loop: PEFT on a transformers causal LM, one process or data-parallel under torchrun.

A hand-written loop rather than the HF `Trainer`, because resuming must land on the very same
adapter, every optimizer step is logged once, and torchrun ranks must split each batch exactly:

- **Data order** is a function of (seed, epoch): step s takes examples `perm(epoch)[pos*G:(pos+1)*G]`
  with G = batch_size x grad_accum, so a resumed job needs only the step number to know what comes next.
- **Loss** is the sum of token losses over the whole global batch divided by its number of loss tokens
  (labels != -100, completion tokens by default), whatever the split into micro-batches and ranks: one
  process with grad_accum 4 and four processes with grad_accum 1 compute the same gradient.
- **Padding**: within a global batch, examples are sorted by length before they are cut into
  micro-batches (which changes nothing in the gradient), each padded only to its own longest example,
  and each micro-batch is dealt to the ranks round-robin so they get similar lengths.
- **Precision**: bf16 autocast on CUDA where supported (`auto`), fp32 on CPU; fp16 uses a grad scaler.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterator, Sequence

from llmops.errors import ConfigError, LLMOpsError
from llmops.finetune import checkpoint as ckpt
from llmops.finetune.distributed import Dist, shard

log = logging.getLogger(__name__)

__all__ = ["LoraTrainer", "Plan", "Settings", "StepStats", "StopFlag", "Stopped", "collate", "fit",
           "micro_batches", "plan"]

IGNORE = -100
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


@dataclass(frozen=True)
class Settings:
    """The `training` section as the loop uses it (built from the job spec by `from_spec`)."""

    lr: float = 2e-4
    schedule: str = "linear"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    batch_size: int = 4
    grad_accum: int = 1
    epochs: float | None = None
    max_steps: int | None = None
    seed: int = 0
    precision: str = "auto"
    gradient_checkpointing: bool = False
    eval_every: int = 0          # steps between validation losses; 0 = only at the end
    checkpoint_every: int = 0    # steps between checkpoints; 0 = only when stopped
    keep_checkpoints: int = ckpt.KEEP
    log_every: int = 1
    max_grad_norm: float = 1.0   # clip the global grad norm; 0 = no clipping (the norm is still logged)
    weight_decay: float = 0.0

    @classmethod
    def from_spec(cls, training: Any) -> Settings:
        """Take every field this loop knows from the spec's `training` object (pydantic or dict)."""
        data = training if isinstance(training, dict) else (
            training.model_dump() if hasattr(training, "model_dump") else vars(training))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})


@dataclass(frozen=True)
class Plan:
    """How many optimizer steps a job takes and which examples each one uses."""

    n_train: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    seed: int

    def where(self, step: int) -> tuple[int, int]:
        """(epoch, position within the epoch) of optimizer step `step` (1-based)."""
        return divmod(step - 1, self.steps_per_epoch)

    def batch(self, step: int) -> list[int]:
        """Indices of the training examples of optimizer step `step` (1-based)."""
        import torch

        epoch, pos = self.where(step)
        order = torch.randperm(self.n_train, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        return order[pos * self.global_batch:(pos + 1) * self.global_batch].tolist()


def plan(n_train: int, settings: Settings) -> Plan:
    """Steps per epoch (the last batch of an epoch may be short) and the total from epochs or max_steps."""
    if n_train < 1:
        raise ConfigError("the training split is empty (or no example has a completion token within "
                          "max_seq_len): there is nothing to train on")
    g = settings.batch_size * settings.grad_accum
    per_epoch = math.ceil(n_train / g)
    if settings.max_steps:
        total = settings.max_steps
    elif settings.epochs:
        total = max(1, math.ceil(settings.epochs * per_epoch))
    else:
        raise ConfigError("training needs `epochs` or `max_steps`")
    return Plan(n_train=n_train, global_batch=g, steps_per_epoch=per_epoch, total_steps=total, seed=settings.seed)


def micro_batches(indices: Sequence[int], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Cut a global batch into micro-batches of similar lengths (longest first; ties by index).

    >>> micro_batches([0, 1, 2, 3], [5, 9, 1, 7], 2)
    [[1, 3], [0, 2]]
    """
    ordered = sorted(indices, key=lambda i: (-lengths[i], i))
    return [ordered[k:k + batch_size] for k in range(0, len(ordered), batch_size)]


def collate(examples: Sequence[Any], pad_id: int, device: Any) -> dict:
    """Right-pad a micro-batch to its longest example: input_ids, attention_mask, labels (-100 on padding)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.as_tensor(e.input_ids, dtype=torch.long)
        mask[row, :n] = 1
        labels[row, :n] = torch.as_tensor(e.labels, dtype=torch.long)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def loss_tokens(example: Any) -> int:
    """Tokens that count in the loss: labels are shifted by one, so the first label never does."""
    return sum(1 for t in example.labels[1:] if t != IGNORE)


def token_loss_sum(logits: Any, labels: Any) -> Any:
    """Sum (not mean) of next-token cross-entropies over the non-ignored labels, in fp32."""
    import torch.nn.functional as F

    # shift the labels, not the logits: slicing [B, T, vocab] logits would copy them (200 MB at SmolLM2's
    # vocabulary, 4 x 256 tokens); `.float()` is free when they are fp32 already
    shifted = F.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), shifted.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


def resolve_precision(precision: str, device: Any) -> str:
    """The precision actually used: `auto` is bf16 on a CUDA device that supports it, else fp32."""
    import torch

    cuda = device.type == "cuda"
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("training.precision fp16 needs a CUDA device; use fp32 or auto on CPU")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("training.precision bf16 is not supported by this GPU; use fp16 or auto")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"training.precision {precision!r} is not one of auto, fp32, bf16, fp16")
    return precision


@dataclass(frozen=True)
class StepStats:
    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens: int          # tokens in the global batch (padding excluded)
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class Stopped(KeyboardInterrupt):
    """Training stopped on request (Ctrl-C, SIGTERM) after step `step`, with a checkpoint saved.

    A KeyboardInterrupt, so a run around it is marked `killed`; `run_id` is filled in by the job.
    """

    def __init__(self, step: int, run_id: str | None = None):
        super().__init__(f"stopped after step {step}")
        self.step, self.run_id = step, run_id


class StopFlag:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop at the end of the current step.

    A second Ctrl-C raises KeyboardInterrupt at once (the last checkpoint stays the resume point).
    Handlers are installed only in the main thread; elsewhere `requested` is set by `request()` alone.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self) -> None:
        self._event.set()

    def _handle(self, signum, frame) -> None:  # pragma: no cover - exercised through real signals
        if self._event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._event.set()
        log.warning("%s: stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)",
                    signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator["StopFlag"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


class LoraTrainer:
    """A PEFT LoRA model with its optimizer, schedule and data plan; `step(s)` runs optimizer step s.

    `model` is a transformers causal LM that this trainer owns from now on (PEFT changes it in place);
    `lora` a PEFT `LoraConfig` (`llmops.finetune.checks.lora_config` makes a job's).
    """

    def __init__(self, model: Any, train: Sequence[Any], validation: Sequence[Any], settings: Settings,
                 lora: Any, *, device: Any, dist: Dist | None = None, pad_id: int = 0):
        import torch
        from peft import get_peft_model
        from transformers import get_scheduler

        from llmops.models.transformers_backend import peft_quiet

        self.settings, self.device = settings, device
        self.dist = dist or Dist(device=device)
        # an example whose completion max_seq_len cut away entirely has no loss token: it teaches nothing
        self.train_set = [e for e in train if loss_tokens(e) > 0]
        self.validation = [e for e in validation if loss_tokens(e) > 0]
        if len(self.train_set) < len(train):
            log.warning("%d training example(s) have no completion token left (max_seq_len): left out",
                        len(train) - len(self.train_set))
        self.pad_id = pad_id
        self.plan = plan(len(self.train_set), settings)
        self.lengths = [len(e.input_ids) for e in self.train_set]
        self.precision = resolve_precision(settings.precision, device)
        if settings.schedule not in SCHEDULES:
            raise ConfigError(f"training.schedule {settings.schedule!r} is not one of {', '.join(SCHEDULES)}")

        model.config.use_cache = False  # no KV cache while training
        if settings.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(settings.seed)  # the LoRA init (A random, B zero) follows the seed
            with peft_quiet():
                self.peft_model = get_peft_model(model, lora).to(device)
        # Dropout draws from the trainer's own generator state, swapped in for each step, so that nothing
        # else in the process (another trainer, user code) shifts it, and a checkpoint can hold it.
        self.rng = _seeded_rng(settings.seed + 7919 * self.dist.rank, device)
        self.model = self.peft_model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.peft_model, device_ids=[device] if device.type == "cuda" else None)
        self.params = [p for p in self.peft_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=settings.lr, weight_decay=settings.weight_decay)
        warmup = settings.warmup_steps or math.ceil(settings.warmup_ratio * self.plan.total_steps)
        self.scheduler = get_scheduler(SCHEDULES[settings.schedule], self.optimizer, num_warmup_steps=warmup,
                                       num_training_steps=self.plan.total_steps)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

    # one optimizer step --------------------------------------------------------------------------
    def _autocast(self):
        import torch

        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def step(self, step: int) -> StepStats:
        import torch

        started = time.perf_counter()
        indices = self.plan.batch(step)
        n_loss = sum(loss_tokens(self.train_set[i]) for i in indices)  # > 0: every example has one
        with _own_rng(self):
            return self._step(step, indices, n_loss, started)

    def _step(self, step: int, indices: list[int], n_loss: int, started: float) -> StepStats:
        import torch

        world, rank = self.dist.world_size, self.dist.rank
        micro = micro_batches(indices, self.lengths, self.settings.batch_size)
        self.model.train()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for k, mb in enumerate(micro):
            mine, weight = shard(mb, rank, world), 1.0
            if not mine:  # fewer examples than ranks: join the gradient sync with a zero-weight example
                mine, weight = mb[:1], 0.0
            batch = collate([self.train_set[i] for i in mine], self.pad_id, self.device)
            last = k == len(micro) - 1
            sync = nullcontext() if last or not self.dist.enabled else self.model.no_sync()
            with sync:
                with self._autocast():
                    logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                summed = token_loss_sum(logits, batch["labels"])
                # DDP averages gradients over ranks, hence x world: the gradient is that of the global mean
                loss = summed * (weight * world / n_loss)
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += summed.detach().double() * weight
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.settings.max_grad_norm if self.settings.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        lr = self.scheduler.get_last_lr()[0]
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = self.dist.sum([total.item()])[0]
        return StepStats(step=step, loss=loss_sum / n_loss, lr=float(lr), grad_norm=float(grad_norm),
                         tokens=sum(self.lengths[i] for i in indices), seconds=time.perf_counter() - started)

    def evaluate(self) -> float | None:
        """Mean token loss over the validation split (ranks share its micro-batches); None without one."""
        import torch

        if not self.validation:
            return None
        lengths = [len(e.input_ids) for e in self.validation]
        chunks = micro_batches(range(len(self.validation)), lengths, self.settings.batch_size)
        self.peft_model.eval()
        loss, count = 0.0, 0
        with torch.no_grad():
            for mb in shard(chunks, self.dist.rank, self.dist.world_size):
                batch = collate([self.validation[i] for i in mb], self.pad_id, self.device)
                with self._autocast():
                    logits = self.peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss += token_loss_sum(logits, batch["labels"]).item()
                count += sum(loss_tokens(self.validation[i]) for i in mb)
        self.peft_model.train()
        loss, count = self.dist.sum([loss, count])
        return loss / count if count else None

    # checkpoints -----------------------------------------------------------------------------------
    def checkpoint(self, root: Any, step: int, job_digest: str) -> ckpt.Checkpoint | None:
        """Save after step `step` (a collective: every rank sends its RNG state; rank 0 writes)."""
        rngs = self.dist.gather(self.rng)
        if not self.dist.is_main:
            return None
        epoch, pos = divmod(step, self.plan.steps_per_epoch)
        state = ckpt.CheckpointState(step=step, epoch=epoch, position=pos, total_steps=self.plan.total_steps,
                                     seed=self.settings.seed, world_size=self.dist.world_size, job_digest=job_digest)
        trainer_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                         "scaler": self.scaler.state_dict() if self.scaler else None, "rng": rngs}
        return ckpt.save(root, state, peft_model=self.peft_model, trainer_state=trainer_state,
                         keep=self.settings.keep_checkpoints)

    def restore(self, checkpoint: ckpt.Checkpoint) -> int:
        """Load a checkpoint's weights, optimizer, schedule and RNG; returns the step to continue after."""
        self.load_state(checkpoint.state, ckpt.load_adapter_weights(checkpoint), ckpt.load_trainer_state(checkpoint),
                        where=str(checkpoint.path))
        return checkpoint.step

    def load_state(self, state: ckpt.CheckpointState, weights: dict, saved: dict, *, where: str = "checkpoint") -> None:
        """Restore from a checkpoint's parts (rank 0 reads the files and sends them to the other ranks)."""
        from peft import set_peft_model_state_dict

        if (state.total_steps, state.seed) != (self.plan.total_steps, self.settings.seed):
            raise LLMOpsError(f"{where} was made for {state.total_steps} steps with seed {state.seed}, this job "
                              f"plans {self.plan.total_steps} with seed {self.settings.seed}; "
                              "resume with the job spec it was made from")
        result = set_peft_model_state_dict(self.peft_model, weights)
        missing = [k for k in result.missing_keys if "lora_" in k]
        if result.unexpected_keys or missing:
            raise LLMOpsError(f"{where} does not fit this model's LoRA layers "
                              f"(unexpected {result.unexpected_keys[:3]}, missing {missing[:3]})")
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        rngs = saved["rng"]
        if len(rngs) != self.dist.world_size:
            log.warning("checkpoint made by %d process(es), resumed by %d: dropout draws differ from an "
                        "uninterrupted run", len(rngs), self.dist.world_size)
        self.rng = dict(rngs[min(self.dist.rank, len(rngs) - 1)])


def _seeded_rng(seed: int, device: Any) -> dict:
    import torch

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _get_rng(device)


def _get_rng(device: Any) -> dict:
    import torch

    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


@contextmanager
def _own_rng(trainer: "LoraTrainer") -> Iterator[None]:
    """Run a step on the trainer's generator state; the process's own state is left as it was."""
    import torch

    device = trainer.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(trainer.rng["cpu"])
        if device.type == "cuda" and "cuda" in trainer.rng:
            torch.cuda.set_rng_state(trainer.rng["cuda"], device)
        yield
        trainer.rng = _get_rng(device)


def fit(trainer: LoraTrainer, *, start_step: int = 0, stop: StopFlag | None = None,
        on_step: Callable[[StepStats], None] | None = None,
        on_eval: Callable[[int, float], None] | None = None,
        save: Callable[[int], None] | None = None,
        after_step: Callable[[StepStats], None] | None = None) -> list[StepStats]:
    """Run steps start_step+1 .. total: `on_step` after each, `on_eval` at eval steps and at the end,
    `save(step)` every `checkpoint_every` steps (every rank calls it: it is a collective), then
    `after_step` (a hook for callers and tests: a step is complete, and checkpointed when due).

    When `stop` is requested (on any rank), the loop saves a checkpoint after the current step and
    raises Stopped (a KeyboardInterrupt), so a job stopped by Ctrl-C resumes exactly where it stopped.
    """
    settings, total = trainer.settings, trainer.plan.total_steps
    done: list[StepStats] = []
    for step in range(start_step + 1, total + 1):
        stats = trainer.step(step)
        done.append(stats)
        if on_step:
            on_step(stats)
        if step == total or (settings.eval_every and step % settings.eval_every == 0):
            val = trainer.evaluate()
            if val is not None and on_eval:
                on_eval(step, val)
        if step == total:
            if after_step:
                after_step(stats)
            break
        if save and settings.checkpoint_every and step % settings.checkpoint_every == 0:
            save(step)
        if after_step:
            after_step(stats)
        if trainer.dist.sum([1.0 if stop is not None and stop.requested else 0.0])[0] > 0:
            if save:
                save(step)  # the same step again is kept as it is
            raise Stopped(step)
    return done
