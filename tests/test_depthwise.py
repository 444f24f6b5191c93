"""The fast depthwise conv against the stock ``nn.Conv3d(groups=C)``: outputs, gradients, modules, backbones."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sts3d.models import create_backbone
from sts3d.models.convs import block_conv_type
from sts3d.models.depthwise import DepthwiseConv3d, depthwise_conv3d, depthwise_form
from sts3d.models import native, stencil
from sts3d.models.sts import STSConv3d


def stock(x, weight, bias, stride, kt=3):
    return F.conv3d(x, weight, bias, stride=(1, stride, stride), padding=(kt // 2, 1, 1), groups=weight.shape[0])


def grads(out, inputs, seed=0):
    """Gradients for a fixed random output gradient, the same values in every dtype."""
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.autograd.grad(out, inputs, grad.to(out.dtype))


@pytest.mark.parametrize("n,c,t,h,w,stride,kt", [
    (2, 6, 4, 8, 8, 1, 3), (2, 6, 4, 8, 8, 2, 3), (3, 5, 3, 7, 9, 2, 3), (1, 4, 2, 5, 4, 1, 3),
    (2, 3, 1, 6, 6, 1, 3),  # one frame: only the centre tap reads data
    (2, 3, 2, 3, 3, 2, 5),  # a clip shorter than the kernel
    (1, 3, 5, 1, 1, 2, 3), (2, 4, 3, 6, 7, 3, 3)])
def test_matches_conv3d(n, c, t, h, w, stride, kt):
    torch.manual_seed(0)
    x = torch.randn(n, c, t, h, w, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(c, 1, kt, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(c, dtype=torch.float64, requires_grad=True)
    expected = stock(x, weight, bias, stride, kt)
    out = depthwise_conv3d(x, weight, bias, stride=(stride, stride))
    assert torch.equal(out, expected)  # the forward is the stock conv itself
    for got, want in zip(grads(out, (x, weight, bias)), grads(expected, (x, weight, bias))):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2])
def test_gradcheck(stride):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: depthwise_conv3d(a, b, stride=(stride, stride)), (x, weight))


def test_only_the_needed_gradients():
    """A frozen weight, or an input without grad (the first layer), skips that half of the backward."""
    torch.manual_seed(2)
    x = torch.randn(2, 4, 3, 6, 6, requires_grad=True)
    weight = torch.randn(4, 1, 3, 3, 3)
    (gx,) = grads(depthwise_conv3d(x, weight), (x,))
    torch.testing.assert_close(gx, grads(stock(x, weight, None, 1), (x,))[0])
    weight.requires_grad_()
    (gw,) = grads(depthwise_conv3d(x.detach(), weight, stride=(2, 2)), (weight,))
    torch.testing.assert_close(gw, grads(stock(x.detach(), weight, None, 2), (weight,))[0], rtol=1e-5, atol=1e-5)


def test_channels_last_input_keeps_its_layout():
    torch.manual_seed(3)
    x = torch.randn(2, 4, 3, 6, 6).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    weight = torch.randn(4, 1, 3, 3, 3, requires_grad=True)
    got = grads(depthwise_conv3d(x, weight, stride=(2, 2)), (x, weight))
    want = grads(stock(x, weight, None, 2), (x, weight))
    assert got[0].is_contiguous(memory_format=torch.channels_last_3d)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["auto", "frames", "conv3d", "stencil"])
@pytest.mark.parametrize("kwargs", [dict(stride=(1, 2, 2), padding=1), dict(stride=1, padding=1, bias=True),
                                    dict(stride=(2, 1, 1), padding=1),  # temporal stride: the stock conv
                                    dict(stride=1, padding=(0, 1, 1))])  # no temporal padding: the stock conv
def test_module_is_a_conv3d_with_its_state_dict(impl, kwargs):
    torch.manual_seed(4)
    kwargs = dict(dict(bias=False), **kwargs)
    conv = DepthwiseConv3d(6, 6, 3, groups=6, impl=impl, **kwargs)
    plain = nn.Conv3d(6, 6, 3, groups=6, **kwargs)
    plain.load_state_dict(conv.state_dict())
    assert isinstance(conv, nn.Conv3d) and list(conv.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 6, 4, 7, 8, requires_grad=True)
    out, expected = conv(x), plain(x)
    exact = impl in ("frames", "conv3d") or "stencil" not in conv.forms  # the stock forward
    torch.testing.assert_close(out, expected, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-5)
    for a, b in zip(grads(out, (x, *conv.parameters())), grads(expected, (x, *plain.parameters()))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_refuses_a_dense_conv_and_an_unknown_impl():
    with pytest.raises(ValueError, match="groups == in_channels == out_channels"):
        DepthwiseConv3d(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match="depthwise_impl must be one of"):
        DepthwiseConv3d(4, 4, 3, padding=1, groups=4, impl="fast")
    with pytest.raises(ValueError, match="depthwise_impl must be one of"):
        create_backbone("x3d_s", depthwise_impl="fast")


def test_auto_keeps_the_stock_conv_off_the_cpu_float_path():
    x = torch.zeros(1, 2, 1, 2, 2)
    fast = "stencil" if native.available() else "frames"
    assert depthwise_form("auto", x) == "frames"  # one frame of 2x2: tiny planes
    x = torch.zeros(1, 2, 2, 2, 2)
    assert depthwise_form("auto", x) == fast and depthwise_form("auto", x.double()) == "frames"
    assert depthwise_form("auto", x.to(memory_format=torch.channels_last_3d).transpose(3, 4)) == "frames"
    assert depthwise_form("auto", x.bfloat16()) == "conv3d" and depthwise_form("conv3d", x) == "conv3d"
    assert depthwise_form("frames", x.bfloat16()) == "frames"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert depthwise_form("auto", x) == "conv3d"


def test_conv_type_picks_the_depthwise_module():
    build = block_conv_type(False, depthwise_impl="conv3d")
    assert type(build(4, 4, 3, padding=1, groups=4)) is DepthwiseConv3d
    assert type(build(4, 8, 3, padding=1)) is nn.Conv3d
    sts = block_conv_type(True, "aligned")(4, 4, 3, padding=1, groups=4)
    assert type(sts) is STSConv3d and sts.mode == "aligned" and sts.depthwise_impl == "auto"


@pytest.mark.parametrize("impl", ["frames", "stencil"])
@pytest.mark.parametrize("mode", ["faithful", "aligned"])
@pytest.mark.parametrize("stride,size", [(1, (6, 10)), (2, (8, 12)), (2, (7, 9))])
def test_sts_fast_forms_are_the_same(impl, mode, stride, size):
    if impl == "stencil" and not native.available():
        pytest.skip("the stencil extension could not be built here (no C++ compiler)")
    torch.manual_seed(5)
    fast = STSConv3d(8, 8, 3, stride=(1, stride, stride), padding=1, groups=8, bias=False, mode=mode,
                     depthwise_impl=impl)
    slow = STSConv3d(8, 8, 3, stride=(1, stride, stride), padding=1, groups=8, bias=False, mode=mode,
                     depthwise_impl="conv3d")
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 8, 3, *size, requires_grad=True)
    out, expected = fast(x), slow(x)
    exact = impl == "frames"  # its dynamic half is the stock conv; the stencil sums taps in its own order
    torch.testing.assert_close(out, expected, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-5)
    for a, b in zip(grads(out, (x, fast.weight)), grads(expected, (x, slow.weight))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["csn50_ir", "x3d_s"])
@pytest.mark.parametrize("sts", [False, True], ids=["plain", "sts"])
def test_backbone_outputs_and_gradients_match(name, sts):
    """36x36 clips meet odd feature maps (9x9) before a stride-2 depthwise conv. A float32 network in training
    mode (batch norm over a few positions) amplifies rounding differences, so the fast model must be as close to a
    float64 reference as the stock float32 model is."""
    torch.manual_seed(6)
    fast = create_backbone(name, sts=sts).train()
    slow = create_backbone(name, sts=sts, depthwise_impl="conv3d").train()
    ref = create_backbone(name, sts=sts, depthwise_impl="conv3d").double().train()
    assert {k: v.shape for k, v in fast.state_dict().items()} == {k: v.shape for k, v in slow.state_dict().items()}
    slow.load_state_dict(fast.state_dict())
    ref.load_state_dict(fast.state_dict())
    assert any(isinstance(m, DepthwiseConv3d) for m in fast.modules()) != sts
    x = torch.randn(2, 3, 3, 36, 36)
    outs = fast(x), slow(x), ref(x.double())
    results = [(out, *grads(out, list(model.parameters()))) for out, model in zip(outs, (fast, slow, ref))]
    keys = ["output", *(k for k, _ in fast.named_parameters())]
    for key, got, stock, want in zip(keys, *results):
        scale = want.abs().max().item() + 1e-12
        error, stock_error = ((t.double() - want).abs().max().item() for t in (got, stock))
        assert error <= max(2 * stock_error, 1e-5 * scale), key


def test_backbones_without_depthwise_convs_take_the_setting():
    a = create_backbone("slowonly50", depthwise_impl="conv3d")
    assert str(a) == str(create_backbone("slowonly50"))
