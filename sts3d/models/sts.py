"""STS (Spatial-Temporal Separable) convolution.

One 3D conv weight ``W`` of shape ``(C_out, C_in / g, k_t, k_s, k_s)`` is reused unchanged. The output channels are
split in half: the first half (static) is computed per frame, with the outer temporal slices of the kernel
re-read as 1-D spatial line kernels; the second half (dynamic) is an ordinary 3D conv. No parameters are added, the
module keeps the name and the ``weight`` of the conv it replaces, so one checkpoint serves STS on and off.

Two kernel families are supported (spec section 1.1):

* depthwise ``3x3x3`` (ir-CSN, X3D): input channels are split too;
  ``static = conv3x3(W[:, :, 1]) + line_w(W[:, :, 0] as 9 taps) + line_h(W[:, :, 2] as 9 taps)``;
* dense temporal ``3x1x1`` (SlowOnly, SlowFast, R(2+1)D): output is
  ``[width line (C/4) | height line (C/4) | temporal conv (C/2)]``.

Two behaviours (``mode``):

* ``'faithful'``: the original's. Line kernels run over the flattened ``H*W`` (row-major) or ``W*H`` (column-major)
  sequence of a frame, so at the image border they read the neighbouring row / column, and with spatial stride
  ``s`` the line branches take every ``s**2``-th element of that sequence (the original's placement). Where the
  original has no defined result (a stride-2 line branch whose strided sequence does not fill the output map, i.e.
  an odd-sized feature map), the line outputs are taken at the true strided positions instead; see
  ``docs/sts.md``.
* ``'aligned'``: line kernels are zero-padded ``1xk`` / ``kx1`` 2-D convs and all branches place their outputs at
  the true strided positions.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .depthwise import DepthwiseImpl, check_depthwise_impl, depthwise_conv3d, use_frames_form

STSMode = Literal["faithful", "aligned"]
STS_MODES: tuple[str, ...] = ("faithful", "aligned")


def _out_size(size: int, stride: int) -> int:
    """Output length of a kernel-3, padding-1 conv (every STS branch has this size)."""
    return (size - 1) // stride + 1


def _frames_as_channels(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, T, H, W)`` -> ``(N, C * T, H, W)``: a view, so per-frame 2D convs need no transpose.

    A depthwise conv with its weight repeated ``T`` times then runs on every frame at once; 2D depthwise kernels are
    markedly faster than 3D ones on CPU, which is what keeps STS's static half cheap.
    """
    n, c, t, h, w = x.shape
    return x.reshape(n, c * t, h, w)


