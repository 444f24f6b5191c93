"""Precise BatchNorm: after an epoch, recompute every BN layer's running statistics as the plain average of the
batch statistics over a number of training batches, with the weights fixed (the seed's ``precise_bn``).

The running averages that training leaves lag behind the weights; averaging fresh batch statistics gives
statistics that belong to the final weights. With several processes, each averages its own batches and the
results are averaged across processes.
"""
from __future__ import annotations

import itertools
import warnings
from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches: Iterable[torch.Tensor], num_iters: int, available: int,
                    forward: Callable[[torch.Tensor], object]) -> int:
    """Average BN batch statistics over ``min(num_iters, available)`` of ``batches`` (each passed to ``forward``);
    return the number of batches used. Warns once when the loader holds fewer than ``num_iters`` batches (the
    original asserted instead)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not norms:
        return 0
    used = min(num_iters, available)
    if used < num_iters:
        warnings.warn(f"precise_bn: num_iters={num_iters} but the loader holds only {available} batches; "
                      f"averaging over {available}", RuntimeWarning, stacklevel=2)
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone()) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: each batch's statistics weigh the same
    count = 0
    for batch in itertools.islice(batches, used):
        forward(batch)
        count += 1
    for m, (momentum, mean, var) in zip(norms, saved):
        m.momentum = momentum
        if count == 0:
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
    if dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        for m in norms:
            for stat in (m.running_mean, m.running_var):
                dist.all_reduce(stat)
                stat.div_(world)
    return count
