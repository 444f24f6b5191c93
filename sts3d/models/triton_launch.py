"""Repeated Triton launches with little host work, for kernels that run once per layer per pass.

Calling a ``@triton.jit`` function binds every argument, specialises it (dtype, 16-byte alignment of each pointer)
and looks the compiled kernel up by a string key, on every launch. A network's depthwise and STS convs launch the
same few kernels on the same shapes step after step, and on an H100 / H200 host that work made a small layer's
forward + backward take longer on the CPU than its kernels on the GPU (``docs/benchmarks.md``). A :class:`Launch`
holds one call's grid, sizes and compile-time arguments; its first call on tensors of given dtypes, alignment and
device goes through the JIT (which compiles), later ones call the compiled kernel directly. Triton before 3.3 passed
the compiled kernel only the run-time arguments; there, and if a direct call is ever refused, every launch goes
through the JIT.
"""
from __future__ import annotations

from typing import Any

import torch

try:
    import triton
except ImportError:  # CPU-only installs: nothing is launched
    triton = None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:2] if part.isdigit())


# Compiled kernels take every parameter, compile-time ones included, from Triton 3.3 on
_direct = triton is not None and _version(triton.__version__) >= (3, 3)


class Launch:
    """``kernel[grid](*tensors, *sizes, **consts, num_warps=num_warps)``, repeatable on new tensors (the kernel's
    pointer arguments, which come first in its signature, then ``sizes``, then the compile-time ``consts``)."""

    def __init__(self, kernel: Any, grid: tuple[int, ...], sizes: tuple[int, ...], consts: dict, num_warps: int):
        self.kernel, self.grid, self.sizes, self.consts, self.num_warps = kernel, grid, sizes, consts, num_warps
        names = kernel.arg_names
        first_const = len(names) - len(consts)
        # a compiled kernel takes all parameters in order: the constants after the pointers and sizes
        self.tail = (*sizes, *(consts[name] for name in names[first_const:]))
        self.compiled: dict = {}

    def __call__(self, *tensors: torch.Tensor) -> None:
        global _direct
        key = (tensors[0].device.index, *((t.dtype, t.data_ptr() % 16 == 0) for t in tensors))
        compiled = self.compiled.get(key) if _direct else None
        if compiled is not None:
            try:
                compiled[self.grid](*tensors, *self.tail)
                return
            except TypeError:  # a Triton whose compiled kernels take other arguments: the JIT from now on
                _direct = False
        compiled = self.kernel[self.grid](*tensors, *self.sizes, **self.consts, num_warps=self.num_warps)
        if compiled is not None and hasattr(compiled, "__getitem__"):  # None under TRITON_INTERPRET
            self.compiled[key] = compiled