def _depthwise_line(x: torch.Tensor, taps: torch.Tensor, stride: int, column_major: bool,
                    faithful: bool) -> torch.Tensor:
    """A depthwise line conv of every frame. x: ``(N, C, T, H, W)``; taps: ``(C, k)``; returns
    ``(N, C, T, H', W')``, ``H' = (H - 1) // stride + 1`` (the same for ``W'``).

    ``faithful``: the original's conv along the flattened frame (row-major, or column-major when ``column_major``),
    which wraps across rows / columns, taking every ``stride**2``-th element of the sequence; where that does not fill
    the output map (odd sizes, where the original crashes) the outputs are taken at the true strided positions.
    Otherwise a zero-padded ``1xk`` (``kx1``) 2D conv.
    """
    n, c, t, h, w = x.shape
    k = taps.shape[-1]
    weight = taps.repeat_interleave(t, dim=0).unsqueeze(1)  # (C * T, 1, k)
    out_h, out_w = _out_size(h, stride), _out_size(w, stride)
    if not faithful:
        kernel = weight.unsqueeze(-1) if column_major else weight.unsqueeze(-2)
        padding = (k // 2, 0) if column_major else (0, k // 2)
        y = F.conv2d(_frames_as_channels(x), kernel, stride=stride, padding=padding, groups=c * t)
        return y.view(n, c, t, out_h, out_w)
    if column_major:
        x = x.transpose(-1, -2)
        h, w, out_h, out_w = w, h, out_w, out_h
    seq = x.reshape(n, c * t, h * w)
    step = stride * stride
    if stride == 1 or (h * w - 1) // step + 1 == out_h * out_w:
        y = F.conv1d(seq, weight, stride=step, padding=k // 2, groups=c * t).view(n, c, t, out_h, out_w)
    else:
        y = F.conv1d(seq, weight, padding=k // 2, groups=c * t).view(n, c, t, h, w)[..., ::stride, ::stride]
    return y.transpose(-1, -2) if column_major else y


def _shift(dst: torch.Tensor, src: torch.Tensor, offset: int, axis: str, accumulate: bool) -> None:
    """In place, ``dst[i] (+)= src[i + offset]`` (``offset`` is -1 or +1) along one sequence of every frame.

    Where ``i + offset`` falls outside the sequence, ``dst[i]`` is kept when ``accumulate``, else set to 0.
    ``dst``, ``src``: ``(N, C, T, H, W)``. Sequences (``axis``): ``'t'`` time; ``'h'`` / ``'w'`` a column / row of a
    frame; ``'row_major'`` / ``'col_major'`` the whole frame flattened row by row / column by column (the original's
    line convs, which run on into the next row or column).
    """
    def put(d: torch.Tensor, s: torch.Tensor) -> None:
        d.add_(s) if accumulate else d.copy_(s)

    if axis == "col_major":  # down the column, then on from the top of the next (or bottom of the previous) one
        height, width = dst.shape[3:]
        if offset < 0:
            put(dst[..., 1:, :], src[..., :-1, :])
            put(dst[..., 0, 1:], src[..., height - 1, :-1])
            edge = dst[..., 0, :1]
        else:
            put(dst[..., :-1, :], src[..., 1:, :])
            put(dst[..., height - 1, :-1], src[..., 0, 1:])
            edge = dst[..., height - 1, width - 1:]
        if not accumulate:
            edge.zero_()
        return
    dim = {"t": 2, "h": 3, "w": 4, "row_major": 3}[axis]
    if axis == "row_major":
        n, c, t, h, w = dst.shape
        dst, src = dst.view(n, c, t, h * w), src.view(n, c, t, h * w)
    size = dst.shape[dim]
    if offset < 0:
        put(dst.narrow(dim, 1, size - 1), src.narrow(dim, 0, size - 1))
        edge = dst.narrow(dim, 0, 1)
    else:
        put(dst.narrow(dim, 0, size - 1), src.narrow(dim, 1, size - 1))
        edge = dst.narrow(dim, size - 1, 1)
    if not accumulate:
        edge.zero_()


class _TemporalTapSum(torch.autograd.Function):
    """Sums the three taps of a ``3x1x1`` STS conv computed as one pointwise conv.

    Input ``y`` ``(N, 3 C, T, H, W)``: every output channel's tap 0, tap 1 and tap 2 applied pointwise (in that
    channel-block order). Output ``(N, C, T, H, W)``: tap 1 plus tap 0 from the previous and tap 2 from the next
    element of each channel group's sequence (``axes``: ``(channel_start, channel_end, axis)``). The pointwise conv
    costs exactly the plain conv's multiply-adds and runs as one large matrix product; the shifts are memory moves.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, axes: tuple) -> torch.Tensor:
        ctx.axes = axes
        c = y.shape[1] // 3
        out = y[:, c:2 * c].clone()
        for start, end, axis in axes:
            _shift(out[:, start:end], y[:, start:end], -1, axis, accumulate=True)
            _shift(out[:, start:end], y[:, 2 * c + start:2 * c + end], +1, axis, accumulate=True)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        n, c = grad.shape[:2]
        grad = grad.contiguous()
        grad_y = grad.new_empty(n, 3 * c, *grad.shape[2:])  # every element is written once below
        grad_y[:, c:2 * c] = grad
        for start, end, axis in ctx.axes:  # the transpose of a shift by -1 is a shift by +1
            _shift(grad_y[:, start:end], grad[:, start:end], +1, axis, accumulate=False)
            _shift(grad_y[:, 2 * c + start:2 * c + end], grad[:, start:end], -1, axis, accumulate=False)
        return grad_y, None


class STSConv3d(nn.Conv3d):
    """A drop-in ``nn.Conv3d`` that computes the STS convolution with its own weight.

    Built with the ``nn.Conv3d`` signature plus ``mode`` and ``depthwise_impl`` (how the dynamic half of the
    depthwise form is computed, see :mod:`sts3d.models.depthwise`); use it as a conv type (see
    ``sts3d.models.convs``). Input ``(N, C_in, T, H, W)``, output ``(N, C_out, T, H', W')``: the same shapes as the
    plain conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None,
                 mode: STSMode = "faithful", depthwise_impl: DepthwiseImpl = "auto") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        if mode not in STS_MODES:
            raise ValueError(f"sts_mode must be one of {STS_MODES}, got {mode!r}")
        check_depthwise_impl(depthwise_impl)
        self.mode = mode
        self.depthwise_impl = depthwise_impl
        kt, kh, kw = self.kernel_size
        st, sh, sw = self.stride
        where = (f"STSConv3d({in_channels}, {out_channels}, kernel={self.kernel_size}, stride={self.stride}, "
                 f"groups={groups})")
        if st != 1:
            raise ValueError(f"{where}: temporal downsampling is not supported by STS (temporal stride must be 1)")
        if self.dilation != (1, 1, 1) or padding_mode != "zeros":
            raise ValueError(f"{where}: dilation and non-zero padding modes are not supported")
        if out_channels % 2:
            raise ValueError(f"{where}: STS splits the output channels in half; {out_channels} is odd")
        if (kt, kh, kw) == (3, 3, 3):
            if not groups == in_channels == out_channels:
                raise ValueError(f"{where}: the 3x3x3 STS form needs a channel-wise (depthwise) conv, "
                                 "groups == in_channels == out_channels")
            if sh != sw or self.padding != (1, 1, 1):
                raise ValueError(f"{where}: the 3x3x3 STS form needs equal spatial strides and padding 1")
            self.kind = "depthwise"
        elif (kh, kw) == (1, 1) and kt in (1, 3):
            if groups != 1:
                raise ValueError(f"{where}: the 3x1x1 STS form needs a dense conv (groups=1)")
            if (sh, sw) != (1, 1) or self.padding != (kt // 2, 0, 0):
                raise ValueError(f"{where}: the 3x1x1 STS form needs spatial stride 1 and padding ({kt // 2}, 0, 0)")
            if kt == 3 and out_channels % 4:
                raise ValueError(f"{where}: the 3x1x1 STS form splits the output channels in quarters")
            self.kind = "temporal" if kt == 3 else "pointwise"
        else:
            raise ValueError(f"{where}: STS supports only depthwise 3x3x3 and dense 3x1x1 kernels")

    def extra_repr(self) -> str:
        impl = f", depthwise_impl={self.depthwise_impl}" if self.kind == "depthwise" else ""
        return f"{super().extra_repr()}, sts={self.kind}, mode={self.mode}{impl}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "depthwise":
            out = self._depthwise(x)
        elif self.kind == "temporal":
            out = self._temporal(x)
        else:  # a 1x1x1 conv: STS is the identity transformation of it
            return F.conv3d(x, self.weight, self.bias)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out

    def _depthwise(self, x: torch.Tensor) -> torch.Tensor:
        half = self.out_channels // 2
        s = self.stride[1]
        faithful = self.mode == "faithful"
        x_static, x_dynamic = x[:, :half], x[:, half:]
        w_static = self.weight[:half, 0]  # (C/2, 3, 3, 3)
        lines = w_static.flatten(2)  # (C/2, 3, 9): each 3x3 slice flattened row-major
        n, _, t = x.shape[:3]
        centre = w_static[:, 1].repeat_interleave(t, dim=0).unsqueeze(1)  # (C/2 * T, 1, 3, 3)
        static = F.conv2d(_frames_as_channels(x_static), centre, stride=s, padding=1, groups=half * t)
        static = static.view(n, half, t, *static.shape[-2:])
        static = static + _depthwise_line(x_static, lines[:, 0], s, column_major=False, faithful=faithful)
        static = static + _depthwise_line(x_static, lines[:, 2], s, column_major=True, faithful=faithful)
        if use_frames_form(self.depthwise_impl, x):
            dynamic = depthwise_conv3d(x_dynamic, self.weight[half:], stride=(s, s))
        else:
            dynamic = F.conv3d(x_dynamic, self.weight[half:], stride=(1, s, s), padding=1, groups=half)
        return torch.cat((static, dynamic), dim=1)

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        c = self.out_channels
        quarter = c // 4
        line_w, line_h = ("row_major", "col_major") if self.mode == "faithful" else ("w", "h")
        axes = ((0, quarter, line_w), (quarter, 2 * quarter, line_h), (2 * quarter, c, "t"))
        # (C_out, C_in, 3, 1, 1) -> (3 C_out, C_in, 1, 1, 1): tap 0 of every filter, then tap 1, then tap 2
        pointwise = self.weight.permute(2, 0, 1, 3, 4).reshape(3 * c, self.in_channels, 1, 1, 1)
        return _TemporalTapSum.apply(F.conv3d(x, pointwise), axes)
