"""X3D (Feichtenhofer, 2020) as the seed's ``X3D`` builds it, with STS in the depthwise 3x3x3 conv of every block.

The seed's switch ``reshape_st=True`` turns each block's ``conv2`` (depthwise 3x3x3) into an
:class:`sts3d.models.sts.STSConv3d` (depthwise case); the stem, SE, downsample and 1x1x1 convs never change.
Module names follow the original, so its checkpoints load without renaming.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from .convs import ConvModule, ConvType, block_conv_type
from .depthwise import DepthwiseImpl
from .drop_path import drop_path_layer, drop_path_schedule
from .factory import BackboneEntry, register_backbone
from .init import init_conv_bn_
from .inputs import check_clip_input
from .sts import STSMode

BASE_STAGE_BLOCKS: tuple[int, ...] = (1, 2, 5, 3)  # X3D's per-stage repeats before the depth factor gamma_d


def round_width(width: float, multiplier: float = 1.0, min_width: int = 8, divisor: int = 8) -> int:
    """``width * multiplier`` rounded to the nearest multiple of ``divisor`` (at least ``min_width``), never more
    than 10 % below the unrounded value (X3D's channel rounding)."""
    width *= multiplier
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


class SEModule(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(fc2(relu(fc1(mean_thw(x)))))``, fcs as biased 1x1x1 convs.

    The bottleneck width is ``round_width(channels * ratio)``. Input and output ``(N, C, T, H, W)``.
    """

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        bottleneck = round_width(channels, ratio)
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.fc1 = nn.Conv3d(channels, bottleneck, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv3d(bottleneck, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BlockX3D(nn.Module):
    """X3D's inverted bottleneck: 1x1x1 expand -> depthwise 3x3x3 (+ SE) -> Swish -> 1x1x1 project, plus residual.

    ``dw_conv_type`` builds the depthwise conv (a ``DepthwiseConv3d``, or STS with ``reshape_st``). The spatial
    stride sits on the depthwise conv. ``out = relu(drop_path(branch) + shortcut(x))``. Input
    ``(N, inplanes, T, H, W)``, output ``(N, outplanes, T, H / spatial_stride, W / spatial_stride)``.
    """

    def __init__(self, inplanes: int, planes: int, outplanes: int, dw_conv_type: ConvType = nn.Conv3d,
                 spatial_stride: int = 1, downsample: Optional[nn.Module] = None, se_ratio: Optional[float] = None,
                 use_swish: bool = True, bn_eps: float = 1e-5, drop_path: float = 0.0) -> None:
        super().__init__()
        # Registration order (downsample, conv1, conv2, conv3, se_module) gives the original's state_dict key order.
        self.downsample = downsample
        self.conv1 = ConvModule(inplanes, planes, 1, bn_eps=bn_eps, activation=nn.ReLU)
        self.conv2 = ConvModule(planes, planes, 3, stride=(1, spatial_stride, spatial_stride), padding=1,
                                groups=planes, conv_type=dw_conv_type, bn_eps=bn_eps, activation=None)
        self.swish = nn.SiLU() if use_swish else nn.Identity()  # SiLU is Swish, x * sigmoid(x)
        self.conv3 = ConvModule(planes, outplanes, 1, bn_eps=bn_eps, activation=None)
        self.se_module = SEModule(planes, se_ratio) if se_ratio else None
        self.drop_path = drop_path_layer(drop_path)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        if self.se_module is not None:
            out = self.se_module(out)
        out = self.conv3(self.swish(out))
        return self.relu(self.drop_path(out) + identity)


class X3D(nn.Module):
    """The X3D backbone of the seed (mmaction2's ``X3D``); the defaults build X3D-S.

    Stem: ``conv1_s`` 1x3x3 (3 -> w, stride (1, 2, 2), no BN) and ``conv1_t`` depthwise 5x1x1 + BN + ReLU. Four stages
    of :class:`BlockX3D` with output widths ``w * 2**i`` (``w = round_width(base_channels, gamma_w)``), inner widths
    ``int(gamma_b * w * 2**i)`` and ``ceil(gamma_d * [1, 2, 5, 3])`` blocks; then ``conv5`` 1x1x1 + BN + ReLU to
    ``int(gamma_b * w * 8)`` channels.

    Args:
        gamma_w, gamma_b, gamma_d: X3D's width, bottleneck and depth factors (X3D-S: 1, 2.25, 2.2).
        base_channels: the stem width before ``gamma_w``.
        spatial_strides: per stage, on the first block's depthwise conv.
        se_style: ``'half'`` (SE in blocks 0, 2, 4, ... of each stage) or ``'all'``; ``se_ratio`` 0/None disables SE.
        use_swish: Swish after the depthwise conv (and SE).
        reshape_st: the seed's STS switch, STS in every block's depthwise conv.
        sts_mode: ``'faithful'`` or ``'aligned'`` STS (see :mod:`sts3d.models.sts`); only used with ``reshape_st``.
        depthwise_impl: how the depthwise 3x3x3 convs are computed (see :mod:`sts3d.models.depthwise`).
        drop_path_rate: stochastic depth on the residual branch, linear over all blocks; 0 adds no modules.
        zero_init_residual: start every block's last BN at zero (the original's default for X3D).

    Input ``(N, in_channels, T, H, W)``; output ``(N, int(gamma_b * 8 w), T, H / 32, W / 32)``
    (``(N, 432, T, H/32, W/32)`` for X3D-S; odd sizes round up at every stride-2 conv).
    """

    def __init__(self, gamma_w: float = 1.0, gamma_b: float = 2.25, gamma_d: float = 2.2, in_channels: int = 3,
                 base_channels: int = 24, spatial_strides: Sequence[int] = (2, 2, 2, 2), se_style: str = "half",
                 se_ratio: Optional[float] = 1 / 16, use_swish: bool = True, reshape_st: bool = False,
                 bn_eps: float = 1e-5, sts_mode: STSMode = "faithful", drop_path_rate: float = 0.0,
                 zero_init_residual: bool = True, depthwise_impl: DepthwiseImpl = "auto") -> None:
        super().__init__()
        if se_style not in ("half", "all"):
            raise ValueError(f"X3D: se_style must be 'half' or 'all', got {se_style!r}")
        stage_blocks = [math.ceil(gamma_d * n) for n in BASE_STAGE_BLOCKS]
        if len(spatial_strides) != len(stage_blocks):
            raise ValueError(f"X3D: spatial_strides needs {len(stage_blocks)} entries, got {tuple(spatial_strides)}")
        self.stage_blocks = stage_blocks
        width = round_width(base_channels, gamma_w)
        # The single place where the seed's switch becomes a conv type (only the depthwise conv2 uses it).
        dw_conv_type = block_conv_type(reshape_st, sts_mode, depthwise_impl)

        self.in_channels = in_channels
        self.conv1_s = ConvModule(in_channels, width, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), norm=False,
                                  activation=None)
        self.conv1_t = ConvModule(width, width, (5, 1, 1), padding=(2, 0, 0), groups=width, bn_eps=bn_eps,
                                  activation=nn.ReLU)

        rates = iter(drop_path_schedule(drop_path_rate, sum(stage_blocks)))
        inplanes = width
        for i, num_blocks in enumerate(stage_blocks):
            outplanes = width * 2 ** i
            planes = int(gamma_b * outplanes)
            s = spatial_strides[i]
            downsample = None
            if s != 1 or inplanes != outplanes:
                downsample = ConvModule(inplanes, outplanes, 1, stride=(1, s, s), bn_eps=bn_eps, activation=None)
            blocks = []
            for j in range(num_blocks):
                first = j == 0
                with_se = se_ratio and (se_style == "all" or j % 2 == 0)
                blocks.append(BlockX3D(
                    inplanes if first else outplanes, planes, outplanes, dw_conv_type,
                    spatial_stride=s if first else 1, downsample=downsample if first else None,
                    se_ratio=se_ratio if with_se else None, use_swish=use_swish, bn_eps=bn_eps,
                    drop_path=next(rates)))
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = outplanes
        self.num_features = int(gamma_b * inplanes)
        self.conv5 = ConvModule(inplanes, self.num_features, 1, bn_eps=bn_eps, activation=nn.ReLU)
        self.init_weights(zero_init_residual)

    def init_weights(self, zero_init_residual: bool = True) -> None:
        """Kaiming-normal (fan-out) convs with zero biases and unit BNs, the original's from-scratch init."""
        init_conv_bn_(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BlockX3D):
                    nn.init.zeros_(m.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, T, H, W)`` -> ``(N, num_features, T, H / 32, W / 32)``."""
        check_clip_input(x, type(self).__name__, self.in_channels)
        x = self.conv1_t(self.conv1_s(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.conv5(x)


register_backbone("x3d_s", BackboneEntry(
    builder=X3D,
    defaults=dict(gamma_w=1.0, gamma_b=2.25, gamma_d=2.2, reshape_st=False),
    sts_switches=dict(reshape_st=True),
    clip_shape=(13, 160, 160),
    family="X3D",
    head="x3d",
    feat_channels=432,
    depthwise=True,
))
