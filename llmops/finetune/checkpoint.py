"""Training checkpoints: what `finetune run --resume` needs to continue exactly where a job stopped.

A checkpoint is a folder `<ws.home>/finetune/<run_id>/checkpoint-<step>/`, published whole by a rename
(llmops.atomic.atomic_dir), so a crash while writing leaves the previous one intact:

    adapter_model.safetensors, adapter_config.json   the LoRA weights: a loadable PEFT adapter folder
    trainer_state.pt                                 optimizer, scheduler, grad scaler, each rank's RNG state
    state.json                                       step, epoch, position in the epoch, seed, world size

`trainer_state.pt` is the only pickle: we write it and read it back ourselves, with
`torch.load(weights_only=True)`, which refuses anything but tensors and plain containers. The newest
KEEP checkpoints are kept.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmops.atomic import atomic_dir
from llmops.errors import LLMOpsError

log = logging.getLogger(__name__)

__all__ = ["KEEP", "Checkpoint", "CheckpointState", "checkpoint_root", "checkpoints", "latest",
           "load_adapter_weights", "load_trainer_state", "prune", "save"]

KEEP = 2
_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_VERSION = 1


@dataclass(frozen=True)
class CheckpointState:
    """Where training stands after optimizer step `step` (1-based: the data of step+1 comes next)."""

    step: int
    epoch: int
    position: int  # optimizer steps done within `epoch`
    total_steps: int
    seed: int
    world_size: int
    job_digest: str
    version: int = STATE_VERSION


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    state: CheckpointState

    @property
    def step(self) -> int:
        return self.state.step


def checkpoint_root(home: Path, run_id: str) -> Path:
    """Where the checkpoints (and the final adapter folder) of one fine-tuning run live."""
    return Path(home) / "finetune" / run_id


def save(root: Path, state: CheckpointState, *, peft_model: Any, trainer_state: dict, keep: int = KEEP) -> Checkpoint:
    """Write `checkpoint-<step>` under `root` atomically, then drop all but the newest `keep`.

    A checkpoint of the same step already there (a resumed job stopped again before its next step)
    holds the same state, so it is kept as it is.
    """
    import torch

    final = root / f"checkpoint-{state.step}"
    if _read_state(final) == state:
        return Checkpoint(final, state)
    if final.exists():  # an older job's leftover under the same name: replace it whole
        shutil.rmtree(final)
    with atomic_dir(final) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "README.md").unlink(missing_ok=True)  # PEFT's model card stub: nothing in it to keep
        torch.save(trainer_state, tmp / "trainer_state.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    prune(root, keep)
    log.info("checkpoint at step %d in %s", state.step, final)
    return Checkpoint(final, state)


def _read_state(folder: Path) -> CheckpointState | None:
    try:
        data = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        return CheckpointState(**data)
    except (OSError, ValueError, TypeError):
        return None


def checkpoints(root: Path) -> list[Checkpoint]:
    """The complete checkpoints under `root`, oldest first (temp folders of a killed write are ignored)."""
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        m = _NAME.match(folder.name)
        if m and folder.is_dir():
            state = _read_state(folder)
            if state is not None and state.step == int(m.group(1)):
                found.append(Checkpoint(folder, state))
            else:
                log.warning("ignoring %s: its state.json is missing or unreadable", folder)
    return sorted(found, key=lambda c: c.step)


def latest(root: Path) -> Checkpoint | None:
    found = checkpoints(root)
    return found[-1] if found else None


def prune(root: Path, keep: int = KEEP) -> None:
    """Keep the newest `keep` checkpoints; also sweep temp folders left by a write that was killed."""
    for old in checkpoints(root)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    for stray in root.glob(".checkpoint-*.tmp"):
        shutil.rmtree(stray, ignore_errors=True)


def load_trainer_state(ckpt: Checkpoint) -> dict:
    """The optimizer/scheduler/RNG states of a checkpoint we wrote (weights_only: no code runs on load)."""
    import torch

    path = ckpt.path / "trainer_state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, or not ours: say which file, never run it
        raise LLMOpsError(f"cannot read the checkpoint state {path}: {exc}; delete that checkpoint folder "
                          "to resume from the one before it") from None


def load_adapter_weights(ckpt: Checkpoint) -> dict:
    """The LoRA weights of a checkpoint, as PEFT saved them (safetensors: no code runs on load)."""
    from safetensors.torch import load_file

    path = ckpt.path / "adapter_model.safetensors"
    try:
        return load_file(str(path))
    except Exception as exc:
        raise LLMOpsError(f"cannot read the checkpoint weights {path}: {exc}; delete that checkpoint folder "
                          "to resume from the one before it") from None
