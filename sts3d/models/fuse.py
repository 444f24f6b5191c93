"""Fold inference BatchNorm into the conv before it (``tools/test.py --fuse-conv-bn``).

The conv keeps its class (an STS conv stays an STS conv) and its name; it gains a bias, and the BN becomes an
identity. Only for evaluation: the folded statistics no longer update.
"""
from __future__ import annotations

import torch
from torch import nn

from .convs import Conv2plus1d, ConvModule


@torch.no_grad()
def _fold(conv: nn.Conv3d, bn: nn.BatchNorm3d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every ``conv -> bn`` pair of the networks' conv units into the conv, in place; return ``model``."""
    model.eval()
    for module in list(model.modules()):
        if isinstance(module, ConvModule) and module.bn is not None:
            # a (2+1)D conv ends in its temporal conv, which the unit's BN follows
            last = module.conv.conv_t if isinstance(module.conv, Conv2plus1d) else module.conv
            _fold(last, module.bn)
            module.bn = None
        if isinstance(module, Conv2plus1d) and isinstance(module.bn_s, nn.BatchNorm3d):
            _fold(module.conv_s, module.bn_s)
            module.bn_s = nn.Identity()
    return model
