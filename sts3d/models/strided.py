"""Where strided convs put their outputs: the output size of an odd kernel padded by ``k // 2``, and the faithful
STS mode's rule for its strided line convs (the original's and ours for odd sizes).

The original runs each static line conv along the flattened frame with stride ``s**2`` and reads the results as the
``H' x W'`` output map, which is right only when that sequence has exactly ``H' W'`` elements; elsewhere (odd maps
before a stride-2 conv) it crashes, and this project takes the line at the true strided positions instead
(``docs/sts.md``). Every form of the depthwise STS conv (the stock-conv reference, the CPU and the CUDA kernels)
asks these functions.
"""
from __future__ import annotations


def out_size(size: int, stride: int) -> int:
    """Output length of a conv with an odd kernel, padding ``k // 2`` and ``stride`` over ``size`` inputs."""
    return (size - 1) // stride + 1


def line_fills_map(rows: int, cols: int, stride: int) -> bool:
    """Whether every ``stride**2``-th element of a flattened ``rows x cols`` frame fills its strided output map
    exactly (always at stride 1), so the original's placement applies."""
    return stride == 1 or (rows * cols - 1) // (stride * stride) + 1 == out_size(rows, stride) * out_size(cols, stride)
