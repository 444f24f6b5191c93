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

STSMode = Literal["faithful", "aligned"]
STS_MODES: tuple[str, ...] = ("faithful", "aligned")


def _out_size(size: int, stride: int) -> int:
    """Output length of a kernel-3, padding-1 conv (every STS branch has this size)."""
    return (size - 1) // stride + 1


def _line_faithful(x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int,
                   column_major: bool) -> torch.Tensor:
    """A 1-D conv along the flattened frame, as the original does it.

    x: ``(N, C, T, H, W)``; weight: ``(C_out, C_in / groups, k)`` with odd ``k``. Returns ``(N, C_out, T, H', W')``
    with ``H' = (H - 1) // stride + 1`` (and the same for ``W'``).
    """
    if column_major:
        x = x.transpose(-1, -2)
    n, c, t, a, b = x.shape
    k = weight.shape[-1]
    out_a, out_b = _out_size(a, stride), _out_size(b, stride)
    seq = x.reshape(n, c, t, a * b)
    kernel = weight.unsqueeze(2)  # (C_out, C_in/g, 1, k): a conv over the (T, H*W) plane, per frame
    step = stride * stride
    if stride == 1 or (a * b - 1) // step + 1 == out_a * out_b:
        y = F.conv2d(seq, kernel, stride=(1, step), padding=(0, k // 2), groups=groups)
        y = y.view(n, -1, t, out_a, out_b)
    else:
        # The original crashes here (odd feature map before a stride-2 conv): use the true strided positions.
        y = F.conv2d(seq, kernel, padding=(0, k // 2), groups=groups).view(n, -1, t, a, b)
        y = y[..., ::stride, ::stride]
    return y.transpose(-1, -2) if column_major else y


def _line_aligned(x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int,
                  column_major: bool) -> torch.Tensor:
    """A zero-padded ``1xk`` (or ``kx1`` when ``column_major``) conv of each frame, outputs at strided positions."""
    k = weight.shape[-1]
    if column_major:
        kernel = weight[:, :, None, :, None]
        padding = (0, k // 2, 0)
    else:
        kernel = weight[:, :, None, None, :]
        padding = (0, 0, k // 2)
    return F.conv3d(x, kernel, stride=(1, stride, stride), padding=padding, groups=groups)


class STSConv3d(nn.Conv3d):
    """A drop-in ``nn.Conv3d`` that computes the STS convolution with its own weight.

    Built with the ``nn.Conv3d`` signature plus ``mode``; use it as a conv type (see ``sts3d.models.convs``).
    Input ``(N, C_in, T, H, W)``, output ``(N, C_out, T, H', W')``: the same shapes as the plain conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None,
                 mode: STSMode = "faithful") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        if mode not in STS_MODES:
            raise ValueError(f"sts_mode must be one of {STS_MODES}, got {mode!r}")
        self.mode = mode
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
            if groups <= 1 or groups % 2 or in_channels % 2:
                raise ValueError(f"{where}: the 3x3x3 STS form needs a grouped (channel-wise) conv with an even "
                                 "number of groups")
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
        return f"{super().extra_repr()}, sts={self.kind}, mode={self.mode}"

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

    def _line(self, x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int,
              column_major: bool) -> torch.Tensor:
        line = _line_faithful if self.mode == "faithful" else _line_aligned
        return line(x, weight, stride, groups, column_major)

    def _depthwise(self, x: torch.Tensor) -> torch.Tensor:
        half_out = self.out_channels // 2
        half_groups = self.groups // 2
        s = self.stride[1]
        x_static, x_dynamic = x.chunk(2, dim=1)
        w_static, w_dynamic = self.weight[:half_out], self.weight[half_out:]
        w_lines = w_static.flatten(3)  # (C/2, C_in/g, 3, 9): each 3x3 slice flattened row-major
        static = F.conv3d(x_static, w_static[:, :, 1:2], stride=(1, s, s), padding=(0, 1, 1), groups=half_groups)
        static = static + self._line(x_static, w_lines[:, :, 0], s, half_groups, column_major=False)
        static = static + self._line(x_static, w_lines[:, :, 2], s, half_groups, column_major=True)
        dynamic = F.conv3d(x_dynamic, w_dynamic, stride=(1, s, s), padding=1, groups=half_groups)
        return torch.cat((static, dynamic), dim=1)

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        quarter = self.out_channels // 4
        taps = self.weight.flatten(2)  # (C_out, C_in, 3)
        width = self._line(x, taps[:quarter], 1, 1, column_major=False)
        height = self._line(x, taps[quarter:2 * quarter], 1, 1, column_major=True)
        temporal = F.conv3d(x, self.weight[2 * quarter:], padding=(1, 0, 0))
        return torch.cat((width, height, temporal), dim=1)
