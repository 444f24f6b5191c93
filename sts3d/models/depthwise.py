"""Depthwise 3D convolution, fast forms (the ``3x3x3`` conv of ir-CSN and X3D).

PyTorch's CPU ``conv3d`` runs a depthwise forward at a reasonable speed, but its backward (input and weight
gradients) is 10-30 times slower than the forward. :func:`depthwise_conv3d` keeps the stock forward, so outputs are
bit-identical to ``nn.Conv3d(groups=C)``, and computes the gradients with the kernels CPUs run fast:

* input gradient, spatial stride 1: the stock *forward* conv of the output gradient with the flipped kernel;
* input gradient with a spatial stride, and weight gradient: 2D depthwise convs, one per temporal tap, over all
  frames at once in the channels-last frame layout ``(N * T, C, H, W)`` (memory ``(N, T, H, W, C)``). A temporal
  tap ``k`` pairs output frame ``t`` with input frame ``t + k - k_t // 2``, so the taps' results are added with a
  time shift.

``impl`` (``create_backbone(..., depthwise_impl=)``) picks the form:

* ``'conv3d'``: the stock ``nn.Conv3d`` forward and backward;
* ``'frames'``: the stock forward and the backward above, wherever the conv is supported (temporal stride 1,
  temporal padding ``k_t // 2``, odd ``k_t``, no dilation, zero padding) and on any device;
* ``'stencil'``: our own kernels for forward and backward (odd kernels with padding ``k // 2``, temporal stride 1,
  equal spatial strides; NCDHW): on the CPU the compiled kernels of :mod:`sts3d.models.stencil` (float32), on CUDA
  the Triton kernels of :mod:`sts3d.models.cuda_stencil` (float32, bfloat16, float16); faster still, same results
  to float rounding;
* ``'auto'`` (default): ``'stencil'`` where those kernels run (on the CPU for contiguous inputs outside autocast,
  except one-frame inputs smaller than 8x8; on CUDA channels-last clips too, computed in NCDHW and handed back
  channels-last), else on the CPU ``'frames'`` for float32 / float64, elsewhere ``'conv3d'``. Measured on a 2-core
  CPU and an H100 (``docs/benchmarks.md``).
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import cuda_stencil, native, stencil

DepthwiseImpl = Literal["auto", "conv3d", "frames", "stencil"]
DEPTHWISE_IMPLS: tuple[str, ...] = ("auto", "conv3d", "frames", "stencil")
Form = Literal["conv3d", "frames", "stencil"]


def check_depthwise_impl(impl: str) -> None:
    if impl not in DEPTHWISE_IMPLS:
        raise ValueError(f"depthwise_impl must be one of {DEPTHWISE_IMPLS}, got {impl!r}")


def is_depthwise(in_channels: int, out_channels: int, groups: int) -> bool:
    """Whether a conv with these channels and groups is channel-wise (one filter per channel, no mixing)."""
    return groups == in_channels == out_channels


def _transposed(x: torch.Tensor) -> torch.Tensor:
    """An ``(N, A, B)`` whose samples ``x[i]`` are contiguous -> a contiguous ``(N, B, A)``.

    One 2D transpose per sample: PyTorch copies a plain 2D transpose with a cache-blocked kernel, several times
    faster than its generic copy of the same permutation as a 3D (or 5D) tensor.
    """
    out = x.new_empty(x.shape[0], x.shape[2], x.shape[1])
    for i in range(x.shape[0]):
        out[i].copy_(x[i].t())
    return out


def _frames(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, T, H, W)`` -> ``(N * T, C, H, W)`` in channels-last memory ``(N, T, H, W, C)``.

    The layout in which oneDNN's 2D depthwise kernels are fastest, and in which a time shift is a shift by whole
    frames. One copy, none when ``x`` is already channels-last 3D.
    """
    n, c, t, h, w = x.shape
    if x.stride()[1:] == (t * h * w, h * w, w, 1):  # every sample contiguous (a channel slice of a contiguous clip)
        return _transposed(x.flatten(2)).view(n * t, h, w, c).permute(0, 3, 1, 2)
    return x.permute(0, 2, 3, 4, 1).contiguous().view(n * t, h, w, c).permute(0, 3, 1, 2)


