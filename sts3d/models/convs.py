"""Conv types the blocks are built with, and the conv + norm + activation unit of the original networks.

A *conv type* is any callable with the ``nn.Conv3d`` keyword signature
``(in_channels, out_channels, kernel_size, stride=, padding=, groups=, bias=)`` that returns a module with a
``weight`` parameter. Blocks take conv types as arguments (as torchvision's video blocks take a conv builder), so
switching STS on is a matter of passing another conv type, not of flags inside the blocks. The seed's switches
(``reshape_t``, ``reshape_st``, ``conv_cfg=dict(type='Conv2plus1d_reshape')``) are translated here, in
:func:`sts_conv_type`, :func:`block_conv_type` and :func:`conv_cfg_to_type`, and nowhere else; so is
``depthwise_impl``, how depthwise convs are computed (:func:`block_conv_type`).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

from torch import nn

from .depthwise import DepthwiseConv3d, DepthwiseImpl, check_depthwise_impl, is_depthwise
from .sts import STS_MODES, STSConv3d, STSMode

ConvType = Callable[..., nn.Module]


def _triple(value) -> tuple[int, int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * 3


def sts_conv_type(enabled: bool, mode: STSMode = "faithful") -> ConvType:
    """The conv type for a conv that the seed's ``reshape_t`` / ``reshape_st`` switch controls.

    With ``enabled`` it builds :class:`STSConv3d` where STS changes the result (kernels with temporal extent) and a
    plain ``nn.Conv3d`` for ``1x1x1`` kernels, where STS is the identity transformation. Without, ``nn.Conv3d``.
    """
    if mode not in STS_MODES:
        raise ValueError(f"sts_mode must be one of {STS_MODES}, got {mode!r}")
    if not enabled:
        return nn.Conv3d

    @functools.wraps(STSConv3d, updated=())
    def build(in_channels: int, out_channels: int, kernel_size, **kwargs) -> nn.Conv3d:
        if _triple(kernel_size) == (1, 1, 1):
            return nn.Conv3d(in_channels, out_channels, kernel_size, **kwargs)
        return STSConv3d(in_channels, out_channels, kernel_size, mode=mode, **kwargs)

    build.sts_mode = mode
    return build


def block_conv_type(sts: bool, sts_mode: STSMode = "faithful", depthwise_impl: DepthwiseImpl = "auto") -> ConvType:
    """The conv type for a block conv that ``reshape_st`` controls, with its depthwise convs computed by
    ``depthwise_impl`` (see :mod:`sts3d.models.depthwise`).

    A depthwise conv (``groups == in_channels == out_channels``) becomes an :class:`STSConv3d` with ``sts`` (unless
    ``1x1x1``) and a :class:`DepthwiseConv3d` otherwise; both keep ``nn.Conv3d``'s ``state_dict``. Other convs are
    built by ``sts_conv_type(sts, sts_mode)``.
    """
    check_depthwise_impl(depthwise_impl)
    other = sts_conv_type(sts, sts_mode)

    def build(in_channels: int, out_channels: int, kernel_size, **kwargs) -> nn.Conv3d:
        if not is_depthwise(in_channels, out_channels, kwargs.get("groups", 1)):
            return other(in_channels, out_channels, kernel_size, **kwargs)
        if sts and _triple(kernel_size) != (1, 1, 1):
            return STSConv3d(in_channels, out_channels, kernel_size, mode=sts_mode, depthwise_impl=depthwise_impl,
                             **kwargs)
        return DepthwiseConv3d(in_channels, out_channels, kernel_size, impl=depthwise_impl, **kwargs)

    return build


class Conv2plus1d(nn.Module):
    """A ``k_t x k x k`` conv factorised into ``1 x k x k`` (spatial) -> BN -> ReLU -> ``k_t x 1 x 1`` (temporal).

    The mid width follows R(2+1)D's parameter-matching rule ``floor(3 C_in C_out k^2 / (C_in k^2 + 3 C_out))``.
    ``temporal_conv`` is the conv type of ``conv_t`` (STS enters R(2+1)D there). Input ``(N, C_in, T, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, groups: int = 1,
                 bias: bool = False, temporal_conv: ConvType = nn.Conv3d, bn_eps: float = 1e-5) -> None:
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        st, sh, sw = _triple(stride)
        pt, ph, pw = _triple(padding)
        if groups != 1:
            raise ValueError("Conv2plus1d supports only groups=1")
        mid = int(3 * in_channels * out_channels * kh * kw / (in_channels * kh * kw + 3 * out_channels))
        self.conv_s = nn.Conv3d(in_channels, mid, (1, kh, kw), stride=(1, sh, sw), padding=(0, ph, pw), bias=bias)
        self.bn_s = nn.BatchNorm3d(mid, eps=bn_eps)
        self.relu = nn.ReLU(inplace=True)
        self.conv_t = temporal_conv(mid, out_channels, (kt, 1, 1), stride=(st, 1, 1), padding=(pt, 0, 0), bias=bias)

    def forward(self, x):
        return self.conv_t(self.relu(self.bn_s(self.conv_s(x))))


def conv2plus1d_type(temporal_conv: ConvType = nn.Conv3d) -> ConvType:
    """The (2+1)D conv type whose temporal half is built with ``temporal_conv``."""
    return functools.partial(Conv2plus1d, temporal_conv=temporal_conv)


def conv_cfg_to_type(conv_cfg: Optional[dict], mode: STSMode = "faithful") -> ConvType:
    """Translate the seed's ``conv_cfg`` (``Conv3d``, ``Conv2plus1d``, ``Conv2plus1d_reshape``) into a conv type."""
    kind = (conv_cfg or {"type": "Conv3d"}).get("type")
    if kind == "Conv3d":
        return nn.Conv3d
    if kind == "Conv2plus1d":
        return conv2plus1d_type(sts_conv_type(False))
    if kind == "Conv2plus1d_reshape":
        return conv2plus1d_type(sts_conv_type(True, mode))
    raise ValueError(f"unknown conv_cfg type {kind!r}; expected Conv3d, Conv2plus1d or Conv2plus1d_reshape")


class ConvModule(nn.Module):
    """conv -> BN -> activation, with the original's module names ``conv`` and ``bn``.

    ``activation`` is a module factory (``nn.ReLU``) or ``None``; ``norm`` is ``False`` for a bare conv. Every conv
    of the original networks is bias-free, so ``bias`` defaults to ``False``.
    Input ``(N, C_in, T, H, W)``, output ``(N, C_out, T', H', W')``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, groups: int = 1,
                 conv_type: ConvType = nn.Conv3d, norm: bool = True, bn_eps: float = 1e-5,
                 activation: Optional[Callable[[], nn.Module]] = nn.ReLU, bias: bool = False) -> None:
        super().__init__()
        self.conv = conv_type(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              groups=groups, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps) if norm else None
        self.act = activation() if activation is not None else None

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x
