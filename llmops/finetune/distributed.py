"""Data parallelism for fine-tuning: one process per device, started by `torchrun` (or `accelerate launch`).

The launcher tells each process who it is through the environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); a plain `llmops finetune run` sees none of them and is rank 0 of 1. Every
rank trains on its share of each global batch, so the global batch (and the result) is the same
whatever the number of processes; rank 0 alone opens the run, writes metrics and checkpoints and pushes
the adapter. The collectives here are the few the training loop needs, each a no-op for one process.

    # several GPUs (or CPU processes) on one machine
    torchrun --standalone --nproc_per_node 4 -m llmops.cli finetune run finetune/job.yaml
    # several machines: run on each, with its --node_rank; every machine needs the job, its data and the
    # base model at the same paths, and the store (LLMOPS_STORE_URL, PostgreSQL) must be reachable by all
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        -m llmops.cli finetune run finetune/job.yaml

Checkpoints are written by rank 0 alone; on `--resume` rank 0 reads the last one and sends it to the
other ranks over the process group, so the other machines need no copy of `.llmops/finetune/`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

from llmops.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["Dist", "from_env", "resolve_device", "shard"]


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not a whole number; "
                          "it is set by torchrun: launch with `torchrun --nproc_per_node N -m llmops.cli ...`") from None
    if value < 0:
        raise ConfigError(f"environment variable {name}={value} is negative; it is set by torchrun")
    return value


@dataclass
class Dist:
    """Who this process is in the job, and the collectives it joins (no-ops when `world_size` is 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Any = "cpu"  # torch.device of this rank; collectives of nccl need their tensors there
    started: bool = False  # whether this object started the process group (and must end it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def start(self, device: Any) -> None:
        """Join the process group: gloo for CPU training, nccl for CUDA."""
        self.device = device
        if not self.enabled:
            return
        import torch.distributed as td

        if td.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            import torch

            torch.cuda.set_device(device)
        td.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size,
                              timeout=timedelta(minutes=30))
        self.started = True
        log.info("rank %d of %d joined the %s process group", self.rank, self.world_size, backend)

    def close(self) -> None:
        if self.started:
            import torch.distributed as td

            td.destroy_process_group()
            self.started = False

    def sum(self, values: Sequence[float]) -> list[float]:
        """Sum each value over the ranks (float64, so loss sums add up exactly enough to compare)."""
        if not self.enabled:
            return [float(v) for v in values]
        import torch
        import torch.distributed as td

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        td.all_reduce(t, op=td.ReduceOp.SUM)
        return t.tolist()

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as td

            td.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (for small values: an error message, a run id)."""
        if not self.enabled:
            return obj
        import torch.distributed as td

        box = [obj if self.is_main else None]
        td.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (RNG states for a checkpoint)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out


def from_env() -> Dist:
    """This process's place in the job, from the variables torchrun sets (rank 0 of 1 without them)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or rank >= world:
        raise ConfigError(f"RANK={rank} does not fit WORLD_SIZE={world}; launch with torchrun, which sets both")
    if world > 1 and not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        raise ConfigError("WORLD_SIZE is above 1 but MASTER_ADDR/MASTER_PORT are not set; "
                          "launch with `torchrun --nproc_per_node N -m llmops.cli finetune run SPEC`")
    return Dist(rank=rank, world_size=world, local_rank=local)


def resolve_device(device: str, dist: Dist):
    """`auto` is CUDA when present, else CPU; under torchrun each rank takes the GPU of its LOCAL_RANK."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not one of auto, cpu, cuda")
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise ConfigError("--device cuda was asked for but CUDA is not available here "
                          "(no GPU, or a CPU-only torch); use --device cpu or auto")
    if device == "cpu" or not has_cuda:
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if dist.enabled and dist.local_rank >= count:
        raise ConfigError(f"LOCAL_RANK {dist.local_rank} has no GPU ({count} visible); "
                          f"start at most {count} processes per machine (--nproc_per_node)")
    return torch.device("cuda", dist.local_rank if dist.enabled else torch.cuda.current_device())


def shard(items: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """Rank `rank`'s share of one micro-batch: every `world_size`-th item, so length-sorted batches stay balanced.

    >>> shard([10, 11, 12, 13, 14], 1, 2)
    [11, 13]
    """
    return list(items[rank::world_size])