def _clip(frames: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_frames`: ``(N * T, C, H, W)`` -> ``(N, C, T, H, W)`` in the memory format of ``like``."""
    nt, c, h, w = frames.shape
    in_memory_order = frames.permute(0, 2, 3, 1).reshape(n, -1, c)  # a view: (N, T*H*W, C)
    if like.is_contiguous(memory_format=torch.channels_last_3d) and not like.is_contiguous():
        return in_memory_order.view(n, nt // n, h, w, c).permute(0, 4, 1, 2, 3)
    return _transposed(in_memory_order).view(n, c, nt // n, h, w)


def _in_time(frames: torch.Tensor, n: int) -> torch.Tensor:
    """A channels-last ``(N * T, C, H, W)`` frame stack viewed as ``(N, T, H, W, C)``, so time can be sliced."""
    nt, c, h, w = frames.shape
    return frames.permute(0, 2, 3, 1).view(n, nt // n, h, w, c)


def _tap_range(offset: int, frames: int) -> tuple[int, int]:
    """Output frames ``[lo, hi)`` whose input frame ``t + offset`` exists (the others read temporal zero padding)."""
    return max(0, -offset), min(frames, frames - offset)


def _taps(kt: int) -> list[tuple[int, int]]:
    """``(tap, time offset)`` of a ``k_t``-tap kernel, centre tap first (offset 0: every frame pairs with itself)."""
    centre = kt // 2
    return [(tap, tap - centre) for tap in sorted(range(kt), key=lambda k: k != centre)]


def _conv2d_backward(grad_frames: torch.Tensor, x_frames: torch.Tensor, weight2d: torch.Tensor,
                     stride: tuple[int, int], padding: tuple[int, int], want_input: bool) -> torch.Tensor:
    """Input (``want_input``) or weight gradient of the 2D depthwise conv of a ``(B, C, H, W)`` frame stack."""
    grads = torch.ops.aten.convolution_backward(grad_frames, x_frames, weight2d, None, stride, padding, (1, 1), False,
                                                (0, 0), weight2d.shape[0], (want_input, not want_input, False))
    return grads[0] if want_input else grads[1]


def _input_grad(grad: torch.Tensor, grad_frames: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """``d loss / d x`` ``(N, C, T, H, W)`` from ``grad`` ``(N, C, T, H', W')`` (``grad_frames``: its frame stack).

    Stride 1: the stock forward conv of ``grad`` with the flipped kernel, one fast call that needs no layout change.
    Otherwise (a transposed strided conv, which the stock kernels run slowly): per tap the input gradient of the 2D
    conv of all frames, added with the tap's time shift.
    """
    kt, kh, kw = weight.shape[2:]
    if stride == (1, 1) and padding[0] < kh and padding[1] < kw:
        return F.conv3d(grad, weight.flip((2, 3, 4)), padding=(kt // 2, kh - 1 - padding[0], kw - 1 - padding[1]),
                        groups=weight.shape[0])
    n, c, t, h, w = x.shape
    # The gradient's shape and layout: an input of the 2D conv whose values are never read.
    x_frames = torch.empty(n * t, c, h, w, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    grad_input = time_view = None
    for tap, offset in _taps(kt):
        lo, hi = _tap_range(offset, t)
        if lo >= hi:  # a clip shorter than the kernel: this tap only ever reads padding
            continue
        tap_grad = _conv2d_backward(grad_frames, x_frames, weight[:, :, tap], stride, padding, want_input=True)
        if grad_input is None:
            grad_input, time_view = tap_grad, _in_time(tap_grad, n)
        else:  # input frame t + offset received output frame t's gradient through this tap
            time_view[:, lo + offset:hi + offset] += _in_time(tap_grad, n)[:, lo:hi]
            del tap_grad  # free before the next tap's buffer is allocated, so that one can reuse the memory
    return _clip(grad_input, n, x)


def _weight_grad(grad_frames: torch.Tensor, x_frames: torch.Tensor, weight: torch.Tensor, n: int,
                 stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """``d loss / d weight`` ``(C, 1, k_t, k_h, k_w)``: per tap, the 2D conv's weight gradient over the frame pairs
    (output ``t``, input ``t + offset``). Frame stacks ``(N * T, C, H, W)``, channels-last."""
    t = x_frames.shape[0] // n
    x_samples, grad_samples = x_frames.unflatten(0, (n, t)), grad_frames.unflatten(0, (n, t))
    grad_weight = torch.zeros_like(weight)
    for tap, offset in _taps(weight.shape[2]):
        lo, hi = _tap_range(offset, t)
        if offset == 0:
            grad_weight[:, :, tap] = _conv2d_backward(grad_frames, x_frames, weight[:, :, tap], stride, padding, False)
            continue
        # Shifted pairs would cross sample boundaries in the (N * T) stack, so each sample is one call.
        for i in range(n if lo < hi else 0):
            grad_weight[:, :, tap] += _conv2d_backward(grad_samples[i, lo:hi], x_samples[i, lo + offset:hi + offset],
                                                       weight[:, :, tap], stride, padding, False)
    return grad_weight


class _DepthwiseConv3dFunction(torch.autograd.Function):
    """The stock depthwise ``conv3d`` forward (bit-identical outputs) with the fast gradients of
    :func:`_input_grad` and :func:`_weight_grad`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: tuple[int, int],
                padding: tuple[int, int]) -> torch.Tensor:
        c, kt = weight.shape[0], weight.shape[2]
        ctx.save_for_backward(x, weight)
        ctx.conv2d = (stride, padding)
        return F.conv3d(x, weight, bias, stride=(1, *stride), padding=(kt // 2, *padding), groups=c)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.conv2d
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_frames = _frames(grad) if need_weight or stride != (1, 1) else None
        grad_input = _input_grad(grad, grad_frames, x, weight, stride, padding) if need_input else None
        grad_weight = None
        if need_weight:
            grad_weight = _weight_grad(grad_frames, _frames(x), weight, x.shape[0], stride, padding)
        grad_bias = grad.sum((0, 2, 3, 4)) if need_bias else None
        return grad_input, grad_weight, grad_bias, None, None


def depthwise_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """The depthwise conv ``F.conv3d(x, weight, bias, stride=(1, *stride), padding=(k_t // 2, *padding), groups=C)``
    with the fast backward of this module.

    x: ``(N, C, T, H, W)``; weight: ``(C, 1, k_t, k_h, k_w)`` with odd ``k_t``; bias: ``(C,)`` or ``None``;
    ``stride`` and ``padding`` are the spatial ones. Returns ``(N, C, T, H', W')``, the stock conv's output exactly.
    """
    return _DepthwiseConv3dFunction.apply(x, weight, bias, tuple(stride), tuple(padding))


def frames_form_applies(conv: nn.Conv3d) -> bool:
    """Whether ``conv`` is a depthwise conv that :func:`depthwise_conv3d` computes (temporal stride 1, temporal
    padding ``k_t // 2`` with odd ``k_t``, no dilation, zero padding)."""
    kt = conv.kernel_size[0]
    return (is_depthwise(conv.in_channels, conv.out_channels, conv.groups) and kt % 2 == 1
            and conv.stride[0] == 1 and isinstance(conv.padding, tuple) and conv.padding[0] == kt // 2
            and conv.dilation == (1, 1, 1) and conv.padding_mode == "zeros")


def stencil_form_applies(conv: nn.Conv3d) -> bool:
    """Whether the stencil kernels compute ``conv``: the frames form's convs with odd spatial kernels, padding
    ``k // 2`` and equal spatial strides."""
    return (frames_form_applies(conv) and all(k % 2 == 1 and p == k // 2 for k, p in zip(conv.kernel_size,
                                                                                          conv.padding))
            and conv.stride[1] == conv.stride[2])


def depthwise_form(impl: DepthwiseImpl, x: torch.Tensor) -> Form:
    """The form that computes a depthwise conv of ``x`` under ``impl`` (see the module docstring), for a conv that
    every form supports. An explicit ``'stencil'`` that cannot run raises (``RuntimeError``)."""
    if impl in ("conv3d", "frames"):
        return impl
    cpu = x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
    cpu_ready = cpu and x.dtype == torch.float32 and native.available()
    cuda_ready = x.device.type == "cuda" and cuda_stencil.takes(x.dtype)
    if impl == "stencil":
        if not (cpu_ready or cuda_ready):
            raise RuntimeError("depthwise_impl='stencil' needs float32 CPU tensors outside autocast and the built "
                               "extension (sts3d.models.native.available()), or CUDA tensors and triton "
                               "(sts3d.models.cuda_stencil.available())")
        return "stencil"
    # One-frame clips (stage 1's images) on maps under 8x8 are many tiny planes, where the stencil's per-plane work
    # costs more than the frames form's batched 2D convs (measured: 1.7-2.3x at 3x3 and 2x2, a tie at 6x6)
    tiny = x.dim() == 5 and x.shape[2] == 1 and x.shape[3] * x.shape[4] < 64
    if cpu_ready and x.is_contiguous() and not tiny:
        return "stencil"
    if cuda_ready:  # channels-last clips too: cuDNN's channels-last depthwise conv is the slowest form there
        return "stencil"
    return "frames" if cpu and x.dtype in (torch.float32, torch.float64) else "conv3d"


class DepthwiseConv3d(nn.Conv3d):
    """An ``nn.Conv3d`` (same ``weight`` and ``bias``, same ``state_dict``) whose depthwise conv runs in the form
    :func:`depthwise_form` picks for ``impl``; a conv that form does not support falls back to ``'frames'``, and a
    conv that one does not support either (or ``impl='conv3d'``) runs as the stock conv.

    Built with the ``nn.Conv3d`` signature plus ``impl``. Input ``(N, C, T, H, W)``, output ``(N, C, T', H', W')``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None,
                 impl: DepthwiseImpl = "auto") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        check_depthwise_impl(impl)
        if not is_depthwise(in_channels, out_channels, groups):
            raise ValueError(f"DepthwiseConv3d needs groups == in_channels == out_channels, got "
                             f"({in_channels}, {out_channels}, groups={groups})")
        self.impl = impl
        self.forms = {"conv3d", *(["frames"] if frames_form_applies(self) else []),
                      *(["stencil"] if stencil_form_applies(self) else [])}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, impl={self.impl}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        form = depthwise_form(self.impl, x)
        if form not in self.forms:  # an explicit 'stencil' falls back like 'frames' does, to the nearest form
            form = "frames" if "frames" in self.forms and form == "stencil" else "conv3d"
        if form == "stencil":
            return stencil.depthwise_stencil(x, self.weight, self.bias, self.stride[1])
        if form == "frames":
            return depthwise_conv3d(x, self.weight, self.bias, self.stride[1:], self.padding[1:])
        return super().forward(x)

