"""Depthwise 3D convolutions as compiled CPU stencils (the ``'stencil'`` depthwise implementation).

``sts3d/csrc/depthwise_stencil.cpp`` computes a depthwise conv of every ``(T, H, W)`` plane (one sample, one channel)
as a sum of *branches*, each a list of taps ``(dt, dy, dx)`` with a weight column, run over a zero-padded copy of the
plane split into stride phases, so that each tap is one contiguous multiply-add loop; forward, input and weight
gradients. The stock ``3x3x3`` depthwise conv is one branch of 27 taps. STS's static half (spec section 1.1) is one
branch of 27 taps in the aligned mode (the centre ``3x3``, the ``1x9`` and the ``9x1`` line); in the faithful mode
one branch at stride 1 (the frame stored without padding columns, so the width line runs on along the row-major
sequence) and at stride 2 three, one per layout the original's every-4th-element placement needs
(:func:`sts_static_branches`); the dynamic half is the stock kernel's branch, all in one pass over the planes. Each
branch copies the plane once, so the fewer branches the faster (a branch's copies cost more than its taps).

The extension is built on first use (:mod:`sts3d.models.native`); where it cannot be, :func:`available` is false and
``depthwise_impl='auto'`` falls back to the pure-PyTorch ``'frames'`` form.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import torch
from torch.utils.flop_counter import register_flop_formula

from . import cuda_stencil, native
from .strided import line_fills_map, out_size

Spec = list[int]  # one branch, as the C++ side reads it (see _branch)


Tap = tuple[int, ...]  # (dt, dy, dx, weight column), or with (first row, end row, skipped column): an edge tap


FRAME, SEQUENCE, COLUMN_PAIRS = 0, 1, 2  # how a branch reads a frame (see depthwise_stencil.cpp)


def _branch(taps: Sequence[Tap], dims: tuple[int, int, int], stride: tuple[int, int], out: tuple[int, int],
            view_cols: int, every: tuple[int, int] = (1, 1), transpose_in: bool = False, read: int = FRAME,
            transpose_out: bool = False, pad: Optional[tuple[int, int, int]] = None) -> Spec:
    """A branch: ``taps`` over the frames (or their transposes; read as row-major sequences or as column pairs
    by ``read``) of ``dims`` ``(T, rows, columns)``, zero-padded by ``pad`` (default: as far as the taps reach;
    taps that can then only read padding are left out, they add zeros), with ``stride`` ``(h, w)`` and valid
    output grid ``out``; that output, read row-major and viewed with ``view_cols`` columns, taken at every
    ``every`` row / column and transposed when ``transpose_out``, is the branch's ``(H', W')`` contribution. An
    edge tap ``(dt, dy, dx, column, r0, r1, skip)`` applies to output rows ``[r0, r1)`` only, not to output column
    ``skip`` (``-1``: none)."""
    if pad is None:
        taps = [tap for tap in taps if all(abs(d) < size for d, size in zip(tap[:3], dims))]
        pad = tuple(max((abs(tap[i]) for tap in taps if len(tap) == 4), default=0) for i in range(3))
    flat = [v for tap in taps for v in (tap if len(tap) == 7 else (*tap, 0, -1, -1))]
    return [int(transpose_in), read, *stride, *pad, *out, view_cols, *every, int(transpose_out),
            len(taps), *flat]


def dense_branch(kernel: tuple[int, int, int], stride: int, t: int, h: int, w: int) -> Spec:
    """An ordinary depthwise conv (odd ``kernel``, padding ``kernel // 2``); weight columns in ``(kt, kh, kw)``
    order."""
    kt, kh, kw = kernel
    taps = [(i - kt // 2, y - kh // 2, x - kw // 2, (i * kh + y) * kw + x)
            for i in range(kt) for y in range(kh) for x in range(kw)]
    out = (out_size(h, stride), out_size(w, stride))
    return _branch(taps, (t, h, w), (stride, stride), out, out[1])


def _faithful_static(t: int, h: int, w: int) -> Spec:
    """The faithful static half at stride 1 (``h >= 4``) as one branch on the frames with no zero columns between
    them and 4 zero rows, the room of the lines' reach. The width line runs along the row-major sequence itself;
    the height line, along the column-major sequence, is the 9x1 line on the rows plus, in the first and last 4
    output rows, edge taps that read on in the previous / next column (skipping the first / last column, where the
    sequence ends); the centre 3x3's side taps skip the first / last output column, whose reads there are the
    neighbouring row's. On 4-row maps the zero rows are only as many as the width line needs (it reads 4
    elements on: one row from 4 columns up), and the height line's taps that reach past them are masked to the
    output rows they read inside the frame. With 4 zero rows half a 4x4 map's output grid is junk rows; the 4-row
    layers ran 6-8 % faster this way, while on 8 to 32 rows it was as fast or up to 4 % slower (twice the masked
    taps cost more than the rows saved)."""
    gap = -(-4 // w) if h <= 4 else 4
    taps: list[Tap] = []
    for y in range(3):
        for x in range(3):
            rows = () if x == 1 else (0, h, w - 1 if x == 2 else 0)
            taps.append((0, y - 1, x - 1, 9 + 3 * y + x, *rows))
    taps += [(0, 0, j - 4, j) for j in range(9)]
    for j in range(9):
        dy = j - 4
        if abs(dy) <= gap:
            taps.append((0, dy, 0, 18 + j))
        elif abs(dy) < h:
            taps.append((0, dy, 0, 18 + j, max(0, -dy), min(h, h - dy), -1))
    for d in range(1, 5):  # tap 4 + d of output row r >= h - d reads row r + d - h of the next column
        taps.append((0, d - h, 1, 22 + d, h - d, h, w - 1))
        taps.append((0, h - d, -1, 22 - d, 0, d, 0))  # tap 4 - d of row r < d: row r - d + h, previous column
    return _branch(taps, (t, h, w), (1, 1), (h, w), w, pad=(0, gap, 0))


def sts_static_branches(stride: int, t: int, h: int, w: int, faithful: bool) -> list[Spec]:
    """The static half of the depthwise STS conv (weight columns of a ``3x3x3`` kernel, ``(kt, kh, kw)`` order):
    the centre slice as a ``3x3`` conv, the first slice as a 9-tap width line and the last as a 9-tap height line
    (``sts3d.models.sts`` describes both modes, including the odd-size rule of the faithful mode). Faithful at
    stride 2: the centre on the frame's stride phases, the width line on every 4th element of the row-major
    sequence, the height line, along the column-major sequence, as a 9x1 line with row stride 4 on the frame's
    column pairs (even heights; the original's placement makes that the same as the sequence conv read as the
    output map), else on the transposed frame."""
    out = (out_size(h, stride), out_size(w, stride))
    centre = [(0, y - 1, x - 1, 9 + 3 * y + x) for y in range(3) for x in range(3)]
    width = [(0, 0, j - 4, j) for j in range(9)]
    height = [(0, j - 4, 0, 18 + j) for j in range(9)]
    if not faithful:  # zero-padded 1x9 and 9x1 kernels at the true strided positions: one branch of all 27 taps
        return [_branch(centre + width + height, (t, h, w), (stride, stride), out, out[1])]
    if stride == 1 and h >= 4:
        return [_faithful_static(t, h, w)]
    branches = [_branch(centre, (t, h, w), (stride, stride), out, out[1])]
    step = stride * stride
    fills = line_fills_map(h, w, stride)
    for first, transposed in ((0, False), (18, True)):
        taps = [(0, 0, j - 4, first + j) for j in range(9)]  # a line along the sequence
        rows, cols = (out[1], out[0]) if transposed else out
        if fills and transposed and stride == 2 and h % 2 == 0:  # as a 9x1 line with row stride 4 on column pairs
            branches.append(_branch(height, (t, 2 * h, out[1]), (4, 1), out, out[1], read=COLUMN_PAIRS,
                                    pad=(0, 4, 0)))
        elif fills:  # the original: every stride**2-th element of the sequence, read as the output map
            branches.append(_branch(taps, (t, 1, h * w), (1, step), (1, rows * cols), cols,
                                    transpose_in=transposed, read=SEQUENCE, transpose_out=transposed))
        else:  # odd sizes: the sequence conv at every position, taken at the true strided positions
            branches.append(_branch(taps, (t, 1, h * w), (1, 1), (1, h * w), h if transposed else w,
                                    (stride, stride), transpose_in=transposed, read=SEQUENCE,
                                    transpose_out=transposed))
    return branches


def _flatten(groups: list[list[Spec]]) -> list[int]:
    """Per group its branch count, then per branch its length and its spec: the form the C++ side reads."""
    flat = []
    for branches in groups:
        flat.append(len(branches))
        for spec in branches:
            flat += [len(spec), *spec]
    return flat


# Registered operators, so autograd, FlopCounterMode (``tools/analysis/get_flops.py``) and torch.compile see them.
@torch.library.custom_op("sts3d::depthwise_stencil", mutates_args=())
def _forward(x: torch.Tensor, weight: torch.Tensor, bounds: list[int], specs: torch.Tensor, out_h: int,
             out_w: int) -> torch.Tensor:
    return native.extension().depthwise_forward(x, weight, bounds, specs, out_h, out_w)


@_forward.register_fake
def _(x, weight, bounds, specs, out_h, out_w):
    return x.new_empty(*x.shape[:3], out_h, out_w)


@torch.library.custom_op("sts3d::depthwise_stencil_backward", mutates_args=())
def _backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bounds: list[int], specs: torch.Tensor,
              need_x: bool, need_w: bool) -> tuple[torch.Tensor, torch.Tensor]:
    grad_x, grad_w = native.extension().depthwise_backward(grad, x, weight, bounds, specs, need_x, need_w)
    return (grad_x if need_x else x.new_empty(0)), (grad_w if need_w else weight.new_empty(0))


@_backward.register_fake
def _(grad, x, weight, bounds, specs, need_x, need_w):
    return (torch.empty_like(x) if need_x else x.new_empty(0)), (torch.empty_like(weight) if need_w
                                                                 else weight.new_empty(0))


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bounds, specs, _, _ = inputs
    ctx.save_for_backward(x, weight)
    ctx.plan = bounds, specs


def _autograd(ctx, grad: torch.Tensor):
    x, weight = ctx.saved_tensors
    need_x, need_w = ctx.needs_input_grad[:2]
    grad_x, grad_w = _backward(grad.contiguous(), x, weight, *ctx.plan, need_x, need_w)
    return (grad_x if need_x else None), (grad_w if need_w else None), None, None, None, None


_forward.register_autograd(_autograd, setup_context=_setup_context)


@register_flop_formula(torch.ops.sts3d.depthwise_stencil)
def _forward_flops(x_shape, weight_shape, *args, out_shape, **kwargs) -> int:
    """As a conv's: every output element takes one multiply-add per kernel element (``weight`` ``(C, K)``)."""
    return 2 * math.prod(out_shape) * weight_shape[1]


