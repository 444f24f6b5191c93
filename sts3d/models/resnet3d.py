"""The ResNet3d family: the bottleneck ResNet3d, ir-CSN (channel-separated), SlowOnly and SlowFast.

Module names follow the original (mmaction2 0.x) so its checkpoints load with no renaming: ``conv1`` (stem),
``layer{1..4}.{block}.conv{1,2,3}`` / ``downsample``, and for SlowFast ``slow_path`` / ``fast_path`` with the
lateral connections ``conv1_lateral`` and ``layer{1..3}_lateral`` on the slow path.

STS enters through the seed's switches, turned into conv types once per network: ``reshape_t`` makes the
bottleneck's ``conv1`` (the ``3x1x1`` conv of inflated blocks) an STS conv, ``reshape_st`` the bottleneck's
``conv2`` (CSN's depthwise ``3x3x3``, computed as ``depthwise_impl`` says).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .convs import ConvModule, ConvType, block_conv_type, sts_conv_type
from .depthwise import DepthwiseImpl
from .drop_path import drop_path_layer, drop_path_schedule
from .factory import BackboneEntry, register_backbone
from .init import init_conv_bn_
from .inputs import check_clip_input
from .sts import STSMode

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class Bottleneck3d(nn.Module):
    """1x1x1 -> 3x3 (spatial stride here, "pytorch" style) -> 1x1x1 (x4) residual block.

    ``inflate`` gives the block temporal extent: ``'3x1x1'`` puts it in ``conv1`` (SlowOnly, SlowFast),
    ``'3x3x3'`` in ``conv2``. Input ``(N, inplanes, T, H, W)``, output ``(N, 4 * planes, T / t_s, H / s, W / s)``.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, spatial_stride: int = 1, temporal_stride: int = 1,
                 downsample: Optional[nn.Module] = None, inflate: bool = True, inflate_style: str = "3x1x1",
                 conv1_type: ConvType = nn.Conv3d, conv2_type: ConvType = nn.Conv3d, bn_eps: float = 1e-5,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        if inflate_style not in ("3x1x1", "3x3x3"):
            raise ValueError(f"inflate_style must be '3x1x1' or '3x3x3', got {inflate_style!r}")
        conv1_kernel, conv2_kernel = (1, 1, 1), (1, 3, 3)
        if inflate and inflate_style == "3x1x1":
            conv1_kernel = (3, 1, 1)
        elif inflate:
            conv2_kernel = (3, 3, 3)
        self.conv1 = ConvModule(inplanes, planes, conv1_kernel, padding=tuple(k // 2 for k in conv1_kernel),
                                conv_type=conv1_type, bn_eps=bn_eps)
        self.conv2 = self._make_conv2(planes, conv2_kernel, (temporal_stride, spatial_stride, spatial_stride),
                                      conv2_type, bn_eps)
        self.conv3 = ConvModule(planes, planes * self.expansion, 1, bn_eps=bn_eps, activation=None)
        self.downsample = downsample
        self.drop_path = drop_path_layer(drop_path)
        self.relu = nn.ReLU(inplace=True)

    def _make_conv2(self, planes: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                    conv_type: ConvType, bn_eps: float) -> nn.Module:
        return ConvModule(planes, planes, kernel, stride=stride, padding=tuple(k // 2 for k in kernel),
                          conv_type=conv_type, bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        return self.relu(self.drop_path(out) + identity)


class CSNBottleneck3d(Bottleneck3d):
    """The interaction-reduced ("ir") channel-separated bottleneck: ``conv2`` is a depthwise ``3x3x3`` conv.

    ``conv2`` is an ``nn.Sequential`` holding one conv unit, as in the original (keys ``conv2.0.conv.weight``).
    """

    def _make_conv2(self, planes: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                    conv_type: ConvType, bn_eps: float) -> nn.Module:
        return nn.Sequential(ConvModule(planes, planes, kernel, stride=stride, padding=tuple(k // 2 for k in kernel),
                                        groups=planes, conv_type=conv_type, bn_eps=bn_eps))


class ResNet3d(nn.Module):
    """A bottleneck 3D ResNet (depth 50/101/152) with the original's settings as keyword arguments.

    ``lateral_inplanes`` adds channels to the first block of each stage (SlowFast's slow path, which concatenates the
    lateral connections). Input ``(N, in_channels, T, H, W)``; output ``(N, 32 * base_channels, T', H / 32, W / 32)``
    with ``T'`` set by the temporal strides (and ``pool2``).
    """

    block: type[Bottleneck3d] = Bottleneck3d

    def __init__(self, depth: int = 50, in_channels: int = 3, base_channels: int = 64,
                 spatial_strides: Sequence[int] = (1, 2, 2, 2), temporal_strides: Sequence[int] = (1, 1, 1, 1),
                 dilations: Sequence[int] = (1, 1, 1, 1), conv1_kernel: Sequence[int] = (3, 7, 7),
                 conv1_stride_s: int = 2, conv1_stride_t: int = 1, pool1_stride_s: int = 2, pool1_stride_t: int = 1,
                 with_pool2: bool = True, inflate: Sequence[int] = (1, 1, 1, 1), inflate_style: str = "3x1x1",
                 bn_eps: float = 1e-5, norm_eval: bool = False, reshape_t: bool = False, reshape_st: bool = False,
                 sts_mode: STSMode = "faithful", drop_path_rate: float = 0.0,
                 lateral_inplanes: Sequence[int] = (0, 0, 0, 0), depthwise_impl: DepthwiseImpl = "auto") -> None:
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"{type(self).__name__}: depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
        if any(d != 1 for d in dilations):
            raise ValueError(f"{type(self).__name__}: dilated convolutions are not supported, got {tuple(dilations)}")
        self.depth = depth
        self.base_channels = base_channels
        self.norm_eval = norm_eval
        self.with_pool2 = with_pool2
        stage_blocks = STAGE_BLOCKS[depth]
        conv1_type = sts_conv_type(reshape_t, sts_mode)
        conv2_type = block_conv_type(reshape_st, sts_mode, depthwise_impl)  # depthwise in CSN

        self.conv1 = ConvModule(in_channels, base_channels, tuple(conv1_kernel),
                                stride=(conv1_stride_t, conv1_stride_s, conv1_stride_s),
                                padding=tuple((k - 1) // 2 for k in conv1_kernel), bn_eps=bn_eps)
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(pool1_stride_t, pool1_stride_s, pool1_stride_s),
                                    padding=(0, 1, 1))
        self.pool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1))

        drop_rates = iter(drop_path_schedule(drop_path_rate, sum(stage_blocks)))
        inplanes = base_channels
        self.res_layers = []
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2 ** i
            layer = self._make_stage(inplanes + lateral_inplanes[i], planes, num_blocks, spatial_strides[i],
                                     temporal_strides[i], bool(inflate[i]), inflate_style, conv1_type, conv2_type,
                                     bn_eps, drop_rates)
            inplanes = planes * self.block.expansion
            self.add_module(f"layer{i + 1}", layer)
            self.res_layers.append(f"layer{i + 1}")
        self.feat_dim = inplanes
        init_conv_bn_(self)  # the seed's configs set zero_init_residual=False

    def _make_stage(self, inplanes: int, planes: int, num_blocks: int, spatial_stride: int, temporal_stride: int,
                    inflate: bool, inflate_style: str, conv1_type: ConvType, conv2_type: ConvType, bn_eps: float,
                    drop_rates) -> nn.Sequential:
        outplanes = planes * self.block.expansion
        downsample = None
        if spatial_stride != 1 or temporal_stride != 1 or inplanes != outplanes:
            downsample = ConvModule(inplanes, outplanes, 1, stride=(temporal_stride, spatial_stride, spatial_stride),
                                    bn_eps=bn_eps, activation=None)
        blocks = []
        for j in range(num_blocks):
            blocks.append(self.block(inplanes if j == 0 else outplanes, planes,
                                     spatial_stride=spatial_stride if j == 0 else 1,
                                     temporal_stride=temporal_stride if j == 0 else 1,
                                     downsample=downsample if j == 0 else None, inflate=inflate,
                                     inflate_style=inflate_style, conv1_type=conv1_type, conv2_type=conv2_type,
                                     bn_eps=bn_eps, drop_path=next(drop_rates)))
        return nn.Sequential(*blocks)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.conv1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_clip_input(x, type(self).__name__, self.conv1.conv.in_channels)
        x = self.forward_stem(x)
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i == 0 and self.with_pool2:
                x = self.pool2(x)
        return x

    def train(self, mode: bool = True) -> "ResNet3d":
        super().train(mode)
        if mode and self.norm_eval:  # keep BN statistics fixed while fine-tuning the weights
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


class ResNet3dCSN(ResNet3d):
    """ir-CSN: a ResNet3d whose bottlenecks use a depthwise ``3x3x3`` conv (``reshape_st`` makes it STS)."""

    block = CSNBottleneck3d

    def __init__(self, bottleneck_mode: str = "ir", **kwargs) -> None:
        if bottleneck_mode != "ir":
            raise ValueError(f"ResNet3dCSN: only bottleneck_mode='ir' is implemented, got {bottleneck_mode!r}")
        kwargs.setdefault("inflate_style", "3x3x3")
        super().__init__(**kwargs)


class ResNet3dPathway(ResNet3d):
    """One SlowFast pathway: a ResNet3d that, with ``lateral``, owns the fast -> slow lateral convs.

    The laterals are bare ``(fusion_kernel, 1, 1)`` convs with temporal stride ``lateral_stride`` (the speed ratio
    in video training, 1 for one-frame image clips) from ``C / channel_ratio`` fast channels to twice as many.
    """

    def __init__(self, lateral: bool = False, speed_ratio: int = 8, channel_ratio: int = 8, fusion_kernel: int = 5,
                 lateral_stride: Optional[int] = None, **kwargs) -> None:
        base = kwargs.get("base_channels", 64)
        expansion = self.block.expansion
        # stage i's first block also takes the lateral from the fast stem (i = 0) or the fast stage i - 1
        stage_in = [base] + [base * 2 ** (i - 1) * expansion for i in range(1, 4)]
        lateral_inplanes = [2 * c // channel_ratio for c in stage_in] if lateral else [0] * 4
        super().__init__(lateral_inplanes=lateral_inplanes, **kwargs)
        self.lateral = lateral
        self.lateral_connections: list[str] = []
        if not lateral:
            return
        stride = speed_ratio if lateral_stride is None else lateral_stride
        for i, channels in enumerate(stage_in):
            name = "conv1_lateral" if i == 0 else f"layer{i}_lateral"
            self.add_module(name, ConvModule(channels // channel_ratio, 2 * channels // channel_ratio,
                                             (fusion_kernel, 1, 1), stride=(stride, 1, 1),
                                             padding=((fusion_kernel - 1) // 2, 0, 0), norm=False, activation=None))
            self.lateral_connections.append(name)


_PATHWAY_CONFIG_ONLY = {"type": "resnet3d", "pretrained": None}


def _pathway_kwargs(cfg: dict, which: str) -> dict:
    """The seed's pathway dict minus its registry-only keys (``type='resnet3d'``, ``pretrained=None``)."""
    cfg = dict(cfg)
    for key, allowed in _PATHWAY_CONFIG_ONLY.items():
        if key in cfg and cfg.pop(key) != allowed:
            raise ValueError(f"ResNet3dSlowFast {which}: only {key}={allowed!r} is supported")
    return cfg


class ResNet3dSlowFast(nn.Module):
    """SlowFast: a slow pathway on every ``resample_rate``-th frame and a fast pathway on every
    ``resample_rate // speed_ratio``-th, joined by lateral convs.

    Input ``(N, 3, T, H, W)`` with ``T >= resample_rate``; output ``(slow, fast)``: ``(N, 2048, T / tau, H/32, W/32)``
    and ``(N, 256, T * alpha / tau, H/32, W/32)``. With ``temporal_resampling=False`` (the image pre-training form)
    both pathways see the input as is and the laterals have temporal stride 1.
    """

    def __init__(self, resample_rate: int = 8, speed_ratio: int = 8, channel_ratio: int = 8,
                 slow_pathway: Optional[dict] = None, fast_pathway: Optional[dict] = None,
                 sts_mode: STSMode = "faithful", drop_path_rate: float = 0.0, temporal_resampling: bool = True,
                 pretrained: None = None) -> None:
        super().__init__()
        if pretrained is not None:
            raise ValueError("ResNet3dSlowFast: 'pretrained' is not supported; load weights with load_from")
        self.resample_rate = resample_rate if temporal_resampling else 1
        self.fast_rate = resample_rate // speed_ratio if temporal_resampling else 1
        common = dict(speed_ratio=speed_ratio, channel_ratio=channel_ratio, sts_mode=sts_mode,
                      drop_path_rate=drop_path_rate, lateral_stride=None if temporal_resampling else 1)
        self.slow_path = ResNet3dPathway(**common, **_pathway_kwargs(slow_pathway or {}, "slow_pathway"))
        self.fast_path = ResNet3dPathway(**common, **_pathway_kwargs(fast_pathway or {}, "fast_pathway"))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_clip_input(x, "ResNet3dSlowFast")
        frames = x.shape[2]
        if frames < self.resample_rate:
            raise ValueError(f"ResNet3dSlowFast needs at least resample_rate={self.resample_rate} frames for its slow "
                             f"pathway: expected (N, 3, T >= {self.resample_rate}, H, W), got {tuple(x.shape)}")
        # nearest-neighbour temporal resampling: frames 0, rate, 2 * rate, ... (floor(T / rate) of them)
        x_slow = x[:, :, :frames // self.resample_rate * self.resample_rate:self.resample_rate]
        x_fast = x[:, :, :frames // self.fast_rate * self.fast_rate:self.fast_rate]
        slow, fast = self.slow_path, self.fast_path
        x_slow = slow.forward_stem(x_slow)
        x_fast = fast.forward_stem(x_fast)
        if slow.lateral:
            x_slow = torch.cat((x_slow, slow.conv1_lateral(x_fast)), dim=1)
        for i, name in enumerate(slow.res_layers):
            x_slow = getattr(slow, name)(x_slow)
            x_fast = getattr(fast, name)(x_fast)
            if slow.lateral and i + 1 < len(slow.lateral_connections):
                x_slow = torch.cat((x_slow, getattr(slow, slow.lateral_connections[i + 1])(x_fast)), dim=1)
        return x_slow, x_fast


register_backbone("csn50_ir", BackboneEntry(
    builder=ResNet3dCSN,
    defaults=dict(depth=50, bottleneck_mode="ir", conv1_kernel=(3, 7, 7), conv1_stride_t=1, pool1_stride_t=1,
                  with_pool2=False, temporal_strides=(1, 1, 1, 1), bn_eps=1e-3),
    sts_switches=dict(reshape_st=True), clip_shape=(32, 224, 224), family="ir-CSN", depthwise=True))

register_backbone("slowonly50", BackboneEntry(
    builder=ResNet3d,
    defaults=dict(depth=50, conv1_kernel=(1, 7, 7), conv1_stride_t=1, pool1_stride_t=1, with_pool2=False,
                  inflate=(0, 0, 1, 1)),
    sts_switches=dict(reshape_t=True), clip_shape=(8, 224, 224), family="SlowOnly"))

_SLOW = dict(depth=50, lateral=True, conv1_kernel=(1, 7, 7), conv1_stride_t=1, pool1_stride_t=1,
             inflate=(0, 0, 1, 1))
_FAST = dict(depth=50, lateral=False, base_channels=8, conv1_kernel=(5, 7, 7), conv1_stride_t=1, pool1_stride_t=1)
_BOTH_RESHAPE_T = dict(slow_pathway=dict(reshape_t=True), fast_pathway=dict(reshape_t=True))

register_backbone("slowfast50_4x16", BackboneEntry(
    builder=ResNet3dSlowFast,
    defaults=dict(resample_rate=8, speed_ratio=8, channel_ratio=8, slow_pathway=dict(_SLOW, fusion_kernel=5),
                  fast_pathway=_FAST),
    sts_switches=_BOTH_RESHAPE_T, clip_shape=(32, 224, 224), family="SlowFast",
    head="slowfast", feat_channels=2048 + 256))

register_backbone("slowfast50_8x8", BackboneEntry(
    builder=ResNet3dSlowFast,
    defaults=dict(resample_rate=4, speed_ratio=4, channel_ratio=8, slow_pathway=dict(_SLOW, fusion_kernel=7),
                  fast_pathway=_FAST),
    sts_switches=_BOTH_RESHAPE_T, clip_shape=(32, 224, 224), family="SlowFast",
    head="slowfast", feat_channels=2048 + 256))
