"""Running a fine-tuning job end to end: check, open (or resume) its run, train, push the adapter.

    result = run_job(ws, "finetune/handbook-qa.yaml")              # -> JobResult(run_id, adapter, figures)
    run_job(ws, "finetune/handbook-qa.yaml", resume=True)          # continue the last unfinished run of this job

The same call runs data-parallel under torchrun: every rank checks the job and trains its share of each
batch; rank 0 alone opens the run, logs, writes checkpoints and pushes. Rank 0 checks first and the
others follow only once it passed, so a refused job stops every rank with nothing written.

Resuming reopens the same run (Workspace.resume_run), deletes the metric points the interrupted process
logged after its last checkpoint, and continues from that checkpoint: the steps that follow are the
same steps, with the same data, RNG and optimizer state, so the final adapter is the one an
uninterrupted run makes.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from llmops.errors import LLMOpsError
from llmops.finetune import checkpoint as ckpt
from llmops.finetune import distributed
from llmops.finetune.train import LoraTrainer, Settings, StepStats, StopFlag, Stopped, fit

log = logging.getLogger(__name__)

__all__ = ["JobResult", "find_resumable", "run_job"]

KIND = "finetune"


@dataclass(frozen=True)
class JobResult:
    """What a job made: its run, the adapter version (None on ranks other than 0) and its figures."""

    run_id: str
    adapter: Any
    figures: dict = field(default_factory=dict)


def _run_params(job: Any, inputs: dict, trainer: LoraTrainer) -> dict:
    spec = job.spec
    params = {"job_digest": job.digest, "job_file": job.path.name, "base_model": inputs["base"].ref,
              "dataset": inputs["dataset"].ref, "output": spec.output,
              "train_examples": len(trainer.train_set), "validation_examples": len(trainer.validation),
              "total_steps": trainer.plan.total_steps, "global_batch": trainer.plan.global_batch,
              "trainable_params": sum(p.numel() for p in trainer.params)}
    params.update({f"lora.{k}": v for k, v in spec.lora.model_dump(mode="json").items()})
    params.update({f"training.{k}": v for k, v in spec.training.model_dump(mode="json").items() if v is not None})
    return params


def _placement(trainer: LoraTrainer) -> dict:
    """Where it ran: may differ between a job and its resumption, so recorded apart from the job's params."""
    return {"world_size": trainer.dist.world_size, "device": trainer.device.type, "precision": trainer.precision}


def find_resumable(ws: Any, job: Any) -> str:
    """The id of the last run of this job (same spec digest) that did not finish, or a clear error."""
    runs = ws.search_runs(f"attributes.kind = '{KIND}' AND params.job_digest = '{job.digest}'",
                          order_by="attributes.started_at DESC", limit=1)
    if not runs:
        raise LLMOpsError(f"nothing to resume: no fine-tuning run of {job.path.name} with this spec (digest "
                          f"{job.digest[:12]}); run it without --resume")
    last = runs[0]
    if last.state == "finished":
        raise LLMOpsError(f"nothing to resume: the last run of {job.path.name}, {last.id}, finished; "
                          "run it without --resume to train again")
    if last.state == "running":
        raise LLMOpsError(f"run {last.id} of {job.path.name} is still running (pid {last.pid} on {last.host}); "
                          "stop it first")
    return last.id


def _check_resume_target(ws: Any, job: Any, run_id: str) -> str:
    info = ws.get_run(run_id)
    if info.kind != KIND:
        raise LLMOpsError(f"run {info.id} is a {info.kind!r} run, not a fine-tuning run; give a finetune run id")
    if info.params.get("job_digest") != job.digest:
        raise LLMOpsError(f"run {info.id} was made from another job spec (digest "
                          f"{str(info.params.get('job_digest'))[:12]}, this one {job.digest[:12]}); resume it with "
                          "the spec it was made from, or run this one without --resume")
    return info.id