@register_flop_formula(torch.ops.sts3d.depthwise_stencil_backward)
def _backward_flops(grad_shape, x_shape, weight_shape, bounds, specs, need_x, need_w, *args, **kwargs) -> int:
    return (int(need_x) + int(need_w)) * 2 * math.prod(grad_shape) * weight_shape[1]


def _plan_tensor(flat: list[int]) -> torch.Tensor:
    """The specs as the operators take them: an int64 tensor (a list argument costs the dispatcher per element,
    70 us for an STS plan)."""
    return torch.tensor(flat, dtype=torch.int64)


# Plans per layer shape, built once (a plan is a few hundred ints; building it is 1-2 % of a small layer's time)
@functools.lru_cache(maxsize=512)
def _dense_plan(kernel: tuple[int, int, int], stride: int, t: int, h: int, w: int) -> torch.Tensor:
    return _plan_tensor(_flatten([[dense_branch(kernel, stride, t, h, w)]]))


@functools.lru_cache(maxsize=512)
def _sts_plan(stride: int, t: int, h: int, w: int, faithful: bool) -> torch.Tensor:
    return _plan_tensor(_flatten([sts_static_branches(stride, t, h, w, faithful),
                                  [dense_branch((3, 3, 3), stride, t, h, w)]]))


def _cached(plan, *key) -> torch.Tensor:
    """``plan(*key)``; torch.compile traces the function itself (it reads the result as constants) instead of its
    cache, which Dynamo would warn about."""
    return plan.__wrapped__(*key) if torch.compiler.is_compiling() else plan(*key)


