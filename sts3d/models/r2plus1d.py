"""R(2+1)D (Tran et al., 2018) as the seed's ``ResNet2Plus1d`` builds it, with STS in the temporal half of its convs.

Every conv of the network, stem and 1x1x1 downsample convs included, is a (2+1)D factorisation
(:class:`sts3d.models.convs.Conv2plus1d`: ``conv_s`` 1xkxk -> ``bn_s`` -> ReLU -> ``conv_t`` k_tx1x1). The seed switches
STS on through ``conv_cfg=dict(type='Conv2plus1d_reshape')``, which turns every ``conv_t`` with a temporal kernel into
an :class:`sts3d.models.sts.STSConv3d` (dense ``3x1x1`` case); there is no ``reshape_t`` flag for this model.
Module names follow the original, so its checkpoints load without renaming.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .convs import ConvModule, ConvType, conv_cfg_to_type
from .drop_path import drop_path_layer, drop_path_schedule
from .factory import BackboneEntry, register_backbone
from .init import init_conv_bn_
from .inputs import check_clip_input
from .sts import STSMode

# depth -> blocks per stage; all R(2+1)D depths the seed uses are BasicBlock nets.
STAGE_BLOCKS: dict[int, tuple[int, ...]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
_2PLUS1D_TYPES = ("Conv2plus1d", "Conv2plus1d_reshape")


def _same_padding(kernel: Sequence[int]) -> tuple[int, ...]:
    return tuple((k - 1) // 2 for k in kernel)


class BasicBlock2Plus1d(nn.Module):
    """Two (2+1)D 3x3x3 convs with a residual: ``relu(drop_path(conv2(conv1(x))) + shortcut(x))``.

    ``conv_type`` builds each conv (a (2+1)D type, possibly with STS in its temporal half). The stride
    ``(temporal_stride, spatial_stride, spatial_stride)`` sits on ``conv1``. With ``inflate=False`` both convs are
    1x3x3 (their temporal half is a 1x1x1 conv). Input ``(N, inplanes, T, H, W)``, output
    ``(N, planes, T / temporal_stride, H / spatial_stride, W / spatial_stride)``.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, conv_type: ConvType, spatial_stride: int = 1,
                 temporal_stride: int = 1, inflate: bool = True, downsample: Optional[nn.Module] = None,
                 bn_eps: float = 1e-3, drop_path: float = 0.0) -> None:
        super().__init__()
        kernel = (3, 3, 3) if inflate else (1, 3, 3)
        padding = _same_padding(kernel)
        # Registration order (conv1, conv2, downsample) gives the original's state_dict key order.
        self.conv1 = ConvModule(inplanes, planes, kernel, stride=(temporal_stride, spatial_stride, spatial_stride),
                                padding=padding, conv_type=conv_type, bn_eps=bn_eps, activation=nn.ReLU)
        self.conv2 = ConvModule(planes, planes, kernel, stride=1, padding=padding, conv_type=conv_type,
                                bn_eps=bn_eps, activation=None)
        self.downsample = downsample
        self.drop_path = drop_path_layer(drop_path)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        return self.relu(self.drop_path(out) + identity)