def _checked(ws: Any, job_path: Any, device: str, dist: distributed.Dist) -> tuple[Any, Any]:
    """Load and check the job: rank 0 first; the other ranks only once rank 0 passed."""
    from llmops.finetune.checks import check_job
    from llmops.finetune.spec import load_job

    def check() -> tuple[Any, Any]:
        job = load_job(job_path, ws)
        report = check_job(ws, job, device=device)
        report.raise_for_errors()
        return job, report

    if not dist.enabled:
        return check()
    got, refused = None, None
    if dist.is_main:
        try:
            got = check()
        except BaseException as exc:
            refused = str(exc) or type(exc).__name__
            dist.broadcast(refused)
            raise
    refused = dist.broadcast(refused)
    if refused is not None:
        raise LLMOpsError(f"rank 0 refused the job: {refused}")
    return got if dist.is_main else check()


def _progress(enabled: bool, total: int, start: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, unit="step", desc="fine-tuning", dynamic_ncols=True)


def run_job(ws: Any, job_path: str | os.PathLike[str], *, device: str = "auto", resume: bool | str = False,
            progress: bool = True, on_step: Callable[[StepStats, Any], None] | None = None) -> JobResult:
    """Check the job, train it (or resume it), push the adapter; see the module docstring.

    `resume=True` continues the last unfinished run of this job, `resume="RUN_ID"` that run.
    Ctrl-C (or SIGTERM) stops after the current step, saves a checkpoint, marks the run `killed` and
    raises `Stopped` (a KeyboardInterrupt with `.step` and `.run_id`; the CLI exits 130).
    `on_step(stats, run)` is called on rank 0 after each step is logged (and checkpointed when due).
    """
    dist = distributed.from_env()
    dev = distributed.resolve_device(device, dist)
    dist.start(dev)
    try:
        job, report = _checked(ws, job_path, device, dist)
        return _train(ws, job, report, dist, dev, resume=resume, progress=progress, on_step=on_step)
    finally:
        dist.close()


def _train(ws: Any, job: Any, report: Any, dist: distributed.Dist, device: Any, *, resume: bool | str,
           progress: bool, on_step: Callable | None) -> JobResult:
    from llmops.finetune.adapters import push_adapter
    from llmops.finetune.checks import lora_config

    spec, dataset = job.spec, report.dataset
    run_id, checkpoint, inputs = None, None, {}
    if dist.is_main:
        if resume:
            run_id = _check_resume_target(ws, job, resume) if isinstance(resume, str) else find_resumable(ws, job)
            checkpoint = ckpt.latest(ckpt.checkpoint_root(ws.home, run_id))
            if checkpoint is not None and checkpoint.state.job_digest != job.digest:
                raise LLMOpsError(f"{checkpoint.path} belongs to another job spec; delete it or resume with that spec")
        inputs = report.register_inputs(ws)  # the base model and dataset versions (pushed once)
    settings = Settings.from_spec(spec.training)
    tokenizer = report.model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # report.model.model is a private copy of the base weights: PEFT may change it in place
    trainer = LoraTrainer(report.model.model, dataset.train, dataset.validation, settings, lora_config(spec),
                          device=device, dist=dist, pad_id=pad_id or 0)
    stop = StopFlag()
    with ExitStack() as stack:
        run = None
        if dist.is_main:
            if run_id is None:
                run = stack.enter_context(ws.start_run(job.path.stem, kind=KIND, tags={"job": str(job.path)}))
            else:
                run = stack.enter_context(ws.resume_run(run_id, drop_metrics_after=checkpoint.step if checkpoint else 0))
        run_id = dist.broadcast(run.id if run else None)
        root = ckpt.checkpoint_root(ws.home, run_id) if dist.is_main else None
        start = _restore(trainer, checkpoint, dist, resume=bool(resume))
        if run is not None:
            _log_params(run, job, inputs, trainer, resumed=bool(resume))
            run.flush()  # the job digest is in the store at once: a job killed early can still be resumed
        stack.enter_context(stop.installed())
        bar = stack.enter_context(_progress(progress and dist.is_main, trainer.plan.total_steps, start))
        figures = _Figures(trainer)

        def logged(stats: StepStats) -> None:
            figures.add(stats)
            if run is not None:
                if stats.step % settings.log_every == 0 or stats.step == trainer.plan.total_steps:
                    run.log_metrics({"loss": stats.loss, "lr": stats.lr, "grad_norm": stats.grad_norm,
                                     "tokens_per_s": stats.tokens_per_s,
                                     "epoch": stats.step / trainer.plan.steps_per_epoch}, step=stats.step)
                bar.set_postfix(loss=f"{stats.loss:.4f}", refresh=False)
                bar.update(1)

        def evaluated(step: int, val_loss: float) -> None:
            figures.val_loss = val_loss
            if run is not None:
                run.log_metric("val_loss", val_loss, step=step)

        def save(step: int) -> None:
            trainer.checkpoint(root, step, job.digest)
            if run is not None:
                run.set_tag("checkpoint_step", step)

        after = (lambda stats: on_step(stats, run)) if on_step is not None and run is not None else None
        try:
            fit(trainer, start_step=start, stop=stop, on_step=logged, on_eval=evaluated, save=save, after_step=after)
        except Stopped as exc:
            exc.run_id = run_id
            if run is not None:
                log.warning("stopped after step %d: checkpoint saved, run %s marked killed", exc.step, run_id)
            raise
        if not dist.is_main:
            return JobResult(run_id, None, figures.to_dict())
        folder = _save_adapter(trainer, root)
        av = push_adapter(ws, spec.output, folder, base_av=inputs["base"], dataset_av=inputs["dataset"], job=job,
                          run=run, validation_av=inputs["validation"], uses=inputs["uses"], meta=figures.to_dict())
        run.set_tag("adapter", av.ref)
        return JobResult(run_id, av, figures.to_dict())


