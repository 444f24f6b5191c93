"""A Triton kernel launch worked out once and repeated, for kernels that run once per layer per pass."""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable

import torch

# Launch through the compiled kernel's own launcher after the first call (see Launch). Off unless
# STS3D_DIRECT_LAUNCH=1 until it is checked on a GPU: nothing here can run it (the tests run the kernels in Triton's
# interpreter, which compiles nothing). `bench/cuda_kernels.py --variants direct` checks its results against the
# stock conv and times it; `STS3D_DIRECT_LAUNCH=1 python bench/cuda_check.py` runs every check with it.
DIRECT = os.environ.get("STS3D_DIRECT_LAUNCH", "") not in ("", "0")  # as STS3D_NO_EXTENSION


class Launch:
    """``kernel[grid](*tensors, *sizes, **consts, num_warps=num_warps)``, repeated on new tensors (the kernel's
    pointer arguments, which come first in its signature). A layer's grid, sizes and compile-time arguments are
    computed once (see ``sts3d.models.cuda_stencil._plan``), not on every forward and backward.

    With ``DIRECT``, a launch after the first goes straight to the kernel Triton compiled for tensors like these
    (same device, dtypes and 16-byte alignment: what Triton specialises a pointer argument on; the sizes and
    compile-time arguments are fixed per launch), through that kernel's own launcher. Triton's dispatch binds every
    argument, builds a cache key and looks it up on every call, which costs more than the launch itself on kernels
    of about 20 arguments (tritonbench's launch-latency study: about 12.5 us against 3.4 us for 19 arguments).
    Under Triton's interpreter nothing is compiled, and every launch takes the dispatch.
    """

    def __init__(self, kernel: Any, grid: tuple[int, ...], sizes: tuple[int, ...], consts: dict, num_warps: int):
        self.kernel, self.grid, self.sizes, self.consts, self.num_warps = kernel, grid, sizes, consts, num_warps
        self._launchers: dict[tuple, Callable[..., None]] = {}  # specialisation -> the compiled kernel's launcher
        self._tail: tuple = ()  # the arguments after the tensors, in the kernel's order (constants included)

    def __call__(self, *tensors: torch.Tensor) -> None:
        if DIRECT and self._launchers:
            launcher = self._launchers.get(self._specialisation(tensors))
            if launcher is not None:
                launcher(*tensors, *self._tail)
                return
        compiled = self.kernel[self.grid](*tensors, *self.sizes, **self.consts, num_warps=self.num_warps)
        if DIRECT and hasattr(compiled, "packed_metadata"):  # a CompiledKernel (the interpreter returns None)
            self._tail = self.arguments(len(tensors))[len(tensors):]
            self._launchers[self._specialisation(tensors)] = compiled[(*self.grid, 1, 1)[:3]]

    @staticmethod
    def _specialisation(tensors: tuple[torch.Tensor, ...]) -> tuple:
        # Triton compiles for the current device, and specialises each pointer on its dtype and 16-byte alignment
        return torch.cuda.current_device(), *[(t.dtype, t.data_ptr() % 16 == 0) for t in tensors]

    def arguments(self, tensors: int) -> tuple:
        """Every argument of the kernel in its signature's order, as Triton's dispatch binds them (defaults filled
        in), with the first ``tensors`` left as placeholders (their positions)."""
        bound = inspect.signature(self.kernel.fn).bind(*range(tensors), *self.sizes, **self.consts)
        bound.apply_defaults()
        return tuple(bound.arguments.values())
