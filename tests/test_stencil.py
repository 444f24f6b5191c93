"""The compiled depthwise stencil kernels (``depthwise_impl='stencil'``) against the stock convs, in float64."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from sts3d.models import native, stencil
from sts3d.models.depthwise import DepthwiseConv3d
from sts3d.models.sts import STSConv3d

# Skipped only where no compiler exists (CI has one): where one does, a kernel that fails to compile must fail here,
# not turn every test below into a skip
pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None,
                                reason="no C++ compiler here: the stencil extension cannot be built")


def test_the_extension_builds():
    assert native.available(), "a C++ compiler is here, but the stencil extension did not build (see the warning)"


def grads(out, inputs, seed=0):
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.autograd.grad(out, inputs, grad.to(out.dtype))


def assert_matches(got, want, tol=2e-6):
    """float32 results against float64 ones, relative to the largest magnitude."""
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == torch.float32
        assert (a.double() - b).abs().max() <= tol * b.abs().max().clamp_min(1e-12), (a - b).abs().max()


def float_copies(*tensors):
    return [t.detach().float().requires_grad_() for t in tensors]


@pytest.mark.parametrize("n,c,t,h,w,stride,kernel", [
    (2, 6, 4, 8, 8, 1, (3, 3, 3)), (2, 6, 4, 8, 8, 2, (3, 3, 3)), (3, 5, 3, 7, 9, 2, (3, 3, 3)),
    (1, 4, 2, 5, 4, 1, (3, 3, 3)), (2, 3, 1, 6, 6, 1, (3, 3, 3)),  # one frame: the temporal taps read padding
    (2, 3, 2, 3, 3, 2, (5, 3, 3)),  # a clip shorter than the kernel
    (1, 3, 5, 1, 1, 2, (3, 3, 3)), (2, 4, 3, 6, 7, 3, (3, 3, 3)), (2, 5, 6, 5, 5, 1, (5, 1, 1)),  # X3D's stem
    (2, 2, 3, 20, 21, 1, (3, 5, 5)),
    (1, 2, 2, 4, 62, 2, (3, 3, 3))])  # rows split into 31 even / odd columns: 16-, 8- and 4-lane shuffles and a tail
def test_dense_matches_conv3d(n, c, t, h, w, stride, kernel):
    torch.manual_seed(0)
    x = torch.randn(n, c, t, h, w, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(c, 1, *kernel, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(c, dtype=torch.float64, requires_grad=True)
    want = F.conv3d(x, weight, bias, stride=(1, stride, stride), padding=[k // 2 for k in kernel], groups=c)
    xf, wf, bf = float_copies(x, weight, bias)
    got = stencil.depthwise_stencil(xf, wf, bf, stride)
    assert_matches([got], [want])
    assert_matches(grads(got, (xf, wf, bf)), grads(want, (x, weight, bias)))


@pytest.mark.parametrize("mode", ["faithful", "aligned"])
@pytest.mark.parametrize("t,h,w,stride", [
    (4, 8, 8, 1), (4, 8, 8, 2), (3, 7, 9, 2), (1, 5, 5, 2), (4, 16, 12, 1), (2, 16, 12, 2), (3, 4, 4, 1),
    (2, 3, 6, 1), (2, 3, 6, 2), (1, 1, 1, 1), (2, 2, 3, 2), (2, 9, 9, 2),  # 9x9: odd, before CSN's stride 2
    (2, 6, 10, 2), (2, 2, 5, 2),  # faithful stride 2 on column pairs: height not a multiple of 4, odd width
    (2, 4, 1, 1), (2, 7, 3, 1),  # faithful stride 1 in one branch: masked taps on narrow frames
    (2, 4, 2, 1), (2, 4, 6, 1),  # 4 rows: 2 and 1 zero rows between frames, the height line's far taps masked
    (1, 4, 60, 2)])  # the width line's sequence split 4 ways, 60 elements each: every shuffle width
def test_sts_matches_the_composed_convs(mode, t, h, w, stride):
    """Against the STS conv built from stock convs (``depthwise_impl='conv3d'``), which the reference tests pin."""
    torch.manual_seed(1)
    conv = STSConv3d(6, 6, 3, stride=(1, stride, stride), padding=1, groups=6, bias=False, mode=mode,
                     depthwise_impl="conv3d").double()
    x = torch.randn(2, 6, t, h, w, dtype=torch.float64, requires_grad=True)
    want = conv(x)
    xf, wf = float_copies(x, conv.weight)
    got = stencil.sts_depthwise_stencil(xf, wf, stride, mode == "faithful")
    assert_matches([got], [want])
    assert_matches(grads(got, (xf, wf)), grads(want, (x, conv.weight)))


@pytest.mark.parametrize("mode", ["faithful", "aligned"])
@pytest.mark.parametrize("stride,size", [(1, (9, 9)), (1, (16, 12)), (2, (16, 16)), (1, (5, 5)), (1, (4, 8))])
def test_sts_keeps_exact_zeros(mode, stride, size):
    """Where every input a position reads is zero (common after a ReLU), the output is exactly zero, as the stock
    conv's is: a ReLU + batch norm after it must see the same signs (a stray 1e-12 flips its gradient mask)."""
    torch.manual_seed(4)
    x = torch.relu(torch.randn(2, 8, 3, *size)) * (torch.rand(2, 8, 3, *size) < 0.15)
    conv = STSConv3d(8, 8, 3, stride=(1, stride, stride), padding=1, groups=8, bias=False, mode=mode,
                     depthwise_impl="conv3d")
    want = conv.double()(x.double())
    got = stencil.sts_depthwise_stencil(x, conv.weight.float(), stride, mode == "faithful")
    zero = want == 0
    assert zero.any() and (got[zero] == 0).all()