def depthwise_stencil(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, stride=(1, stride, stride), padding=k // 2, groups=C)`` for an odd kernel (CUDA
    tensors: :func:`sts3d.models.cuda_stencil.depthwise_cuda`)."""
    if x.device.type == "cuda":
        return cuda_stencil.depthwise_cuda(x, weight, bias, stride)
    n, c, t, h, w = x.shape
    plan = _cached(_dense_plan, tuple(weight.shape[2:]), stride, t, h, w)
    out = _forward(x, weight.reshape(c, -1), [0, c], plan, out_size(h, stride), out_size(w, stride))
    return out if bias is None else out + bias.view(1, -1, 1, 1, 1)


def sts_depthwise_stencil(x: torch.Tensor, weight: torch.Tensor, stride: int, faithful: bool) -> torch.Tensor:
    """The depthwise ``3x3x3`` STS conv (no bias): static half (first ``C / 2`` channels) and dynamic half in one
    pass over the planes (CUDA tensors: :func:`sts3d.models.cuda_stencil.sts_depthwise_cuda`). x ``(N, C, T, H, W)``;
    weight ``(C, 1, 3, 3, 3)``."""
    if x.device.type == "cuda":
        return cuda_stencil.sts_depthwise_cuda(x, weight, stride, faithful)
    n, c, t, h, w = x.shape
    plan = _cached(_sts_plan, stride, t, h, w, faithful)
    return _forward(x, weight.reshape(c, 27), [0, c // 2, c], plan, out_size(h, stride), out_size(w, stride))
