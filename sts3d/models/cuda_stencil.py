"""Depthwise 3D convolutions on CUDA as Triton tile kernels (the ``'stencil'`` depthwise implementation on GPUs).

PyTorch runs a depthwise ``conv3d`` on CUDA with generic kernels whose backward costs 4-10 times the forward
(measured on an H100, ``docs/benchmarks.md``). Here each pass (the forward, the input gradient and the weight
gradient) is one launch that computes a tile of outputs as a sum of taps, each a masked load of its source at an
offset computed from the output position:

* forward and input gradient: one program per frame and tile (``_conv_kernel``), or, for ``3x3x3`` kernels at
  stride 1 on large frames, one per plane and tile that runs through the frames, reading each source frame's 9
  spatial taps once for the three output frames they reach (``_stream_kernel``; the ``_STREAM_*`` settings say where,
  from H100 timings);
* weight gradient: one program per plane and tile that runs through the frames, adds the products up elementwise and
  reduces once (``_weight_grad_kernel``); with three temporal taps each source frame's spatial taps are read once for
  the three output frames they reach, else every tap is gathered per frame.

The taps:

* a plain depthwise conv (odd kernel, padding ``k // 2``, spatial stride ``s``, temporal stride 1): its ``k_t k_h
  k_w`` taps; the input gradient is the transposed conv, whose taps read the output gradient where ``s`` divides
  the offset;
* STS (spec section 1.1): the dynamic half (channels ``C / 2`` on) is the plain ``3x3x3`` conv; the static half's
  27 taps all read frame ``t``: the centre ``3x3`` and two 9-tap lines, in the aligned mode a ``1x9`` and a ``9x1``
  kernel at the strided positions, in the faithful mode the original's lines along the row-major and column-major
  flattened frame (running on into the next row / column), with the original's stride-2 placement (every
  ``s**2``-th element of the line, read as the output map, where that fills it; else the line at the strided
  positions: the odd-size rule of ``sts3d.models.sts``).

Accumulation is float32 for float32, bfloat16 and float16 inputs; outputs take the input's dtype, the weight
gradient the weight's. Needs ``triton`` (installed with PyTorch's CUDA wheels); :func:`available` says whether the
kernels can run, and ``STS3D_NO_EXTENSION=1`` switches them off with the CPU extension. They also run on the CPU
under ``TRITON_INTERPRET=1``, which the tests use.
"""
from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple, Optional

import torch
from torch.utils.flop_counter import register_flop_formula

from .strided import line_fills_map, out_size
from .triton_launch import Launch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the CUDA kernels are simply not offered
    triton = None

PLAIN, FAITHFUL, ALIGNED = 0, 1, 2  # the operators' ``mode``
# Tile of 256 outputs, 2 warps: the fastest of 256/2, 512/4 and 1024/8 on every CSN and X3D layer (H100)
_TILE, _WARPS = 256, 2
# The weight gradient's programs: BLOCK outputs of a frame (each with up to 32 taps in registers), over all frames
_WGRAD_BLOCK, _WGRAD_WARPS = 64, 2
# Weight gradients of three temporal taps (every 3x3x3 conv) stream through the frames (_wgrad_stream). The gather
# of every tap per frame (_wgrad_gather, the STS static half and other kernels) took 2x the GPU time of the
# streaming forward and input gradient together on an H100 (64 x 8 x 56 x 56), in proportion to its loads.
_WGRAD_STREAM = True
# The streaming 3x3x3 kernel's tiles (outputs of a frame per program, warps), and where it serves: stride 1 and
# frames of at least _STREAM_MIN_FRAME outputs. On an H100 (forward + input gradient, batch 8) it took 0.6x the
# per-frame kernel's GPU time on 56x56 frames, but 1.2-2x on 28x28 and smaller (fewer programs, each running through
# the frames in turn), and 1.4-3.5x at stride 2.
_STREAM_TILE, _STREAM_WARPS, _STREAM_STRIDES, _STREAM_MIN_FRAME = 128, 2, (1,), 2048
# The per-frame input gradient at stride 2 sums each of its four phases' own taps (_input_grad_s2) rather than all
# taps with the others masked: in the sm_90 code of a 3x3x3 conv, 336 instead of 688 instructions (plain) and 520
# instead of 1128 (aligned STS); the masked form took 3x the forward's GPU time on an H200 (session 14).
_S2_PHASES = True
# The passes in which the per-frame kernel loads the plain taps of frames whose temporal taps all fall inside the
# clip (6 of 8 frames) without each load's frame test. Compiled for sm_90, a stand-alone 3x3x3 forward at stride 1
# came to about 0.7x the instructions without the test (which, and-ed into every element's mask, costs two compares
# and a predicate move per load); the kernel holding both paths takes 91 registers instead of 113 in the forward,
# but 88 instead of 72 in the input gradient. None until timed on a GPU (`bench/cuda_kernels.py --variants interior
# interior_forward`).
_INTERIOR_PASSES: tuple[str, ...] = ()


