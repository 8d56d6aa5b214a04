"""Multi-process training through ``torchrun``: NCCL on CUDA, gloo on the CPU.

``torchrun --nproc_per_node=N train.py ...`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``;
without them the run is a single process and nothing here does anything.
"""

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str) -> DistributedContext:
    """Join the process group started by torchrun (if any) and return this process's place."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(rank=0, world_size=1, local_rank=0)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def all_ranks_finite(value: torch.Tensor, context: DistributedContext) -> bool:
    """True when the loss is finite on every rank (a step is skipped on all ranks together)."""
    finite = torch.isfinite(value.detach()).all().to(torch.float32).reshape(1)
    if context.enabled:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item() > 0)


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def shared_run_dir(run_dir: str, context: DistributedContext) -> str:
    """Rank 0's run directory on every rank (each rank's Hydra clock may name its own)."""
    if not context.enabled:
        return run_dir
    holder = [run_dir]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def replica_checksums(model: torch.nn.Module, context: DistributedContext) -> list[float]:
    """A float64 checksum of the weights on every rank; equal entries mean identical replicas."""
    total = torch.zeros(1, dtype=torch.float64)
    for index, parameter in enumerate(model.parameters()):
        # Position-dependent weights make a swap of two tensors change the sum.
        total += (index + 1) * parameter.detach().double().cpu().sum()
    if not context.enabled:
        return [float(total)]
    gathered = [torch.zeros_like(total) for _ in range(context.world_size)]
    dist.all_gather(gathered, total)
    return [float(value) for value in gathered]


def check_replicas(model: torch.nn.Module, context: DistributedContext) -> None:
    """Under DDP every rank must end with the same weights; a mismatch is a bug, not noise."""
    checksums = replica_checksums(model, context)
    if len(set(checksums)) > 1:
        raise RuntimeError(f"ranks hold different weights after training: {checksums}")
    if context.enabled:
        log.info(
            "replica check: %d ranks hold identical weights (checksum %.10e)",
            context.world_size,
            checksums[0],
        )
