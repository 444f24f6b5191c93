"""Stochastic depth for the residual blocks (timm's ``DropPath``) and its per-block schedule."""
from __future__ import annotations

from timm.layers import DropPath
from torch import nn


def drop_path_schedule(rate: float, num_blocks: int) -> list[float]:
    """Linearly increasing drop rates ``rate * i / (num_blocks - 1)`` for blocks ``i = 0 .. num_blocks - 1``."""
    if num_blocks <= 1:
        return [rate] * num_blocks
    return [rate * i / (num_blocks - 1) for i in range(num_blocks)]


def drop_path_layer(rate: float) -> nn.Module:
    """A ``DropPath`` for the residual branch, or an identity when ``rate`` is 0 (no module in the state dict)."""
    return DropPath(rate) if rate > 0 else nn.Identity()
