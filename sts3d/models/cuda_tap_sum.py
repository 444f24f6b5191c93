"""The dense ``3x1x1`` STS conv's tap sum on CUDA as one Triton kernel per pass.

The dense form computes all three taps of every filter as one pointwise conv, ``y`` ``(N, 3 C, T, H, W)``, then
adds tap 1, tap 0 of the previous and tap 2 of the next element of each channel's sequence (``sts3d.models.sts``,
``_TemporalTapSum``): channels ``[0, C/4)`` along the width line, ``[C/4, C/2)`` the height line, the rest along
time; the faithful mode's lines run along the row-major and column-major flattened frame, on into the next row or
column, the aligned mode's stop at the frame's edges. With PyTorch's operators that is a copy and six shifted adds
forward and thirteen passes backward, each a launch and a trip through memory; here each pass is one launch that
reads and writes every element once. Sums are float32 (bfloat16 and float16 inputs too), outputs take the input's
dtype. Offered where :func:`sts3d.models.cuda_stencil.takes` the dtype; runs on the CPU under
``TRITON_INTERPRET=1`` for the tests.
"""
from __future__ import annotations

import functools

import torch

from .cuda_stencil import _cdiv, triton
from .triton_launch import Launch

if triton is not None:
    import triton.language as tl

    _SIZES = ["C", "Q", "T", "H", "W"]

    @triton.jit
    def _neighbours(e, c, Q, T, H, W, FAITHFUL: tl.constexpr):
        """Offsets within a plane of the elements before and after ``e`` in channel ``c``'s sequence, and whether
        they exist: the width line below ``Q``, the height line below ``2 Q``, time above."""
        frame = H * W
        r = e % frame
        h = r // W
        w = r % W
        if FAITHFUL:  # the row-major flattened frame; the column-major one, on at the top of the next column
            line_before, line_after = r > 0, r < frame - 1
            column_before = tl.where(h > 0, e - W, e + (H - 1) * W - 1)
            column_after = tl.where(h < H - 1, e + W, e - (H - 1) * W + 1)
            column_has_before, column_has_after = (h > 0) | (w > 0), (h < H - 1) | (w < W - 1)
        else:
            line_before, line_after = w > 0, w < W - 1
            column_before, column_after = e - W, e + W
            column_has_before, column_has_after = h > 0, h < H - 1
        in_time = c >= 2 * Q
        in_line = c < Q
        before = tl.where(in_time, e - frame, tl.where(in_line, e - 1, column_before))
        after = tl.where(in_time, e + frame, tl.where(in_line, e + 1, column_after))
        has_before = tl.where(in_time, e >= frame, tl.where(in_line, line_before, column_has_before))
        has_after = tl.where(in_time, e < (T - 1) * frame, tl.where(in_line, line_after, column_has_after))
        return before, has_before, after, has_after

    @triton.jit(do_not_specialize=_SIZES)
    def _sum_kernel(y_ptr, out_ptr, C, Q, T, H, W, FAITHFUL: tl.constexpr, BLOCK: tl.constexpr):
        """``out[n, c, e] = y[n, C + c, e] + y[n, c, before(e)] + y[n, 2 C + c, after(e)]``."""
        plane = tl.program_id(0)
        n = plane // C
        c = plane % C
        size = T * H * W
        e = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = e < size
        before, has_before, after, has_after = _neighbours(e, c, Q, T, H, W, FAITHFUL)
        taps = y_ptr + (n.to(tl.int64) * 3 * C + c) * size
        total = tl.load(taps + C * size + e, mask=inside, other=0.0).to(tl.float32)
        total += tl.load(taps + before, mask=inside & has_before, other=0.0).to(tl.float32)
        total += tl.load(taps + 2 * C * size + after, mask=inside & has_after, other=0.0).to(tl.float32)
        tl.store(out_ptr + plane.to(tl.int64) * size + e, total.to(out_ptr.dtype.element_ty), mask=inside)

    @triton.jit(do_not_specialize=_SIZES)
    def _spread_kernel(grad_ptr, grad_y_ptr, C, Q, T, H, W, FAITHFUL: tl.constexpr, BLOCK: tl.constexpr):
        """The transpose: ``grad_y[n, c] = grad`` one step on, ``grad_y[n, C + c] = grad``, ``grad_y[n, 2 C + c] =
        grad`` one step back (0 where there is none)."""
        plane = tl.program_id(0)
        n = plane // C
        c = plane % C
        size = T * H * W
        e = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = e < size
        before, has_before, after, has_after = _neighbours(e, c, Q, T, H, W, FAITHFUL)
        grad = grad_ptr + plane.to(tl.int64) * size
        taps = grad_y_ptr + (n.to(tl.int64) * 3 * C + c) * size
        kind = grad_y_ptr.dtype.element_ty
        tl.store(taps + e, tl.load(grad + after, mask=inside & has_after, other=0.0).to(kind), mask=inside)
        tl.store(taps + C * size + e, tl.load(grad + e, mask=inside, other=0.0).to(kind), mask=inside)
        tl.store(taps + 2 * C * size + e, tl.load(grad + before, mask=inside & has_before, other=0.0).to(kind),
                 mask=inside)

