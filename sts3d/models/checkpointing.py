"""Activation checkpointing of residual blocks (``with_cp``, the seed's name): a block's activations are dropped
after its forward and recomputed during the backward, trading about one extra forward for memory.

Applied to a built backbone, so no block constructor carries the flag. The recomputation runs the block's
BatchNorms a second time in training mode, so their running statistics take one extra momentum step per block
and iteration (as in mmcv's ``with_cp``); dropout and drop-path draw the same numbers both times.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _residual_blocks() -> tuple[type, ...]:
    # imported here: the model files import the factory, which applies this
    from .r2plus1d import BasicBlock2Plus1d
    from .resnet3d import Bottleneck3d
    from .x3d import BlockX3D

    return Bottleneck3d, BasicBlock2Plus1d, BlockX3D


def _checkpointed(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return checkpoint(forward, x, use_reentrant=False)
    return forward(x)


def checkpoint_blocks(model: nn.Module) -> int:
    """Checkpoint every residual block of ``model`` (in place); returns how many."""
    blocks = [m for m in model.modules() if isinstance(m, _residual_blocks())]
    for block in blocks:
        block.forward = functools.partial(_checkpointed, type(block).forward.__get__(block))
    return len(blocks)
