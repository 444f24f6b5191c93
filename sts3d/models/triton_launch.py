"""A Triton kernel launch worked out once and repeated, for kernels that run once per layer per pass."""
from __future__ import annotations

from typing import Any

import torch


class Launch:
    """``kernel[grid](*tensors, *sizes, **consts, num_warps=num_warps)``, repeated on new tensors (the kernel's
    pointer arguments, which come first in its signature). A layer's grid, sizes and compile-time arguments are
    computed once (see ``sts3d.models.cuda_stencil._plan``), not on every forward and backward."""

    def __init__(self, kernel: Any, grid: tuple[int, ...], sizes: tuple[int, ...], consts: dict, num_warps: int):
        self.kernel, self.grid, self.sizes, self.consts, self.num_warps = kernel, grid, sizes, consts, num_warps

    def __call__(self, *tensors: torch.Tensor) -> None:
        self.kernel[self.grid](*tensors, *self.sizes, **self.consts, num_warps=self.num_warps)