_BLOCK, _WARPS = 1024, 4


@functools.lru_cache(maxsize=1024)
def _launches(shape: tuple[int, ...], quarter: int, faithful: bool) -> tuple[Launch, Launch]:
    """The sum's and the spread's launch for a tap sum of ``(N, C, T, H, W)`` outputs, once per layer."""
    n, c, t, h, w = shape
    grid, sizes = (n * c, _cdiv(t * h * w, _BLOCK)), (c, quarter, t, h, w)
    consts = dict(FAITHFUL=faithful, BLOCK=_BLOCK)
    return Launch(_sum_kernel, grid, sizes, consts, _WARPS), Launch(_spread_kernel, grid, sizes, consts, _WARPS)


def _sum_impl(y: torch.Tensor, quarter: int, faithful: bool) -> torch.Tensor:
    """y ``(N, 3 C, T, H, W)`` contiguous -> ``(N, C, T, H, W)``."""
    out = y.new_empty(y.shape[0], y.shape[1] // 3, *y.shape[2:])
    _launches(tuple(out.shape), quarter, faithful)[0](y, out)
    return out


def _spread_impl(grad: torch.Tensor, quarter: int, faithful: bool) -> torch.Tensor:
    """grad ``(N, C, T, H, W)`` contiguous -> ``(N, 3 C, T, H, W)``."""
    grad_y = grad.new_empty(grad.shape[0], 3 * grad.shape[1], *grad.shape[2:])
    _launches(tuple(grad.shape), quarter, faithful)[1](grad, grad_y)
    return grad_y


# Registered operators for torch.compile and dispatch modes; eager calls skip the dispatcher (as cuda_stencil's).
_sum = torch.library.custom_op("sts3d::cuda_tap_sum", _sum_impl, mutates_args=())
_spread = torch.library.custom_op("sts3d::cuda_tap_spread", _spread_impl, mutates_args=())


@_sum.register_fake
def _(y, quarter, faithful):
    return y.new_empty(y.shape[0], y.shape[1] // 3, *y.shape[2:])


@_spread.register_fake
def _(grad, quarter, faithful):
    return grad.new_empty(grad.shape[0], 3 * grad.shape[1], *grad.shape[2:])


def _setup_context(ctx, inputs, output) -> None:
    ctx.layer = inputs[1:]


def _gradients(ctx, grad: torch.Tensor, spread=_spread):
    return spread(grad.contiguous(), *ctx.layer), None, None


_sum.register_autograd(_gradients, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, quarter, faithful):
        _setup_context(ctx, (y, quarter, faithful), None)
        return _sum_impl(y, quarter, faithful)

    @staticmethod
    def backward(ctx, grad):
        return _gradients(ctx, grad, _spread_impl)


def tap_sum_cuda(y: torch.Tensor, quarter: int, faithful: bool) -> torch.Tensor:
    """The tap sum of ``y`` ``(N, 3 C, T, H, W)`` (every filter's tap 0, 1 and 2, in that channel-block order) ->
    ``(N, C, T, H, W)``, with ``quarter = C / 4``."""
    y = y.contiguous()
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        return _sum(y, quarter, faithful)
    if torch.is_grad_enabled() and y.requires_grad:
        return _Eager.apply(y, quarter, faithful)
    return _sum_impl(y, quarter, faithful)  # nothing to record: no autograd function (as cuda_stencil._conv)