@pytest.mark.parametrize("mode", ["plain", "faithful", "aligned"])
def test_buffers_kept_between_calls_leave_no_trace(mode):
    """Each thread keeps its buffers per layer shape from call to call: a call after dense inputs, at the same and at
    another shape, matches the reference and keeps exact zeros (a value left behind in a padding position would
    show)."""
    torch.manual_seed(5)
    shapes = [(2, 6, 3, 16, 12, 2), (2, 6, 3, 9, 9, 1), (2, 6, 3, 16, 12, 2)]
    for n, c, t, h, w, stride in shapes:
        dense = torch.randn(n, c, t, h, w) * 100
        sparse = torch.relu(torch.randn(n, c, t, h, w)) * (torch.rand(n, c, t, h, w) < 0.15)
        for x in (dense, sparse):
            if mode == "plain":
                ref = DepthwiseConv3d(c, c, 3, stride=(1, stride, stride), padding=1, groups=c, bias=False,
                                      impl="conv3d").double()
                run = lambda xf, wf: stencil.depthwise_stencil(xf, wf, None, stride)
            else:
                ref = STSConv3d(c, c, 3, stride=(1, stride, stride), padding=1, groups=c, bias=False, mode=mode,
                                depthwise_impl="conv3d").double()
                run = lambda xf, wf: stencil.sts_depthwise_stencil(xf, wf, stride, mode == "faithful")
            x64 = x.double().requires_grad_()
            want = ref(x64)
            xf, wf = float_copies(x64, ref.weight)
            got = run(xf, wf)
            assert_matches([got], [want])
            assert_matches(grads(got, (xf, wf)), grads(want, (x64, ref.weight)))
            assert (got[want == 0] == 0).all()


@pytest.mark.parametrize("kind", ["plain", "sts"])
def test_modules_compute_only_the_needed_gradients(kind):
    """A frozen weight gets no gradient and an input without grad (the first layer) none either; what is computed
    is still right."""
    torch.manual_seed(2)
    build = (lambda impl: DepthwiseConv3d(4, 4, 3, stride=(1, 2, 2), padding=1, groups=4, bias=False, impl=impl)) \
        if kind == "plain" else \
        (lambda impl: STSConv3d(4, 4, 3, stride=(1, 2, 2), padding=1, groups=4, bias=False, depthwise_impl=impl))
    conv, ref = build("stencil"), build("conv3d").double()
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 4, 3, 7, 6)
    x_ref = x.double().requires_grad_()
    want_gx, want_gw = torch.autograd.grad(ref(x_ref).square().sum(), (x_ref, ref.weight))
    conv.weight.requires_grad_(False)
    (gx,) = torch.autograd.grad(conv(x.requires_grad_()).square().sum(), (x,))
    conv.weight.requires_grad_(True)
    (gw,) = torch.autograd.grad(conv(x.detach()).square().sum(), (conv.weight,))
    assert_matches([gx, gw], [want_gx, want_gw], tol=1e-5)


def test_compiles_without_graph_breaks():
    torch.manual_seed(3)
    conv = STSConv3d(4, 4, 3, stride=(1, 2, 2), padding=1, groups=4, bias=False, depthwise_impl="stencil")
    x = torch.randn(1, 4, 2, 6, 6, requires_grad=True)
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, conv(x))
    torch.testing.assert_close(torch.autograd.grad(out.sum(), x)[0], torch.autograd.grad(conv(x).sum(), x)[0])


def test_switched_off_it_falls_back_to_the_frames_form():
    code = ("import torch; from sts3d.models import create_backbone, native; "
            "from sts3d.models.depthwise import depthwise_form; x = torch.zeros(1, 3, 2, 32, 32); "
            "assert not native.available() and depthwise_form('auto', x) == 'frames'; "
            "create_backbone('x3d_s', sts=True)(x).sum().backward(); "
            "create_backbone('slowonly50', sts=True)(x).sum().backward()\n"
            "try:\n    depthwise_form('stencil', x)\nexcept RuntimeError as e:\n    print('refused:', e)")
    env = dict(os.environ, STS3D_NO_EXTENSION="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "refused: depthwise_impl='stencil' needs" in result.stdout


def test_cpu_name_reports_the_widest_vector_instructions(monkeypatch, tmp_path):
    """Benchmarks print it: the kernels' speed follows the register width -march=native gives them."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx avx2 fma\n\n"
                       "processor\t: 1\nmodel name\t: other\nflags\t\t: avx512f\n")
    real_path = native.Path
    monkeypatch.setattr(native, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    assert native.cpu_name() == "AMD EPYC, avx2"
