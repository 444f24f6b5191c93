"""A Triton kernel launch worked out once and repeated, for kernels that run once per layer per pass."""
from __future__ import annotations

import inspect
import os
import warnings
from typing import Any, Callable

import torch


def _launchers_take_every_argument() -> bool:
    """Whether this Triton's dispatch hands a compiled kernel's launcher every bound argument, compile-time ones
    included, as :class:`Launch` does: so from Triton 3.6 (checked on a GPU) on (3.8's dispatch reads the same)."""
    try:
        import triton
    except ImportError:
        return False
    return tuple(int(part) for part in triton.__version__.split(".")[:2]) >= (3, 6)


# Launch through the compiled kernel's own launcher after the first call (see Launch); STS3D_DIRECT_LAUNCH=0 leaves
# every launch to Triton's dispatch. Checked on an H200 (session 16: every kernel and X3D-S whole, against the stock
# conv and float64, `STS3D_DIRECT_LAUNCH=1 python bench/cuda_check.py`), where it cut a small layer's forward +
# backward from 369 to 282 us of host time and the 15 CSN-50 / X3D-S layers' summed wall time from 25.2 to 16.7 ms.
# The tests run the kernels in Triton's interpreter, which compiles nothing: there every launch takes the dispatch.
DIRECT = os.environ.get("STS3D_DIRECT_LAUNCH", "1") != "0" and _launchers_take_every_argument()


def _stop_direct_launches(error: Exception) -> None:
    """Every launch through Triton's dispatch from now on, with a one-line warning saying why."""
    global DIRECT
    DIRECT = False
    warnings.warn(f"sts3d: a Triton kernel's compiled launcher failed ({type(error).__name__}: {error}); launching "
                  "through Triton's dispatch from now on (STS3D_DIRECT_LAUNCH=0 does so from the start)", stacklevel=3)


class Launch:
    """``kernel[grid](*tensors, *sizes, **consts, num_warps=num_warps)``, repeated on new tensors (the kernel's
    pointer arguments, which come first in its signature). A layer's grid, sizes and compile-time arguments are
    computed once (see ``sts3d.models.cuda_stencil._plan``), not on every forward and backward.

    With ``DIRECT``, a launch after the first goes straight to the kernel Triton compiled for tensors like these
    (same device, dtypes and 16-byte alignment: what Triton specialises a pointer argument on; the sizes and
    compile-time arguments are fixed per launch), through that kernel's own launcher. Triton's dispatch binds every
    argument, builds a cache key and looks it up on every call, which costs more than the launch itself on kernels
    of about 20 arguments (tritonbench's launch-latency study: about 12.5 us against 3.4 us for 19 arguments).
    Under Triton's interpreter nothing is compiled, and every launch takes the dispatch. A launcher that fails
    (another Triton's arguments) turns direct launches off for the process, with a warning, and the launch goes
    through the dispatch.
    """

    def __init__(self, kernel: Any, grid: tuple[int, ...], sizes: tuple[int, ...], consts: dict, num_warps: int):
        self.kernel, self.grid, self.sizes, self.consts, self.num_warps = kernel, grid, sizes, consts, num_warps
        self._launchers: dict[tuple, Callable[..., None]] = {}  # specialisation -> the compiled kernel's launcher
        self._tail: tuple = ()  # the arguments after the tensors, in the kernel's order (constants included)

    def __call__(self, *tensors: torch.Tensor) -> None:
        if DIRECT and self._launchers:
            launcher = self._launchers.get(self._specialisation(tensors))
            if launcher is not None:
                try:
                    launcher(*tensors, *self._tail)
                    return
                except Exception as error:  # a Triton whose launchers take other arguments than its 3.6-3.8
                    _stop_direct_launches(error)
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