def _restore(trainer: LoraTrainer, checkpoint: ckpt.Checkpoint | None, dist: distributed.Dist, *, resume: bool) -> int:
    """Load the checkpoint on every rank (rank 0 reads it and sends it): returns the last step done."""
    if not resume:
        return 0
    parts = None
    if dist.is_main and checkpoint is not None:
        parts = (checkpoint.state, ckpt.load_adapter_weights(checkpoint), ckpt.load_trainer_state(checkpoint))
    parts = dist.broadcast(parts)
    if parts is None:
        log.info("no checkpoint to resume from: training from step 1 in the same run")
        return 0
    state, weights, saved = parts
    trainer.load_state(state, weights, saved, where=str(checkpoint.path) if checkpoint else "checkpoint")
    log.info("resuming after step %d of %d", state.step, trainer.plan.total_steps)
    return state.step


def _log_params(run: Any, job: Any, inputs: dict, trainer: LoraTrainer, *, resumed: bool) -> None:
    params = _run_params(job, inputs, trainer)
    placement = _placement(trainer)
    if not resumed:
        run.log_params({**params, **placement})
        return
    run.log_params(params)  # the same spec: the same values (params are write-once)
    run.set_tags({f"resumed.{k}": v for k, v in placement.items()})


def _save_adapter(trainer: LoraTrainer, root: Path) -> Path:
    """The final adapter as a PEFT folder beside the checkpoints (published whole)."""
    import shutil

    from llmops.atomic import atomic_dir

    final = root / "adapter"
    if final.exists():
        shutil.rmtree(final)
    with atomic_dir(final) as tmp:
        trainer.peft_model.save_pretrained(tmp, safe_serialization=True)
    return final


class _Figures:
    """Training figures for the result and the adapter's meta (this process's view)."""

    def __init__(self, trainer: LoraTrainer):
        self.trainer = trainer
        self.steps: list[StepStats] = []
        self.val_loss: float | None = None
        self.started = time.perf_counter()

    def add(self, stats: StepStats) -> None:
        self.steps.append(stats)

    def to_dict(self) -> dict:
        t, steps = self.trainer, self.steps
        seconds = sum(s.seconds for s in steps)
        out = {"steps": t.plan.total_steps, "steps_run": len(steps), "train_examples": len(t.train_set),
               "validation_examples": len(t.validation), "world_size": t.dist.world_size,
               "device": t.device.type, "precision": t.precision,
               "trainable_params": sum(p.numel() for p in t.params),
               "seconds": round(time.perf_counter() - self.started, 3),
               "seconds_per_step": round(seconds / len(steps), 4) if steps else None,
               "tokens_per_s": round(sum(s.tokens for s in steps) / seconds, 1) if seconds > 0 else None}
        if steps:
            out["train_loss"] = steps[-1].loss
        if self.val_loss is not None:
            out["val_loss"] = self.val_loss
        return out
