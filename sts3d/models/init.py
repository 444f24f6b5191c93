"""Weight initialisation shared by the backbones and the image models."""
from __future__ import annotations

from torch import nn


def init_conv_bn_(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) for every 3D conv, weight 1 / bias 0 for every BatchNorm (the original's)."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
