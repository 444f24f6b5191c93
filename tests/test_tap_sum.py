"""The compiled tap sum of the dense 3x1x1 STS conv (``sts3d/csrc/tap_sum.cpp``) against PyTorch's shifted adds."""
import os
import shutil

import pytest
import torch

from sts3d.models import native, sts
from sts3d.models.sts import STSConv3d, _spread_taps, _sum_taps

# as tests/test_stencil.py: skipped only where no compiler exists, so a kernel that fails to build fails here
pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None,
                                reason="no C++ compiler here: the extension cannot be built")

SHAPES = [(3, 4, 5), (1, 1, 1), (2, 1, 6), (2, 5, 1), (4, 7, 3)]  # (T, H, W): every line's ends, one-element lines


def axes_of(mode: str, c: int) -> tuple:
    line_w, line_h = ("row_major", "col_major") if mode == "faithful" else ("w", "h")
    q = c // 4
    return (0, q, line_w), (q, 2 * q, line_h), (2 * q, c, "t")


def both_ways(monkeypatch, y, grad, axes):
    """(sum, transpose) by the compiled kernels, then by PyTorch's shifted adds."""
    results = []
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(sts, "_compiled_taps", lambda *args: None)
        out = y.new_empty(grad.shape)
        grad_y = torch.full_like(y, 7.0)  # every element must be written
        _sum_taps(out, y, axes)
        _spread_taps(grad_y, grad, axes)
        results.append((out, grad_y))
    return results


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["faithful", "aligned"])
def test_matches_the_shifted_adds_bit_for_bit(monkeypatch, mode, shape, dtype):
    assert native.available()
    torch.manual_seed(0)
    c = 8
    y, grad = torch.randn(2, 3 * c, *shape, dtype=dtype), torch.randn(2, c, *shape, dtype=dtype)
    (out, grad_y), (want_out, want_grad_y) = both_ways(monkeypatch, y, grad, axes_of(mode, c))
    assert torch.equal(out, want_out) and torch.equal(grad_y, want_grad_y)


@pytest.mark.parametrize("mode", ["faithful", "aligned"])
def test_bfloat16_sums_in_float(monkeypatch, mode):
    torch.manual_seed(1)
    c = 8
    y, grad = torch.randn(2, 3 * c, 3, 4, 5), torch.randn(2, c, 3, 4, 5)
    (out, grad_y), (want_out, want_grad_y) = both_ways(monkeypatch, y.bfloat16(), grad.bfloat16(), axes_of(mode, c))
    exact_out = torch.empty(grad.shape, dtype=torch.float64)
    monkeypatch.undo()
    _sum_taps(exact_out, y.bfloat16().double(), axes_of(mode, c))
    assert out.dtype == grad_y.dtype == torch.bfloat16
    assert torch.equal(grad_y, want_grad_y)  # the transpose only moves elements
    # one rounding of the float sum, where the shifted adds round after each add
    assert (out.double() - exact_out).abs().max() <= 2 ** -8 * exact_out.abs().max()


def test_the_sts_conv_runs_it_and_stays_exact(monkeypatch):
    """The dense STS conv's sum goes through the extension (both routes of its products), with exact gradients."""
    calls = []
    extension = native.extension()

    class Counting:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(extension, name)

    monkeypatch.setattr(native, "extension", lambda: Counting())
    torch.manual_seed(2)
    for mode in ("faithful", "aligned"):
        conv = STSConv3d(3, 8, (3, 1, 1), padding=(1, 0, 0), mode=mode).double()
        x = torch.randn(2, 3, 3, 4, 5, dtype=torch.float64, requires_grad=True)
        run = lambda inp, w: torch.func.functional_call(conv, {"weight": w}, (inp,))  # noqa: E731
        assert torch.autograd.gradcheck(run, (x, conv.weight.detach().clone().requires_grad_()))
    assert {"tap_sum_forward", "tap_sum_backward"} <= set(calls)


def test_other_channel_groups_keep_the_shifted_adds():
    y = torch.randn(1, 12, 2, 3, 3)
    assert sts._compiled_taps(((0, 4, "t"),), y) is None
    assert sts._compiled_taps(((0, 1, "row_major"), (1, 2, "h"), (2, 4, "t")), y) is None
    assert sts._compiled_taps(axes_of("aligned", 4), y.transpose(3, 4)) is None  # not contiguous
