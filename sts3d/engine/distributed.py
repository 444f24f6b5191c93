"""Process groups from ``torchrun``'s environment, and the collectives both training stages use.

One process per device. ``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them the run is a
single plain process. NCCL joins CUDA devices, gloo CPU processes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Optional, Sized

import torch
import torch.distributed as dist
from timm.utils import distribute_bn
from torch import nn
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: its global and local rank, the number of processes, and its device."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def primary(self) -> bool:
        """The process that writes files and prints."""
        return self.rank == 0


def init_distributed(device: Optional[str] = None) -> DistContext:
    """Join the process group ``torchrun`` describes (if any) and pick this process's device.

    ``device``: ``'cuda'`` or ``'cpu'``; ``None`` takes CUDA when available. Each process takes CUDA device
    ``LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible")
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    elif kind == "cpu":
        target = torch.device("cpu")
    else:
        raise ValueError(f"unknown device {kind!r}: use cuda or cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo",
                                device_id=target if target.type == "cuda" else None)
    return DistContext(rank, local_rank, world_size, target)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; unchanged in a single process."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def sync_batch_norm_stats(model: nn.Module, ctx: DistContext, mode: str = "reduce") -> None:
    """Make BN running statistics equal on every process after an epoch: ``'reduce'`` averages them (the seed's
    ``--dist-bn reduce``), ``'broadcast'`` copies rank 0's, ``''`` leaves them."""
    if ctx.distributed and mode:
        distribute_bn(model, ctx.world_size, reduce=mode == "reduce")


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...``: every sample exactly once over all processes, no padding, so that
    summed metrics are exact (``DistributedSampler`` repeats samples to even out the shards)."""

    def __init__(self, dataset: Sized, ctx: DistContext) -> None:
        self.indices = range(ctx.rank, len(dataset), ctx.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