class ResNet2Plus1d(nn.Module):
    """The R(2+1)D backbone of the seed (mmaction2's ``ResNet2Plus1d``), fine-tuning settings by default.

    Stem: a (2+1)D ``conv1_kernel`` conv (3 -> 64, stride ``(conv1_stride_t, 2, 2)``) + BN + ReLU, then a
    1x3x3 max pool with stride ``(pool1_stride_t, 2, 2)``; no pool after the first stage. Four stages of
    :class:`BasicBlock2Plus1d` with widths 64/128/256/512.

    Args:
        depth: 18 or 34.
        conv_cfg: the seed's conv config, ``dict(type='Conv2plus1d')`` or ``dict(type='Conv2plus1d_reshape')``
            (STS in the temporal half of every (2+1)D conv).
        spatial_strides, temporal_strides: per stage, on the first block. STS needs temporal strides of 1.
        conv1_kernel, conv1_stride_t, pool1_stride_t: the stem.
        inflate: per stage, 1 for 3x3x3 block convs, 0 for 1x3x3 ones.
        bn_eps: eps of the ConvModule BNs (after each (2+1)D conv); the ``bn_s`` inside a (2+1)D conv keep the
            original's default 1e-5.
        sts_mode: ``'faithful'`` or ``'aligned'`` STS (see :mod:`sts3d.models.sts`); only used with STS on.
        drop_path_rate: stochastic depth on the residual branch, linear over all blocks; 0 adds no modules.
        zero_init_residual: start every block's last BN at zero (off in the seed's configs).

    Input ``(N, in_channels, T, H, W)``; output ``(N, 512, T / prod(temporal strides), H / 32, W / 32)``
    (with the default stem and pool temporal strides of 1).
    """

    def __init__(self, depth: int = 34, conv_cfg: Optional[dict] = None, in_channels: int = 3, base_channels: int = 64,
                 spatial_strides: Sequence[int] = (1, 2, 2, 2), temporal_strides: Sequence[int] = (1, 1, 1, 1),
                 conv1_kernel: Sequence[int] = (3, 7, 7), conv1_stride_t: int = 1, pool1_stride_t: int = 1,
                 inflate: Sequence[int] = (1, 1, 1, 1), bn_eps: float = 1e-3, sts_mode: STSMode = "faithful",
                 drop_path_rate: float = 0.0, zero_init_residual: bool = False) -> None:
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"ResNet2Plus1d: depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
        conv_cfg = dict(type="Conv2plus1d") if conv_cfg is None else conv_cfg
        if conv_cfg.get("type") not in _2PLUS1D_TYPES:
            raise ValueError(f"ResNet2Plus1d: conv_cfg type must be one of {_2PLUS1D_TYPES}, got {conv_cfg!r}")
        stage_blocks = STAGE_BLOCKS[depth]
        num_stages = len(stage_blocks)
        for arg_name, value in (("spatial_strides", spatial_strides), ("temporal_strides", temporal_strides),
                                ("inflate", inflate)):
            if len(value) != num_stages:
                raise ValueError(f"ResNet2Plus1d: {arg_name} needs {num_stages} entries, got {tuple(value)}")
        conv1_kernel = tuple(conv1_kernel)
        self.depth = depth
        self.in_channels = in_channels
        self.conv_cfg = dict(conv_cfg)
        # The single place where the seed's switch becomes a conv type.
        conv_type = conv_cfg_to_type(conv_cfg, sts_mode)

        self.conv1 = ConvModule(in_channels, base_channels, conv1_kernel, stride=(conv1_stride_t, 2, 2),
                                padding=_same_padding(conv1_kernel), conv_type=conv_type, bn_eps=bn_eps,
                                activation=nn.ReLU)
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(pool1_stride_t, 2, 2), padding=(0, 1, 1))

        rates = iter(drop_path_schedule(drop_path_rate, sum(stage_blocks)))
        inplanes = base_channels
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2 ** i
            s, t = spatial_strides[i], temporal_strides[i]
            downsample = None
            if s != 1 or t != 1 or inplanes != planes:
                downsample = ConvModule(inplanes, planes, 1, stride=(t, s, s), conv_type=conv_type, bn_eps=bn_eps,
                                        activation=None)
            blocks = []
            for j in range(num_blocks):
                first = j == 0
                blocks.append(BasicBlock2Plus1d(
                    inplanes if first else planes, planes, conv_type, spatial_stride=s if first else 1,
                    temporal_stride=t if first else 1, inflate=bool(inflate[i]),
                    downsample=downsample if first else None, bn_eps=bn_eps, drop_path=next(rates)))
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.num_features = inplanes
        self.init_weights(zero_init_residual)

    def init_weights(self, zero_init_residual: bool = False) -> None:
        """Kaiming-normal (fan-out) convs and unit BNs, the original's from-scratch init."""
        init_conv_bn_(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock2Plus1d):
                    nn.init.zeros_(m.conv2.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, T, H, W)`` -> ``(N, 512, T', H / 32, W / 32)``."""
        check_clip_input(x, type(self).__name__, self.in_channels)
        x = self.maxpool(self.conv1(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


register_backbone("r2plus1d34", BackboneEntry(
    builder=ResNet2Plus1d,
    defaults=dict(depth=34, conv_cfg=dict(type="Conv2plus1d"), spatial_strides=(1, 2, 2, 2),
                  temporal_strides=(1, 1, 1, 1), conv1_kernel=(3, 7, 7), conv1_stride_t=1, pool1_stride_t=1,
                  inflate=(1, 1, 1, 1), bn_eps=1e-3),
    sts_switches=dict(conv_cfg=dict(type="Conv2plus1d_reshape")),
    clip_shape=(8, 224, 224),
    family="R(2+1)D",
    head="i3d",
    feat_channels=512,
))
