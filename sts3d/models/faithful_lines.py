"""Where the faithful STS mode's strided line convs put their outputs: the original's rule and ours for odd sizes.

The original runs each static line conv along the flattened frame with stride ``s**2`` and reads the results as the
``H' x W'`` output map, which is right only when that sequence has exactly ``H' W'`` elements; elsewhere (odd maps
before a stride-2 conv) it crashes, and this project takes the line at the true strided positions instead
(``docs/sts.md``). Every form of the depthwise STS conv (the stock-conv reference, the CPU and the CUDA kernels)
asks this one function which case a layer is in.
"""
from __future__ import annotations


def line_fills_map(rows: int, cols: int, stride: int) -> bool:
    """Whether every ``stride**2``-th element of a flattened ``rows x cols`` frame fills its strided output map
    exactly (always at stride 1), so the original's placement applies."""
    out_rows, out_cols = (rows - 1) // stride + 1, (cols - 1) // stride + 1
    return stride == 1 or (rows * cols - 1) // (stride * stride) + 1 == out_rows * out_cols