@functools.lru_cache(maxsize=1)
def _capability() -> tuple[int, int]:
    """The lowest compute capability among the visible GPUs."""
    return min(torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count()))


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the Triton kernels can run on CUDA tensors here (Triton needs a Volta or newer GPU)."""
    return (triton is not None and os.environ.get("STS3D_NO_EXTENSION", "") in ("", "0")
            and torch.cuda.is_available() and _capability() >= (7, 0))


@torch.compiler.assume_constant_result
def takes(dtype: torch.dtype) -> bool:
    """Whether the kernels take tensors of ``dtype`` here: float32 and float16, and bfloat16 from Ampere on."""
    return available() and (dtype in (torch.float32, torch.float16)
                            or (dtype == torch.bfloat16 and _capability() >= (8, 0)))


if triton is not None:
    # Layer sizes vary per layer: specialising on them (divisibility by 16) would compile a variant per shape.
    _SIZES = ["C", "SPLIT", "T", "H", "W", "OH", "OW"]

    @triton.jit
    def _plain_tap(oh, ow, H, W, OH, OW, S: tl.constexpr, dy, dx, TRANSPOSED: tl.constexpr):
        """Offset within the source frame and mask of a tap at ``(dy, dx)``. Forward: output ``(oh, ow)`` reads input
        ``(oh * S + dy, ow * S + dx)``; transposed (``(oh, ow)`` an input position, the source the output
        gradient ``OH x OW``): the output that read it through this tap."""
        if TRANSPOSED:
            qh = oh - dy
            qw = ow - dx
            sh = qh // S
            sw = qw // S
            ok = (qh >= 0) & (qw >= 0) & (qh % S == 0) & (qw % S == 0) & (sh < OH) & (sw < OW)
            return sh * OW + sw, ok
        ih = oh * S + dy
        iw = ow * S + dx
        return ih * W + iw, (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)

    @triton.jit
    def _wrap(major, minor, size):
        """``(major, minor)`` of the position ``major * size + minor`` for a ``minor`` in ``[-size, 2 size)``: a line
        tap (at most 4 from its output) on a line of at least 4, which runs at most one row or column on."""
        step = (minor >= size).to(tl.int32) - (minor < 0).to(tl.int32)
        return major + step, minor - step * size

    @triton.jit
    def _line_tap(oh, ow, H, W, OH, OW, S: tl.constexpr, d, FILLS: tl.constexpr, COLUMN: tl.constexpr,
                  TRANSPOSED: tl.constexpr, WRAPS: tl.constexpr):
        """A faithful line tap ``d`` (-4..4) along the row-major (``COLUMN``: column-major) flattened frame, in the
        forward or transposed direction as :func:`_plain_tap`. ``FILLS``: the output takes every ``S**2``-th
        element of the line (row-major, or column-major for the column line); else the line at ``(oh S, ow S)``.
        ``WRAPS`` (frames of at least 4 x 4): a tap's position is its output's, split into row and column once
        (the same divisions for every tap, which the compiler computes once; none at stride 1, where that is the
        output's own row and column), moved by ``d`` with :func:`_wrap`; else every tap divides by the frame's
        sizes."""
        if TRANSPOSED:  # (oh, ow) is an input position: r, the line position of the output that reads it
            r = (ow * H + oh - d) if COLUMN else (oh * W + ow - d)
            if FILLS:  # the output whose k-th place in the map (column-major for the column line) is r / S**2
                step = S * S
                k = r // step
                fills = (r >= 0) & (r % step == 0) & (k < OH * OW)
                if not COLUMN:
                    return k, fills
                if WRAPS and S == 1:  # the output's row and column are the input's (no division)
                    kw, kh = _wrap(ow, oh - d, H)
                elif WRAPS:
                    # the line position of tap 0 over step, split by OH, moved by k's distance from it (at most 4,
                    # a single wrap: at stride 2 the valid taps are within one output)
                    base = (ow * H + oh) // step
                    kw, kh = _wrap(base // OH, base % OH + (k - base), OH)
                else:
                    kw, kh = k // OH, k % OH
                return kh * OW + kw, fills
            if WRAPS:  # the output at the strided position (rh, rw) that r is
                if COLUMN:
                    rw, rh = _wrap(ow, oh - d, H)
                else:
                    rh, rw = _wrap(oh, ow - d, W)
            elif COLUMN:
                rh, rw = r % H, r // H
            else:
                rh, rw = r // W, r % W
            return (rh // S) * OW + rw // S, (r >= 0) & (r < H * W) & (rh % S == 0) & (rw % S == 0)
        if COLUMN:
            base = (ow * OH + oh) * S * S if FILLS else ow * S * H + oh * S
            if WRAPS:
                if S == 1:  # base is (ow, oh) itself: no division
                    qw, qh = _wrap(ow, oh + d, H)
                else:
                    qw, qh = _wrap(base // H, base % H + d, H)
                return qh * W + qw, (qw >= 0) & (qw < W)
            q = base + d
            return (q % H) * W + q // H, (q >= 0) & (q < H * W)
        q = ((oh * OW + ow) * S * S if FILLS else oh * S * W + ow * S) + d
        return q, (q >= 0) & (q < H * W)

    @triton.jit
    def _static_tap(k: tl.constexpr, oh, ow, H, W, OH, OW, S: tl.constexpr, FILLS: tl.constexpr, MODE: tl.constexpr,
                    TRANSPOSED: tl.constexpr, WRAPS: tl.constexpr):
        """STS static tap ``k`` (weight column): 0-8 the width line, 9-17 the centre ``3x3``, 18-26 the height
        line; all in frame ``t``."""
        if k >= 9 and k < 18:
            return _plain_tap(oh, ow, H, W, OH, OW, S, (k - 9) // 3 - 1, (k - 9) % 3 - 1, TRANSPOSED)
        if MODE == 2:  # aligned: zero-padded 1x9 / 9x1 kernels at the strided positions
            if k < 9:
                return _plain_tap(oh, ow, H, W, OH, OW, S, 0, k - 4, TRANSPOSED)
            return _plain_tap(oh, ow, H, W, OH, OW, S, k - 22, 0, TRANSPOSED)
        if k < 9:
            return _line_tap(oh, ow, H, W, OH, OW, S, k - 4, FILLS, False, TRANSPOSED, WRAPS)
        return _line_tap(oh, ow, H, W, OH, OW, S, k - 22, FILLS, True, TRANSPOSED, WRAPS)

    @triton.jit
    def _static_sum(src, weights, oh, ow, inside, H, W, OH, OW, S: tl.constexpr, FILLS: tl.constexpr,
                    MODE: tl.constexpr, TRANSPOSED: tl.constexpr, WRAPS: tl.constexpr):
        """The STS static half's 27 taps (see :func:`_static_tap`) of one frame ``src``, summed at ``(oh, ow)``."""
        acc = tl.zeros(inside.shape, dtype=tl.float32)
        for k in tl.static_range(27):
            at, ok = _static_tap(k, oh, ow, H, W, OH, OW, S, FILLS, MODE, TRANSPOSED, WRAPS)
            v = tl.load(src + at, mask=inside & ok, other=0.0)
            acc += v.to(tl.float32) * tl.load(weights + k).to(tl.float32)
        return acc

    @triton.jit
    def _phase_tap(src, weight, u, v, A: tl.constexpr, B: tl.constexpr, DY: tl.constexpr, DX: tl.constexpr, OH, OW,
                   ok):
        """Tap ``(DY, DX)`` of a stride-2 conv, transposed, for inputs ``(2u + A, 2v + B)``, where ``A - DY`` and
        ``B - DX`` are even: the output gradient at ``(u + (A - DY) / 2, v + (B - DX) / 2)`` times the weight."""
        sh = u + (A - DY + 16) // 2 - 8  # exact: the offsets are even (the 16 keeps the division's operand >= 0)
        sw = v + (B - DX + 16) // 2 - 8
        ok = ok & (sh >= 0) & (sh < OH) & (sw >= 0) & (sw < OW)
        return tl.load(src + sh * OW + sw, mask=ok, other=0.0).to(tl.float32) * tl.load(weight).to(tl.float32)

    @triton.jit
    def _input_grad_s2(src, weights, out, t, T, H, W, OH, OW, STATIC: tl.constexpr, KT: tl.constexpr,
                       KH: tl.constexpr, KW: tl.constexpr, ONE_FRAME: tl.constexpr, BH: tl.constexpr,
                       BW: tl.constexpr):
        """The input gradient of a stride-2 conv on one frame's ``BH x BW`` tile (``out``: the frame's start), by
        its four phases: input ``(2u + a, 2v + b)`` receives a tap ``(dy, dx)`` only where ``a - dy`` and ``b - dx``
        are even, so each phase sums just those taps (a quarter of a 3x3 kernel's, on average) instead of masking
        the others. ``STATIC``: the aligned STS static half (a ``1x9`` line, the centre ``3x3``, a ``9x1`` line, all
        in frame ``t``); else the plain ``KT x KH x KW`` taps."""
        u = tl.program_id(1) * (BH // 2) + tl.arange(0, BH // 2)[:, None]
        v = tl.program_id(2) * (BW // 2) + tl.arange(0, BW // 2)[None, :]
        for a in tl.static_range(2):
            for b in tl.static_range(2):
                ih = 2 * u + a
                iw = 2 * v + b
                inside = (ih < H) & (iw < W)
                acc = tl.zeros([BH // 2, BW // 2], dtype=tl.float32)
                if STATIC:
                    frame = src + t * OH * OW
                    for j in tl.static_range(9):
                        if a == 0 and (b - (j - 4)) % 2 == 0:  # the width line (dy 0), weights 0-8
                            acc += _phase_tap(frame, weights + j, u, v, a, b, 0, j - 4, OH, OW, inside)
                        if (a - (j // 3 - 1)) % 2 == 0 and (b - (j % 3 - 1)) % 2 == 0:  # the centre, 9-17
                            acc += _phase_tap(frame, weights + 9 + j, u, v, a, b, j // 3 - 1, j % 3 - 1, OH, OW,
                                              inside)
                        if b == 0 and (a - (j - 4)) % 2 == 0:  # the height line (dx 0), 18-26
                            acc += _phase_tap(frame, weights + 18 + j, u, v, a, b, j - 4, 0, OH, OW, inside)
                else:
                    for i in tl.static_range(KT):
                        ts = t - (i - KT // 2)
                        if i == KT // 2 or not ONE_FRAME:
                            frame = src + ts * OH * OW
                            for y in tl.static_range(KH):
                                for x in tl.static_range(KW):
                                    if (a - (y - KH // 2)) % 2 == 0 and (b - (x - KW // 2)) % 2 == 0:
                                        acc += _phase_tap(frame, weights + (i * KH + y) * KW + x, u, v, a, b,
                                                          y - KH // 2, x - KW // 2, OH, OW,
                                                          inside & (ts >= 0) & (ts < T))
                tl.store(out + ih * W + iw, acc.to(out.dtype.element_ty), mask=inside)

    @triton.jit
    def _plain_sum(src, weights, t, T, oh, ow, inside, H, W, OH, OW, src_size, S: tl.constexpr, KT: tl.constexpr,
                   KH: tl.constexpr, KW: tl.constexpr, ONE_FRAME: tl.constexpr, TRANSPOSED: tl.constexpr,
                   CLIP_EDGE: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
        """The plain ``KT x KH x KW`` taps of frame ``t`` summed at ``(oh, ow)``. ``CLIP_EDGE``: some temporal taps
        may fall outside the clip, so each load is masked by its frame too; without it, the loads of the frames
        inside (compiled for sm_90: about 0.7x the instructions, the frame's test and-ed into every element's
        mask)."""
        acc = tl.zeros([BH, BW], dtype=tl.float32)
        for i in tl.static_range(KT):
            ts = t - (i - KT // 2) if TRANSPOSED else t + i - KT // 2
            if i == KT // 2 or not ONE_FRAME:
                for y in tl.static_range(KH):
                    for x in tl.static_range(KW):
                        at, ok = _plain_tap(oh, ow, H, W, OH, OW, S, y - KH // 2, x - KW // 2, TRANSPOSED)
                        mask = inside & ok & (ts >= 0) & (ts < T) if CLIP_EDGE else inside & ok
                        v = tl.load(src + ts * src_size + at, mask=mask, other=0.0)
                        acc += v.to(tl.float32) * tl.load(weights + (i * KH + y) * KW + x).to(tl.float32)
        return acc

    @triton.jit(do_not_specialize=_SIZES)
    def _conv_kernel(src_ptr, w_ptr, bias_ptr, out_ptr, C, SPLIT, T, H, W, OH, OW, FILLS: tl.constexpr,
                     KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, S: tl.constexpr, MODE: tl.constexpr,
                     ONE_FRAME: tl.constexpr, TRANSPOSED: tl.constexpr, HAS_BIAS: tl.constexpr, WRAPS: tl.constexpr,
                     PHASES: tl.constexpr, INTERIOR: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
        """One frame's ``BH x BW`` output tile. Forward: src ``(.., T, H, W)``, out ``(.., T, OH, OW)``; with
        ``TRANSPOSED`` the input gradient: src the output gradient, out the input's, the sizes as in the forward.
        Channels below ``SPLIT`` are STS's static half (``MODE`` 1 or 2), the others plain. ``ONE_FRAME``
        (``T == 1``, stage 1's images): only the centre temporal taps, the others read padding. ``PHASES`` (the
        input gradient at stride 2, tiles of at least 2 x 2): the plain taps and the aligned static half by phase
        (:func:`_input_grad_s2`). ``INTERIOR``: the plain taps of a frame whose temporal taps all fall inside the clip
        without masking each load by its frame (a branch per program)."""
        frame = tl.program_id(0)
        t = frame % T
        plane = frame // T
        c = plane % C
        if TRANSPOSED:
            rows, cols, src_size = H, W, OH * OW
        else:
            rows, cols, src_size = OH, OW, H * W
        oh = tl.program_id(1) * BH + tl.arange(0, BH)[:, None]
        ow = tl.program_id(2) * BW + tl.arange(0, BW)[None, :]
        inside = (oh < rows) & (ow < cols)
        src = src_ptr + plane.to(tl.int64) * T * src_size
        out = out_ptr + frame.to(tl.int64) * rows * cols
        weights = w_ptr + c * KT * KH * KW
        if PHASES:
            if c >= SPLIT:
                _input_grad_s2(src, weights, out, t, T, H, W, OH, OW, False, KT, KH, KW, ONE_FRAME, BH, BW)
            elif MODE == 2:
                _input_grad_s2(src, weights, out, t, T, H, W, OH, OW, True, KT, KH, KW, ONE_FRAME, BH, BW)
            elif MODE == 1:  # the faithful lines run along the flattened frame: no phase structure to use
                acc = _static_sum(src + t * src_size, weights, oh, ow, inside, H, W, OH, OW, S, FILLS, MODE,
                                  TRANSPOSED, WRAPS)
                tl.store(out + oh * cols + ow, acc.to(out_ptr.dtype.element_ty), mask=inside)
        else:
            acc = tl.zeros([BH, BW], dtype=tl.float32)
            if c >= SPLIT:
                # every temporal tap inside the clip (a one-frame clip reads only its own frame's taps)
                in_clip = (t >= KT // 2) & (t < T - KT // 2) if INTERIOR and not ONE_FRAME else ONE_FRAME
                if in_clip:
                    acc = _plain_sum(src, weights, t, T, oh, ow, inside, H, W, OH, OW, src_size, S, KT, KH, KW,
                                     ONE_FRAME, TRANSPOSED, False, BH, BW)
                else:
                    acc = _plain_sum(src, weights, t, T, oh, ow, inside, H, W, OH, OW, src_size, S, KT, KH, KW,
                                     ONE_FRAME, TRANSPOSED, True, BH, BW)
            elif MODE != 0:
                acc = _static_sum(src + t * src_size, weights, oh, ow, inside, H, W, OH, OW, S, FILLS, MODE,
                                  TRANSPOSED, WRAPS)
            if HAS_BIAS:
                acc += tl.load(bias_ptr + c).to(tl.float32)
            tl.store(out + oh * cols + ow, acc.to(out_ptr.dtype.element_ty), mask=inside)

    @triton.jit(do_not_specialize=_SIZES)
    def _stream_kernel(src_ptr, w_ptr, bias_ptr, out_ptr, C, SPLIT, T, H, W, OH, OW, FILLS: tl.constexpr,
                       S: tl.constexpr, MODE: tl.constexpr, ONE_FRAME: tl.constexpr, TRANSPOSED: tl.constexpr,
                       HAS_BIAS: tl.constexpr, WRAPS: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
        """``3x3x3`` kernels, as :func:`_conv_kernel`, with one program per plane and ``BH x BW`` tile that runs
        through the frames. Each source frame's 9 spatial taps are read once and feed the three output frames
        they reach, whose partial sums travel with the loop: a third of the loads of a program per frame. The STS
        static half (its taps all in frame ``t``) is summed frame by frame."""
        plane = tl.program_id(0)
        c = plane % C
        if TRANSPOSED:
            rows, cols, src_size = H, W, OH * OW
        else:
            rows, cols, src_size = OH, OW, H * W
        oh = (tl.program_id(1) * BH + tl.arange(0, BH))[None, :, None]
        ow = (tl.program_id(2) * BW + tl.arange(0, BW))[None, None, :]
        inside = (oh < rows) & (ow < cols)
        src = src_ptr + plane.to(tl.int64) * T * src_size
        out = out_ptr + plane.to(tl.int64) * T * rows * cols + oh * cols + ow
        weights = w_ptr + c * 27
        bias = tl.load(bias_ptr + c).to(tl.float32) if HAS_BIAS else 0.0
        if c >= SPLIT:
            tap = tl.arange(0, 16)[:, None, None]  # spatial tap (y, x) = (tap // 3, tap % 3), 9 of 16 rows
            at, ok = _plain_tap(oh, ow, H, W, OH, OW, S, tap // 3 - 1, tap % 3 - 1, TRANSPOSED)
            ok = ok & inside & (tap < 9)
            # Temporal tap i: output t reads source frame t + i - 1; transposed, t - i + 1. So source frame f feeds
            # output f + 1 through ``w_ahead``, f through ``w_here`` and f - 1 through ``w_behind``.
            w_first = tl.load(weights + tap, mask=tap < 9, other=0.0).to(tl.float32)
            w_here = tl.load(weights + 9 + tap, mask=tap < 9, other=0.0).to(tl.float32)
            w_last = tl.load(weights + 18 + tap, mask=tap < 9, other=0.0).to(tl.float32)
            w_ahead = w_last if TRANSPOSED else w_first
            w_behind = w_first if TRANSPOSED else w_last
            behind = tl.zeros([1, BH, BW], dtype=tl.float32)  # output f - 1, from the source frames before f
            here = tl.zeros([1, BH, BW], dtype=tl.float32)  # output f, likewise
            for f in range(T + 1):  # f == T reads padding and completes output T - 1
                v = tl.load(src + f * src_size + at, mask=ok & (f < T), other=0.0).to(tl.float32)
                if ONE_FRAME:
                    done = behind
                    behind = tl.sum(v * w_here, 0, keep_dims=True)
                else:
                    done = behind + tl.sum(v * w_behind, 0, keep_dims=True)
                    behind = here + tl.sum(v * w_here, 0, keep_dims=True)
                    here = tl.sum(v * w_ahead, 0, keep_dims=True)
                tl.store(out + (f - 1) * rows * cols, (done + bias).to(out_ptr.dtype.element_ty),
                         mask=inside & (f >= 1))
        elif MODE != 0:
            for t in range(T):
                acc = _static_sum(src + t * src_size, weights, oh, ow, inside, H, W, OH, OW, S, FILLS, MODE,
                                  TRANSPOSED, WRAPS)
                tl.store(out + t * rows * cols, (acc + bias).to(out_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def _wgrad_gather(x, grad, part, T, H, W, OH, OW, oh, ow, inside, KT: tl.constexpr, KH: tl.constexpr,
                      KW: tl.constexpr, S: tl.constexpr, TAPS: tl.constexpr, BLOCK: tl.constexpr):
        """Any kernel size: each frame gathers all the taps at once (rows of a ``TAPS x BLOCK`` block, ``TAPS`` the
        next power of two of the kernel size); the products add up elementwise over the frames and reduce once. (A
        reduction per frame and tap, 27 block-wide sums per frame tile, cost this pass 4x the forward.)"""
        # row: tap (i, y, x) = (tap // (KH KW), tap // KW % KH, tap % KW), in frame t + i - KT // 2
        tap = tl.arange(0, TAPS)[:, None]
        at, ok = _plain_tap(oh, ow, H, W, OH, OW, S, tap // KW % KH - KH // 2, tap % KW - KW // 2, False)
        dt = tap // (KH * KW) - KT // 2
        ok = ok & inside & (tap < KT * KH * KW)
        acc = tl.zeros([TAPS, BLOCK], dtype=tl.float32)
        for t in range(T):
            ts = t + dt
            g = tl.load(grad + t * OH * OW, mask=inside, other=0.0).to(tl.float32)
            v = tl.load(x + ts * H * W + at, mask=ok & (ts >= 0) & (ts < T), other=0.0)
            acc += v.to(tl.float32) * g
        tl.store(part + tl.arange(0, TAPS), tl.sum(acc, 1), mask=tl.arange(0, TAPS) < KT * KH * KW)

    @triton.jit
    def _static_group(group: tl.constexpr, oh, ow, H, W, OH, OW, S: tl.constexpr, FILLS: tl.constexpr,
                      MODE: tl.constexpr, WRAPS: tl.constexpr):
        """Offsets and masks (forward direction) of the STS static taps ``9 group`` to ``9 group + 8`` as the rows
        of a 16-row block: group 0 the width line, 1 the centre ``3x3``, 2 the height line (:func:`_static_tap`'s
        order), computed for all nine at once."""
        r = tl.arange(0, 16)[:, None]
        if group == 1:
            at, ok = _plain_tap(oh, ow, H, W, OH, OW, S, r // 3 - 1, r % 3 - 1, False)
        elif MODE == 2:
            if group == 0:
                at, ok = _plain_tap(oh, ow, H, W, OH, OW, S, r * 0, r - 4, False)
            else:
                at, ok = _plain_tap(oh, ow, H, W, OH, OW, S, r - 4, r * 0, False)
        else:
            at, ok = _line_tap(oh, ow, H, W, OH, OW, S, r - 4, FILLS, group == 2, False, WRAPS)
        return at, ok & (r < 9)

    @triton.jit
    def _wgrad_static(x, grad, part, T, H, W, OH, OW, FILLS: tl.constexpr, oh, ow, inside, S: tl.constexpr,
                      MODE: tl.constexpr, WRAPS: tl.constexpr, BLOCK: tl.constexpr):
        """The STS static half, whose 27 taps all read frame ``t``: three blocks of 9 taps (16 rows each), their
        offsets computed once per program. (Selecting each of 27 taps into one 32-row block cost this pass 3-4x
        the plain kernel's.)"""
        at_w, ok_w = _static_group(0, oh, ow, H, W, OH, OW, S, FILLS, MODE, WRAPS)
        at_c, ok_c = _static_group(1, oh, ow, H, W, OH, OW, S, FILLS, MODE, WRAPS)
        at_h, ok_h = _static_group(2, oh, ow, H, W, OH, OW, S, FILLS, MODE, WRAPS)
        ok_w = ok_w & inside
        ok_c = ok_c & inside
        ok_h = ok_h & inside
        width = tl.zeros([16, BLOCK], dtype=tl.float32)
        centre = tl.zeros([16, BLOCK], dtype=tl.float32)
        height = tl.zeros([16, BLOCK], dtype=tl.float32)
        for t in range(T):
            g = tl.load(grad + t * OH * OW, mask=inside, other=0.0).to(tl.float32)
            frame = x + t * H * W
            width += tl.load(frame + at_w, mask=ok_w, other=0.0).to(tl.float32) * g
            centre += tl.load(frame + at_c, mask=ok_c, other=0.0).to(tl.float32) * g
            height += tl.load(frame + at_h, mask=ok_h, other=0.0).to(tl.float32) * g
        rows = tl.arange(0, 16)
        tl.store(part + rows, tl.sum(width, 1), mask=rows < 9)
        tl.store(part + 9 + rows, tl.sum(centre, 1), mask=rows < 9)
        tl.store(part + 18 + rows, tl.sum(height, 1), mask=rows < 9)

    @triton.jit
    def _wgrad_stream(x, grad, part, T, H, W, OH, OW, oh, ow, inside, KH: tl.constexpr, KW: tl.constexpr,
                      S: tl.constexpr, BLOCK: tl.constexpr):
        """Three temporal taps (``KH KW <= 16``): each source frame's spatial taps are read once and multiply the
        output gradients of the three frames they reach, which travel with the loop: a third of the gathers of
        :func:`_wgrad_gather`."""
        tap = tl.arange(0, 16)[:, None]  # spatial tap (y, x) = (tap // KW, tap % KW), KH KW of 16 rows
        at, ok = _plain_tap(oh, ow, H, W, OH, OW, S, tap // KW - KH // 2, tap % KW - KW // 2, False)
        ok = ok & inside & (tap < KH * KW)
        # temporal tap i: output t reads frame t + i - 1, so source frame f feeds output f + 1 through tap 0, f
        # through tap 1 and f - 1 through tap 2
        first = tl.zeros([16, BLOCK], dtype=tl.float32)
        middle = tl.zeros([16, BLOCK], dtype=tl.float32)
        last = tl.zeros([16, BLOCK], dtype=tl.float32)
        g_behind = tl.zeros([1, BLOCK], dtype=tl.float32)
        g_here = tl.load(grad, mask=inside, other=0.0).to(tl.float32)
        for f in range(T):
            g_ahead = tl.load(grad + (f + 1) * OH * OW, mask=inside & (f + 1 < T), other=0.0).to(tl.float32)
            v = tl.load(x + f * H * W + at, mask=ok, other=0.0).to(tl.float32)
            first += v * g_ahead
            middle += v * g_here
            last += v * g_behind
            g_behind = g_here
            g_here = g_ahead
        rows = tl.arange(0, 16)
        tl.store(part + rows, tl.sum(first, 1), mask=rows < KH * KW)
        tl.store(part + KH * KW + rows, tl.sum(middle, 1), mask=rows < KH * KW)
        tl.store(part + 2 * KH * KW + rows, tl.sum(last, 1), mask=rows < KH * KW)

    @triton.jit(do_not_specialize=_SIZES)
    def _weight_grad_kernel(x_ptr, grad_ptr, part_ptr, C, SPLIT, T, H, W, OH, OW, FILLS: tl.constexpr, KT: tl.constexpr,
                            KH: tl.constexpr, KW: tl.constexpr, S: tl.constexpr, MODE: tl.constexpr,
                            WRAPS: tl.constexpr, TAPS: tl.constexpr, BLOCK: tl.constexpr, STREAM: tl.constexpr):
        """Per program (plane, ``BLOCK`` outputs of a frame) over all the plane's frames: ``part[.., k] = sum of
        grad * what tap k reads``. The STS static half by :func:`_wgrad_static`; the plain channels by
        :func:`_wgrad_stream` with ``STREAM`` (three temporal taps), else by :func:`_wgrad_gather`."""
        plane = tl.program_id(0)
        c = plane % C
        p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)[None, :]
        inside = p < OH * OW
        oh = p // OW
        ow = p % OW
        x = x_ptr + plane.to(tl.int64) * T * H * W
        grad = grad_ptr + plane.to(tl.int64) * T * OH * OW + p
        part = part_ptr + (plane.to(tl.int64) * tl.num_programs(1) + tl.program_id(1)) * KT * KH * KW
        static = False
        if MODE != 0:
            static = c < SPLIT
        if static:
            _wgrad_static(x, grad, part, T, H, W, OH, OW, FILLS, oh, ow, inside, S, MODE, WRAPS, BLOCK)
        elif STREAM:
            _wgrad_stream(x, grad, part, T, H, W, OH, OW, oh, ow, inside, KH, KW, S, BLOCK)
        else:
            _wgrad_gather(x, grad, part, T, H, W, OH, OW, oh, ow, inside, KT, KH, KW, S, TAPS, BLOCK)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _pow2(n: int) -> int:
    """The smallest power of two >= ``n`` (host-side: ``triton.next_power_of_2`` costs a JIT-function call)."""
    return 1 << max(n - 1, 0).bit_length()


def _tiling(frames: int, rows: int, cols: int, tile: int) -> tuple[tuple[int, int, int], int, int]:
    """The launch grid (a program per frame, or plane, and ``BH x BW`` tile of ``tile`` outputs of a ``rows x
    cols`` frame) and ``BH``, ``BW``."""
    bw = min(64, _pow2(cols))
    bh = max(1, min(_pow2(rows), tile // bw))
    return (frames, _cdiv(rows, bh), _cdiv(cols, bw)), bh, bw


class _Plan(NamedTuple):
    """A conv's three passes and the sizes they need."""
    out_hw: tuple[int, int]
    forward: Launch
    input_grad: Launch
    weight_grad: Launch
    tiles: int  # the weight gradient's partial sums per plane


def _settings() -> tuple:
    """The tunables above, read per call (benchmarks and tests change them)."""
    return (_TILE, _WARPS, _WGRAD_BLOCK, _WGRAD_WARPS, _WGRAD_STREAM, _STREAM_TILE, _STREAM_WARPS, _STREAM_STRIDES,
            _STREAM_MIN_FRAME, _S2_PHASES, _INTERIOR_PASSES)


@functools.lru_cache(maxsize=1024)
def _plan(shape: tuple[int, ...], kernel: tuple[int, int, int], stride: int, mode: int, has_bias: bool,
          settings: tuple) -> _Plan:
    """The launches of a conv of ``kernel`` ``(kt, kh, kw)`` on an input of ``shape`` ``(N, C, T, H, W)``, worked
    out once per layer rather than on every forward and backward (that halved this module's own Python per call,
    measured on the CPU with the launches left out; on an H200 host the launches themselves dominate). Forward and
    input gradient: ``3x3x3`` kernels stream through the frames where that was faster (the ``_STREAM_*`` settings),
    the others take a program per frame."""
    tile, warps, w_block, w_warps, w_stream, s_tile, s_warps, s_strides, s_min_frame, s2_phases, interior = settings
    n, c, t, h, w = shape
    oh, ow = out_size(h, stride), out_size(w, stride)
    kt, kh, kw = kernel
    sizes = (c, 0 if mode == PLAIN else c // 2, t, h, w, oh, ow)
    streams = stride in s_strides and oh * ow >= s_min_frame and kernel == (3, 3, 3)
    # the faithful lines' forms (see _line_tap), compile-time: a variant for each; the other modes do not read them
    fills, wraps = (line_fills_map(h, w, stride), min(h, w) >= 4) if mode == FAITHFUL else (True, False)

    def conv_pass(transposed: bool) -> Launch:
        rows, cols = (h, w) if transposed else (oh, ow)
        flags = dict(FILLS=fills, S=stride, MODE=mode, ONE_FRAME=t == 1, TRANSPOSED=transposed,
                     HAS_BIAS=has_bias and not transposed, WRAPS=wraps)
        if streams:
            grid, bh, bw = _tiling(n * c, rows, cols, s_tile)
            return Launch(_stream_kernel, grid, sizes, dict(**flags, BH=bh, BW=bw), s_warps)
        grid, bh, bw = _tiling(n * c * t, rows, cols, tile)
        phases = s2_phases and transposed and stride == 2 and bh > 1 and bw > 1
        consts = dict(KT=kt, KH=kh, KW=kw, **flags, PHASES=phases,
                      INTERIOR=("input_grad" if transposed else "forward") in interior, BH=bh, BW=bw)
        return Launch(_conv_kernel, grid, sizes, consts, warps)

    block = min(w_block, _pow2(oh * ow))
    tiles = _cdiv(oh * ow, block)
    weight_grad = Launch(_weight_grad_kernel, (n * c, tiles), sizes,
                         dict(FILLS=fills, KT=kt, KH=kh, KW=kw, S=stride, MODE=mode, WRAPS=wraps,
                              TAPS=_pow2(kt * kh * kw), BLOCK=block, STREAM=w_stream and kt == 3 and kh * kw <= 16),
                         w_warps)
    return _Plan((oh, ow), conv_pass(False), conv_pass(True), weight_grad, tiles)


def _plan_of(x: torch.Tensor, weight: torch.Tensor, stride: int, mode: int, has_bias: bool = False) -> _Plan:
    return _plan(tuple(x.shape), tuple(weight.shape[2:]), stride, mode, has_bias, _settings())


def _run_forward(plan: _Plan, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    out = x.new_empty(*x.shape[:3], *plan.out_hw)
    weight = weight.contiguous()
    plan.forward(x, weight, bias if bias is not None else weight, out)
    return out


def _run_backward(plan: _Plan, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool,
                  need_w: bool) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Input and weight gradients (``None`` where not needed)."""
    weight = weight.contiguous()
    grad_x = grad_w = None
    if need_x:
        grad_x = torch.empty_like(x)
        plan.input_grad(grad, weight, weight, grad_x)
    if need_w:
        part = torch.empty(*x.shape[:2], plan.tiles, math.prod(weight.shape[1:]), dtype=torch.float32, device=x.device)
        plan.weight_grad(x, grad, part)
        grad_w = part.sum((0, 2)).view_as(weight)
        if grad_w.dtype != weight.dtype:
            grad_w = grad_w.to(weight.dtype)
    return grad_x, grad_w


def _forward_impl(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int,
                  mode: int) -> torch.Tensor:
    """x ``(N, C, T, H, W)`` contiguous; weight ``(C, 1, kt, kh, kw)``; ``mode``: PLAIN, FAITHFUL or ALIGNED."""
    return _run_forward(_plan_of(x, weight, stride, mode, bias is not None), x, weight, bias)


def _backward_impl(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int, mode: int, need_x: bool,
                   need_w: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and weight gradients (empty where not needed: an operator returns tensors)."""
    grad_x, grad_w = _run_backward(_plan_of(x, weight, stride, mode), grad, x, weight, need_x, need_w)
    return (x.new_empty(0) if grad_x is None else grad_x), (weight.new_empty(0) if grad_w is None else grad_w)


# Registered operators, so FlopCounterMode and torch.compile see the kernels (as for the CPU stencil).
_forward = torch.library.custom_op("sts3d::cuda_stencil", _forward_impl, mutates_args=())
_backward = torch.library.custom_op("sts3d::cuda_stencil_backward", _backward_impl, mutates_args=())


@_forward.register_fake
def _(x, weight, bias, stride, mode):
    return x.new_empty(*x.shape[:3], out_size(x.shape[3], stride), out_size(x.shape[4], stride))


@_backward.register_fake
def _(grad, x, weight, stride, mode, need_x, need_w):
    return (torch.empty_like(x) if need_x else x.new_empty(0)), (torch.empty_like(weight) if need_w
                                                                 else weight.new_empty(0))


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, stride, mode = inputs
    ctx.save_for_backward(x, weight)
    ctx.layer = stride, mode
    ctx.has_bias = bias is not None


def _gradients(ctx, grad: torch.Tensor, eager: bool = False):
    """The registered operator's backward, or with ``eager`` (:class:`_Eager`) the kernels of the forward's plan
    without the dispatcher, whose gradients need no placeholders."""
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    grad = grad.contiguous()
    if eager:
        grad_x, grad_w = _run_backward(ctx.plan, grad, x, weight, need_x, need_w)
    else:
        grad_x, grad_w = _backward(grad, x, weight, *ctx.layer, need_x, need_w)
    grad_b = grad.sum((0, 2, 3, 4)).to(weight.dtype) if ctx.has_bias and need_b else None
    return (grad_x if need_x else None), (grad_w if need_w else None), grad_b, None, None


_forward.register_autograd(_gradients, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The operators' kernels without the dispatcher, for eager runs: dispatching a registered operator costs about
    60 us per forward + backward (measured), as much as a small layer's kernels take on an H100. The forward's plan
    serves the backward, whose gradients need no placeholders: every operation less counts where the GPU waits for
    the host (one small operation cost 12 us on an H200's host)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, mode):
        _setup_context(ctx, (x, weight, bias, stride, mode), None)
        ctx.plan = _plan_of(x, weight, stride, mode, bias is not None)  # the backward's launches do not use the bias
        return _run_forward(ctx.plan, x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        return _gradients(ctx, grad, eager=True)


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int, mode: int) -> torch.Tensor:
    """The registered operator where something traces or counts (torch.compile, FlopCounterMode and other
    dispatch modes), else the same kernels directly, through an autograd function only where a gradient is
    recorded: testing and inference skip its cost to the host (about 3 of a tiny layer's 8 us of forward, measured
    on the CPU with the launch left out)."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        return _forward(x, weight, bias, stride, mode)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _Eager.apply(x, weight, bias, stride, mode)
    return _forward_impl(x, weight, bias, stride, mode)


@register_flop_formula(torch.ops.sts3d.cuda_stencil)
def _forward_flops(x_shape, weight_shape, *args, out_shape, **kwargs) -> int:
    """As a conv's: one multiply-add per output element and kernel element."""
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


@register_flop_formula(torch.ops.sts3d.cuda_stencil_backward)
def _backward_flops(grad_shape, x_shape, weight_shape, stride, mode, need_x, need_w, *args, **kwargs) -> int:
    return (int(need_x) + int(need_w)) * 2 * math.prod(grad_shape) * math.prod(weight_shape[1:])


def _in_layout_of(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The kernels work on NCDHW; a channels-last clip (the ``channels_last`` switch) gets its output back
    channels-last, so the layers after keep their layout. Two copies cost far less than cuDNN's channels-last
    depthwise conv (0.2-0.7x the stock contiguous conv on an H100, ``docs/benchmarks.md``)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return out.contiguous(memory_format=torch.channels_last_3d)
    return out


def depthwise_cuda(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, stride=(1, stride, stride), padding=k // 2, groups=C)`` for an odd kernel.
    x ``(N, C, T, H, W)``; weight ``(C, 1, kt, kh, kw)``."""
    return _in_layout_of(_conv(x.contiguous(), weight, bias, stride, PLAIN), x)


def sts_depthwise_cuda(x: torch.Tensor, weight: torch.Tensor, stride: int, faithful: bool) -> torch.Tensor:
    """The depthwise ``3x3x3`` STS conv (no bias), both halves in one launch. x ``(N, C, T, H, W)``; weight
    ``(C, 1, 3, 3, 3)``."""
    return _in_layout_of(_conv(x.contiguous(), weight, None, stride, FAITHFUL if faithful else ALIGNED), x)
