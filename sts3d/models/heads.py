"""Classification heads with the original's key names (``cls_head.fc_cls``, ``cls_head.fc1`` / ``fc2``)."""
from __future__ import annotations

from typing import Union

import torch
from torch import nn

Features = Union[torch.Tensor, tuple[torch.Tensor, ...]]


def _init_linear(layer: nn.Linear, std: float) -> None:
    nn.init.normal_(layer.weight, 0.0, std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class I3DHead(nn.Module):
    """Global average pool -> dropout -> ``fc_cls``. Input ``(N, C, T, H, W)``, output ``(N, num_classes)``."""

    def __init__(self, num_classes: int, in_channels: int, dropout: float = 0.5, init_std: float = 0.01) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc_cls = nn.Linear(in_channels, num_classes)
        _init_linear(self.fc_cls, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_cls(self.dropout(self.avg_pool(x).flatten(1)))


class SlowFastHead(I3DHead):
    """Pools each pathway and classifies their concatenation in the original's order ``[fast, slow]``.

    Input the backbone's ``(slow (N, C_s, ...), fast (N, C_f, ...))``; ``in_channels = C_s + C_f``. Dropout
    defaults to mmaction's 0.8 for this head (0.5 for the others); the seed's configs set 0.5.
    """

    def __init__(self, num_classes: int, in_channels: int, dropout: float = 0.8, init_std: float = 0.01) -> None:
        super().__init__(num_classes, in_channels, dropout=dropout, init_std=init_std)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        slow, fast = x
        pooled = torch.cat((self.avg_pool(fast), self.avg_pool(slow)), dim=1).flatten(1)
        return self.fc_cls(self.dropout(pooled))


class X3DHead(nn.Module):
    """Pool -> ``fc1`` (no bias) -> ReLU -> dropout -> ``fc2``. Input ``(N, 432, T, H, W)``."""

    def __init__(self, num_classes: int, in_channels: int, dropout: float = 0.5, init_std: float = 0.01,
                 mid_channels: int = 2048, fc1_bias: bool = False) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc1 = nn.Linear(in_channels, mid_channels, bias=fc1_bias)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(mid_channels, num_classes)
        _init_linear(self.fc1, init_std)
        _init_linear(self.fc2, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.relu(self.fc1(self.pool(x).flatten(1)))))
