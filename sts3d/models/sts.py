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

from typing import Literal, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import cuda_stencil, cuda_tap_sum, native, stencil
from .depthwise import DepthwiseImpl, _frames, _input_grad, _weight_grad, check_depthwise_impl, depthwise_form
from .strided import line_fills_map, out_size

STSMode = Literal["faithful", "aligned"]
STS_MODES: tuple[str, ...] = ("faithful", "aligned")


# Frames at least this wide run the aligned lines as 1x9 and 9x1 convs of the frames; oneDNN's weight gradient of
# a 9x1 conv of narrower frames is 3-5x slower than the column form of _line_weight_grad (measured, 1 thread).
_WIDE = 16


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
    out_h, out_w = out_size(h, stride), out_size(w, stride)
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
    if line_fills_map(h, w, stride):
        y = F.conv1d(seq, weight, stride=step, padding=k // 2, groups=c * t).view(n, c, t, out_h, out_w)
    else:
        y = F.conv1d(seq, weight, padding=k // 2, groups=c * t).view(n, c, t, h, w)[..., ::stride, ::stride]
    return y.transpose(-1, -2) if column_major else y


def _view_frames(frames: torch.Tensor, batch: int, rows: int, cols: int) -> torch.Tensor:
    """A channels-last ``(B, C, H, W)`` stack viewed as ``(batch, C, rows, cols)`` in memory order (a view, still
    channels-last; ``batch * rows * cols == B * H * W``). ``(B, C, 1, H * W)``: every frame as its row-major
    sequence."""
    c = frames.shape[1]
    return frames.permute(0, 2, 3, 1).reshape(batch, rows, cols, c).permute(0, 3, 1, 2)


def _transpose_frames(frames: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, W, H)`` channels-last, a copy: the columns of every frame become its rows."""
    return frames.transpose(2, 3).contiguous(memory_format=torch.channels_last)


def _write_clip(dst: torch.Tensor, frames: torch.Tensor) -> None:
    """``dst[:] = frames`` from a channels-last ``(N * T, C, H, W)`` stack into an ``(N, C, T, H, W)`` ``dst`` whose
    samples are contiguous (a channel slice of a contiguous clip), one 2D transpose per sample."""
    n, c = dst.shape[:2]
    rows = frames.permute(0, 2, 3, 1).reshape(n, -1, c)  # (N, T*H*W, C), a view
    for i in range(n):
        dst[i].view(c, -1).copy_(rows[i].t())


class _Branch(NamedTuple):
    """One 2D depthwise conv of the static half, ``conv2d(inp, kernel, stride, padding)``, on a channels-last view
    ``inp`` of the frames ``(B, C, H, W)`` (or of their transposed copy ``(B, C, W, H)`` when ``transposed``) of
    shape ``inp_grid``. A faithful line's ``inp`` is ``(B, C, 1, L)``: every frame as a sequence, convolved by a
    ``1x9`` kernel; an aligned line's is the frames.

    Its output is viewed as the ``(B, C, *grid)`` map, every ``every[0]``-th row and ``every[1]``-th column taken (the
    positions it computed but the output does not hold), and transposed back when ``transposed``: ``(B, C, H', W')``.
    ``tap``: the temporal slice of the weight that ``kernel`` reads.
    """
    inp: torch.Tensor
    kernel: torch.Tensor
    stride: tuple[int, int]
    padding: tuple[int, int]
    grid: tuple[int, int]
    every: tuple[int, int]
    transposed: bool
    inp_grid: tuple[int, int]
    tap: int

    def output(self, y: torch.Tensor) -> torch.Tensor:
        """The conv output ``y`` -> ``(B, C, H', W')`` (a view)."""
        y = _view_frames(y, y.shape[0], *self.grid)[..., ::self.every[0], ::self.every[1]]
        return y.transpose(2, 3) if self.transposed else y

    def output_grad(self, grad: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`output`: a channels-last ``(B, C, H', W')`` gradient -> the conv output's."""
        if self.transposed:
            grad = _transpose_frames(grad)
        if self.every != (1, 1):  # the computed positions that the output drops get no gradient
            full = grad.new_zeros(grad.shape[0], *self.grid, grad.shape[1]).permute(0, 3, 1, 2)  # channels-last
            full[..., ::self.every[0], ::self.every[1]] = grad
            grad = full
        kh, kw = self.kernel.shape[2:]
        rows, cols = self.inp.shape[2:]
        return _view_frames(grad, self.inp.shape[0], (rows + 2 * self.padding[0] - kh) // self.stride[0] + 1,
                            (cols + 2 * self.padding[1] - kw) // self.stride[1] + 1)

    def input_grad(self, grad_inp: torch.Tensor) -> torch.Tensor:
        """The conv's input gradient -> the frames' ``(B, C, H, W)`` (a view)."""
        grad = _view_frames(grad_inp, grad_inp.shape[0], *self.inp_grid)
        return grad.transpose(2, 3) if self.transposed else grad

    def backward(self, grad: torch.Tensor, need_input: bool, need_weight: bool):
        """``(d loss / d frames or None, d loss / d kernel as (C, 1, 3, 3) or None)`` from the output gradient."""
        grad_out = self.output_grad(grad)
        groups = self.kernel.shape[0]
        if self.kernel.shape[2] == 3:  # the centre conv: oneDNN's channels-last 3x3 backward is fast for both
            gi, gw, _ = torch.ops.aten.convolution_backward(grad_out, self.inp, self.kernel, None, self.stride,
                                                            self.padding, (1, 1), False, (0, 0), groups,
                                                            (need_input, need_weight, False))
        else:
            gi = gw = None
            if need_input:
                gi = torch.ops.aten.convolution_backward(grad_out, self.inp, self.kernel, None, self.stride,
                                                         self.padding, (1, 1), False, (0, 0), groups,
                                                         (True, False, False))[0]
            if need_weight:
                gw = _line_weight_grad(grad_out, self.inp, self.kernel, self.stride, self.padding)
        return self.input_grad(gi) if need_input else None, gw.view(groups, 1, 3, 3) if need_weight else None


def _padded_sequences(frames: torch.Tensor) -> torch.Tensor:
    """Channels-last ``(B, C, H, W)`` -> ``(B, C, 1, H * (W + 4))``: each frame's rows, every one followed by 4 zeros,
    as one sequence (a copy). A 9-tap line conv of it never reads across rows: row by row, the zero-padded conv."""
    b, c, h, w = frames.shape
    padded = frames.new_empty(b, h, w + 4, c)
    padded[:, :, :w] = frames.permute(0, 2, 3, 1)
    padded[:, :, w:] = 0
    return padded.view(b, 1, h * (w + 4), c).permute(0, 3, 1, 2)


def _line_weight_grad(grad_out: torch.Tensor, inp: torch.Tensor, kernel: torch.Tensor, stride: tuple[int, int],
                      padding: tuple[int, int]) -> torch.Tensor:
    """The weight gradient of the depthwise line conv ``conv2d(inp, kernel, stride, padding)`` (kernel ``1x9`` or
    ``9x1``) with output gradient ``grad_out``, both channels-last; returned as ``(C, 1, 3, 3)``.

    oneDNN's weight gradient of a ``1x9`` conv is 2-6x slower than that of the same conv laid out as ``9x1`` over
    one long column ``(B, C, L, 1)``, a free view of the sequences ``(B, C, 1, L)``; ``9x1`` convs of small frames
    (below 16 columns) are slow too. So sequences, and the ``1x9`` convs of small frames at stride 1 (made sequences
    by :func:`_padded_sequences`, two copies), run as columns; the rest as they are.
    """
    c = kernel.shape[0]
    if inp.shape[2] != 1 and stride == (1, 1) and kernel.shape[2] == 1 and inp.shape[3] < _WIDE:
        grad_out, inp = _padded_sequences(grad_out), _padded_sequences(inp)
    if inp.shape[2] != 1:
        grad_weight = torch.ops.aten.convolution_backward(grad_out, inp, kernel, None, stride, padding, (1, 1), False,
                                                          (0, 0), c, (False, True, False))[1]
        return grad_weight.reshape(c, 1, 3, 3)
    # as columns; views made by _view_frames, whose strides oneDNN takes as channels-last (a transpose's are not)
    columns = [_view_frames(t, t.shape[0], t.shape[3], 1) for t in (grad_out, inp)]
    grad_weight = torch.ops.aten.convolution_backward(*columns, kernel.view(c, 1, 9, 1), None, stride[::-1], (4, 0),
                                                      (1, 1), False, (0, 0), c, (False, True, False))[1]
    return grad_weight.reshape(c, 1, 3, 3)


def _static_branches(frames: torch.Tensor, weight: torch.Tensor, stride: int, faithful: bool) -> list[_Branch]:
    """The static half's convs (centre ``3x3``, width line, height line, in the order their outputs are summed).

    frames: the static input channels, channels-last ``(N * T, C, H, W)``; weight: their ``(C, 1, 3, 3, 3)`` filters.
    Every line is a ``1x9`` conv of sequences that are free views of channels-last frames: in the faithful mode each
    frame's row-major sequence, strided by ``s * s``; in the aligned mode each row, strided by ``s``. The height
    lines run on a transposed copy of the frames.
    """
    b, c, h, w = frames.shape
    out = (out_size(h, stride), out_size(w, stride))
    branches = [_Branch(frames, weight[:, :, 1], (stride, stride), (1, 1), out, (1, 1), False, (h, w), 1)]
    line = lambda tap: weight[:, :, tap].reshape(c, 1, 1, 9)  # noqa: E731 (the 3x3 slice as 9 taps, row-major)
    if not faithful and (stride != 1 or min(h, w) >= _WIDE):  # zero-padded 1x9 and 9x1 convs of the frames
        branches.append(_Branch(frames, line(0), (stride, stride), (0, 4), out, (1, 1), False, (h, w), 0))
        branches.append(_Branch(frames, line(2).view(c, 1, 9, 1), (stride, stride), (4, 0), out, (1, 1), False,
                                (h, w), 2))
        return branches
    transposed_frames = _transpose_frames(frames)
    for tap, transposed in ((0, False), (2, True)):
        src = transposed_frames if transposed else frames
        rows, cols = src.shape[2:]
        out_rows, out_cols = out[::-1] if transposed else out
        if not faithful:  # small frames: 1x9 convs of the rows, the height line on transposed frames
            branch = _Branch(src, line(tap), (1, 1), (0, 4), (out_rows, out_cols), (1, 1), transposed, (rows, cols),
                             tap)
        elif line_fills_map(rows, cols, stride):
            branch = _Branch(_view_frames(src, b, 1, rows * cols), line(tap), (1, stride * stride), (0, 4),
                             (out_rows, out_cols), (1, 1), transposed, (rows, cols), tap)
        else:  # odd sizes: the sequence conv at every position, then the true strided positions
            branch = _Branch(_view_frames(src, b, 1, rows * cols), line(tap), (1, 1), (0, 4), (rows, cols),
                             (stride, stride), transposed, (rows, cols), tap)
        branches.append(branch)
    return branches


class _STSDepthwiseFunction(torch.autograd.Function):
    """The depthwise ``3x3x3`` STS conv (no bias) with fast CPU gradients.

    Static half: its convs (:func:`_static_branches`) on channels-last frames ``(N * T, C / 2, H, W)``, where oneDNN
    runs depthwise 2D convs and their gradients fast (PyTorch's NCHW depthwise backward is several times slower).
    Dynamic half: the stock ``conv3d`` forward and the gradients of :mod:`sts3d.models.depthwise`. Both halves are
    written into one output, and one input gradient, so there is no concatenation or slice-gradient copy.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, faithful: bool) -> torch.Tensor:
        n, c, t, h, w = x.shape
        half = c // 2
        branches = _static_branches(_frames(x[:, :half]), weight[:half], stride, faithful)
        static = None
        for b in branches:
            y = b.output(F.conv2d(b.inp, b.kernel, stride=b.stride, padding=b.padding, groups=half))
            static = y if static is None else static.add_(y)  # the first output is the centre conv's own buffer
        out = x.new_empty(n, c, t, *static.shape[2:])
        _write_clip(out[:, :half], static)
        out[:, half:] = F.conv3d(x[:, half:], weight[half:], stride=(1, stride, stride), padding=1, groups=half)
        ctx.save_for_backward(x, weight)
        ctx.branches, ctx.stride = branches, stride
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        n, c = x.shape[:2]
        half, stride = c // 2, (ctx.stride, ctx.stride)
        need_x, need_w = ctx.needs_input_grad[:2]
        grad = grad.contiguous()
        grad_x = x.new_empty(x.shape) if need_x else None
        grad_w = weight.new_empty(weight.shape) if need_w else None
        static_frames = _frames(grad[:, :half])
        static_grad_x = None
        for b in ctx.branches:
            gi, gw = b.backward(static_frames, need_x, need_w)
            if need_w:
                grad_w[:half, :, b.tap] = gw
            if need_x:
                static_grad_x = gi if static_grad_x is None else static_grad_x.add_(gi)
        x_dynamic, w_dynamic, grad_dynamic = x[:, half:], weight[half:], grad[:, half:]
        dynamic_frames = _frames(grad_dynamic) if need_w or stride != (1, 1) else None
        if need_x:
            _write_clip(grad_x[:, :half], static_grad_x)
            grad_x[:, half:] = _input_grad(grad_dynamic, dynamic_frames, x_dynamic, w_dynamic, stride, (1, 1))
        if need_w:
            grad_w[half:] = _weight_grad(dynamic_frames, _frames(x_dynamic), w_dynamic, n, stride, (1, 1))
        return grad_x, grad_w, None, None


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
        out = y.new_empty(y.shape[0], y.shape[1] // 3, *y.shape[2:])
        _sum_taps(out, y, axes)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        n, c = grad.shape[:2]
        grad = grad.contiguous()
        grad_y = grad.new_empty(n, 3 * c, *grad.shape[2:])
        _spread_taps(grad_y, grad, ctx.axes)
        return grad_y, None


def _compiled_taps(axes: tuple, *tensors: torch.Tensor) -> Optional[tuple]:
    """``(extension, quarter, faithful)`` where the compiled tap sum (``sts3d/csrc/tap_sum.cpp``, one pass per plane
    instead of PyTorch's 7-15 passes over the tensor) takes these tensors and the STS conv's channel groups, else
    ``None``."""
    if len(axes) != 3 or axes[0][2] not in _COLUMN:
        return None
    quarter, line = axes[0][1], axes[0][2]
    standard = axes == ((0, quarter, line), (quarter, 2 * quarter, _COLUMN[line]), (2 * quarter, axes[2][1], "t"))
    dtype = tensors[0].dtype
    # the extension last: its first call builds it, which a CUDA run must not wait for
    if not (standard and dtype in _COMPILED_TAP_DTYPES
            and all(t.device.type == "cpu" and t.is_contiguous() and t.dtype == dtype for t in tensors)
            and native.available()):
        return None
    return native.extension(), quarter, line == "row_major"


_COLUMN = {"row_major": "col_major", "w": "h"}  # the width line's mode -> the height line's
_COMPILED_TAP_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def _sum_taps(out: torch.Tensor, y: torch.Tensor, axes: tuple) -> None:
    """``out`` ``(N, C, T, H, W)`` = ``_TemporalTapSum`` of ``y`` ``(N, 3 C, T, H, W)``."""
    compiled = _compiled_taps(axes, out, y)
    if compiled is not None:
        extension, quarter, faithful = compiled
        extension.tap_sum_forward(y, out, quarter, faithful)
        return
    c = out.shape[1]
    out.copy_(y[:, c:2 * c])
    for start, end, axis in axes:
        _shift(out[:, start:end], y[:, start:end], -1, axis, accumulate=True)
        _shift(out[:, start:end], y[:, 2 * c + start:2 * c + end], +1, axis, accumulate=True)


def _spread_taps(grad_y: torch.Tensor, grad: torch.Tensor, axes: tuple) -> None:
    """``grad_y`` ``(N, 3 C, T, H, W)`` = the transpose of :func:`_sum_taps` applied to ``grad`` ``(N, C, T, H, W)``
    (every element of ``grad_y`` is written)."""
    compiled = _compiled_taps(axes, grad_y, grad)
    if compiled is not None:
        extension, quarter, faithful = compiled
        extension.tap_sum_backward(grad, grad_y, quarter, faithful)
        return
    c = grad.shape[1]
    grad_y[:, c:2 * c] = grad
    for start, end, axis in axes:  # the transpose of a shift by -1 is a shift by +1
        _shift(grad_y[:, start:end], grad[:, start:end], +1, axis, accumulate=False)
        _shift(grad_y[:, 2 * c + start:2 * c + end], grad[:, start:end], -1, axis, accumulate=False)


def _pointwise_as_products(x: torch.Tensor) -> bool:
    """Whether the dense 3x1x1 form runs its pointwise product as matrix products (``_PointwiseGemm``) rather than
    as a 1x1x1 conv: for contiguous CPU clips, where oneDNN's 1x1x1 conv loses to them on every STS layer of the
    dense networks (2 threads, forward + backward, STS layer over plain conv: 1.01-3.46x as a conv, 0.72-1.67x as
    products; ``docs/benchmarks.md``). On CUDA cuDNN's conv keeps it (STS measured free there)."""
    return x.device.type == "cpu" and x.is_contiguous()


def _columns(t: torch.Tensor) -> torch.Tensor:
    """``(N, C, L)`` -> ``(C, N * L)``: every sample's columns side by side (a copy)."""
    return t.transpose(0, 1).reshape(t.shape[1], -1)


class _PointwiseGemm(torch.autograd.Function):
    """``weight @ x`` per sample: a pointwise conv as batched matrix products. x ``(N, C_in, L)``; weight
    ``(C_out, C_in)``; returns ``(N, C_out, L)``. Explicit ``bmm`` calls: ``torch.matmul`` of a matrix and a batch
    copies its operands when they require grad. The backward runs under the forward's autocast state, so its
    products take the forward's dtype."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.bmm(weight.expand(x.shape[0], -1, -1), x)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(weight.t().expand(x.shape[0], -1, -1), grad) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            _, m, columns = grad.shape
            k = x.shape[1]
            if columns * (m + k) < m * k:  # few columns: copying them side by side beats n weight-sized products
                grad_w = torch.mm(_columns(grad), _columns(x).t())
            else:
                grad_w = torch.bmm(grad, x.transpose(1, 2)).sum(0)
        return grad_x, grad_w


# The largest block glibc hands out from its heap; larger ones are mapped and faulted in afresh at every allocation
_MMAP_THRESHOLD_MAX = 32 * 2**20


class _TapsPerSample(torch.autograd.Function):
    """``_TemporalTapSum(_PointwiseGemm(x, weight))`` one sample at a time, for batches whose ``3 C_out`` tap block
    would exceed glibc's largest ``mmap`` threshold: a block that size is mapped and faulted in afresh at every step
    (R(2+1)D-34's stem at 8x128x128, batch 2: 50 MB, 2 % of its STS step), while a sample's block is reused from
    the heap. Same products (``3 C_out`` rows each, so the same matrix shapes per sample) and the same sums in the
    same order. x ``(N, C_in, L)``, ``L = T * H * W`` (``frame``: ``(T, H, W)``); weight ``(3 C_out, C_in)``;
    returns ``(N, C_out, L)``."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, axes: tuple, frame: tuple) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.axes, ctx.frame = axes, frame
        n, c = x.shape[0], weight.shape[0] // 3
        out = None
        for i in range(n):
            taps = torch.mm(weight, x[i]).view(1, 3 * c, *frame)
            if out is None:
                out = taps.new_empty(n, c, x.shape[2])
            _sum_taps(out[i].view(1, c, *frame), taps, axes)
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        grad = grad.contiguous()
        n, c = grad.shape[:2]
        in_place = not torch.is_autocast_enabled("cpu")  # under autocast out= would skip its casts
        grad_x = x.new_empty(x.shape) if need_x and in_place else None
        grad_w = None
        for i in range(n):
            taps = grad.new_empty(1, 3 * c, *ctx.frame)
            _spread_taps(taps, grad[i].view(1, c, *ctx.frame), ctx.axes)
            taps = taps.view(3 * c, -1)
            if need_x and in_place:
                torch.mm(weight.t(), taps, out=grad_x[i])
            elif need_x:
                sample = torch.mm(weight.t(), taps)
                grad_x = sample.new_empty(n, *sample.shape) if grad_x is None else grad_x
                grad_x[i] = sample
            if need_w:
                sample_w = torch.mm(taps, x[i].t())
                grad_w = sample_w if grad_w is None else grad_w + sample_w
        return grad_x, grad_w, None, None


def _tap_major(weight: torch.Tensor) -> torch.Tensor:
    """A copy of a ``(C_out, C_in, 3, 1, 1)`` weight, same shape and values, laid out in memory as ``(3, C_out, C_in)``.

    The dense ``3x1x1`` STS form computes every tap of every filter as one pointwise conv, whose ``(3 C_out, C_in)``
    weight is then a free view of the parameter, and whose weight gradient reaches the parameter without a copy. In
    the standard layout both are strided copies of the whole weight every step (12.6 MB for SlowOnly's res5 convs).
    ``state_dict`` keys, shapes and values are unchanged; ``load_state_dict`` and in-place initialisation keep the
    layout, and any other layout still computes the same result (one copy slower).
    """
    c_out, c_in, taps = weight.shape[:3]
    laid_out = weight.new_empty(taps, c_out, c_in).permute(1, 2, 0)[..., None, None]
    return laid_out.copy_(weight)


class STSConv3d(nn.Conv3d):
    """A drop-in ``nn.Conv3d`` that computes the STS convolution with its own weight.

    Built with the ``nn.Conv3d`` signature plus ``mode`` and ``depthwise_impl`` (for the depthwise form, the form
    :func:`sts3d.models.depthwise.depthwise_form` picks: ``'stencil'``, both halves in one pass of our own kernels
    (CPU or CUDA), :func:`sts3d.models.stencil.sts_depthwise_stencil`; ``'frames'``, both halves with hand-written
    gradients, ``_STSDepthwiseFunction``; otherwise the stock convs); use it as a conv type (see
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
            if self.kind == "temporal":
                self.weight = nn.Parameter(_tap_major(self.weight.detach()), self.weight.requires_grad)
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
        s = self.stride[1]
        faithful = self.mode == "faithful"
        form = depthwise_form(self.depthwise_impl, x)
        if form == "stencil":
            return stencil.sts_depthwise_stencil(x, self.weight, s, faithful)
        if form == "frames":
            return _STSDepthwiseFunction.apply(x, self.weight, s, faithful)
        half = self.out_channels // 2
        x_static, x_dynamic = x[:, :half], x[:, half:]
        w_static = self.weight[:half, 0]  # (C/2, 3, 3, 3)
        lines = w_static.flatten(2)  # (C/2, 3, 9): each 3x3 slice flattened row-major
        n, _, t = x.shape[:3]
        centre = w_static[:, 1].repeat_interleave(t, dim=0).unsqueeze(1)  # (C/2 * T, 1, 3, 3)
        static = F.conv2d(_frames_as_channels(x_static), centre, stride=s, padding=1, groups=half * t)
        static = static.view(n, half, t, *static.shape[-2:])
        static = static + _depthwise_line(x_static, lines[:, 0], s, column_major=False, faithful=faithful)
        static = static + _depthwise_line(x_static, lines[:, 2], s, column_major=True, faithful=faithful)
        dynamic = F.conv3d(x_dynamic, self.weight[half:], stride=(1, s, s), padding=1, groups=half)
        return torch.cat((static, dynamic), dim=1)

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        c = self.out_channels
        quarter = c // 4
        line_w, line_h = ("row_major", "col_major") if self.mode == "faithful" else ("w", "h")
        axes = ((0, quarter, line_w), (quarter, 2 * quarter, line_h), (2 * quarter, c, "t"))
        # (C_out, C_in, 3, 1, 1) -> (3 C_out, C_in, 1, 1, 1): tap 0 of every filter, then tap 1, then tap 2
        pointwise = self.weight.permute(2, 0, 1, 3, 4).reshape(3 * c, self.in_channels, 1, 1, 1)
        n, _, t, h, w = x.shape
        if _pointwise_as_products(x):
            flat, taps_weight = x.view(n, self.in_channels, -1), pointwise.view(3 * c, -1)
            if n > 1 and n * 3 * c * flat.shape[2] * x.element_size() > _MMAP_THRESHOLD_MAX:
                return _TapsPerSample.apply(flat, taps_weight, axes, (t, h, w)).view(n, c, t, h, w)
            taps = _PointwiseGemm.apply(flat, taps_weight)
            return _TemporalTapSum.apply(taps.view(n, 3 * c, t, h, w), axes)
        taps = F.conv3d(x, pointwise)
        if taps.device.type == "cuda" and cuda_stencil.takes(taps.dtype):  # one launch per pass, not 7-15
            return cuda_tap_sum.tap_sum_cuda(taps, quarter, self.mode == "faithful")
        return _TemporalTapSum.apply(taps, axes)
