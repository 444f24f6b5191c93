"""The STS convolution module on its own: the spec's identities, both behaviours, odd sizes, errors."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sts3d.models import sts as sts_module
from sts3d.models.convs import sts_conv_type
from sts3d.models.sts import STSConv3d

MODES = ["faithful", "aligned"]


def depthwise(channels=8, stride=1, mode="faithful"):
    return STSConv3d(channels, channels, 3, stride=(1, stride, stride), padding=1, groups=channels, bias=False,
                     mode=mode)


def temporal(cin=6, cout=8, mode="faithful"):
    return STSConv3d(cin, cout, (3, 1, 1), padding=(1, 0, 0), bias=False, mode=mode)


def plain_copy(conv: STSConv3d) -> nn.Conv3d:
    plain = nn.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      groups=conv.groups, bias=conv.bias is not None)
    plain.load_state_dict(conv.state_dict())
    return plain


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("build,stride,size", [(depthwise, 1, (6, 10)), (depthwise, 2, (8, 12)),
                                               (depthwise, 2, (7, 9)), (temporal, 1, (5, 7))])
def test_zero_outer_slices_equal_per_frame_2d_conv(mode, build, stride, size):
    """Spec 1.2.3: with zero outer temporal slices, STS equals the per-frame 2D conv with the centre slice."""
    torch.manual_seed(0)
    conv = build(stride=stride, mode=mode) if build is depthwise else build(mode=mode)
    with torch.no_grad():
        conv.weight[:, :, 0].zero_()
        conv.weight[:, :, 2].zero_()
    x = torch.randn(2, conv.in_channels, 4, *size)
    frames = x.transpose(1, 2).reshape(-1, conv.in_channels, *size)
    centre = conv.weight[:, :, 1]
    expected = F.conv2d(frames, centre, stride=conv.stride[1:], padding=conv.padding[1:], groups=conv.groups)
    expected = expected.view(2, 4, *expected.shape[1:]).transpose(1, 2)
    out = conv(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, plain_copy(conv)(x), rtol=1e-5, atol=1e-5)


def only_slice(conv, keep):
    """Zero every static weight except temporal slice ``keep``: the static output is one line branch."""
    with torch.no_grad():
        for s in range(3):
            if s != keep:
                conv.weight[: conv.out_channels // 2, :, s].zero_()


@pytest.mark.parametrize("keep,column", [(0, False), (2, True)])
def test_faithful_stride2_placement_is_the_originals(keep, column):
    """Spec 1.2.2: out(i, j) of a stride-2 line branch is the stride-1 result at the original's scrambled place."""
    torch.manual_seed(1)
    h, w = 8, 12
    strided = depthwise(stride=2)
    only_slice(strided, keep)
    unit = depthwise(stride=1)
    unit.load_state_dict(strided.state_dict())
    x = torch.randn(1, 8, 3, h, w)
    out, full = strided(x)[:, :4], unit(x)[:, :4]
    for i in range(h // 2):
        for j in range(w // 2):
            if column:
                r, c = (4 * i) % h, 2 * j + (4 * i) // h
            else:
                r, c = 2 * i + (4 * j) // w, (4 * j) % w
            torch.testing.assert_close(out[..., i, j], full[..., r, c])


@pytest.mark.parametrize("kind", ["depthwise", "temporal"])
def test_faithful_wraps_across_rows_aligned_does_not(kind):
    """A pixel at the right border reaches the next row's left border through the faithful width line only."""
    conv = depthwise() if kind == "depthwise" else temporal(cin=8)
    quarter_or_half = conv.out_channels // 2 if kind == "depthwise" else conv.out_channels // 4
    only_slice(conv, 0) if kind == "depthwise" else None
    with torch.no_grad():
        conv.weight.abs_()  # positive taps: any pixel it reads shows
    aligned = STSConv3d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        groups=conv.groups, bias=False, mode="aligned")
    aligned.load_state_dict(conv.state_dict())
    reach = 4 if kind == "depthwise" else 1  # half the line kernel: 9 or 3 taps
    x = torch.zeros(1, conv.in_channels, 1, 5, 12)
    x[..., 2, 11] = 1.0  # right border of row 2
    faithful_out, aligned_out = conv(x)[:, :quarter_or_half], aligned(x)[:, :quarter_or_half]
    assert faithful_out[..., 3, 0].abs().sum() > 0
    assert aligned_out[..., 3, 0].abs().sum() == 0
    # away from the border the two behaviours agree
    torch.testing.assert_close(faithful_out[..., reach:-reach], aligned_out[..., reach:-reach])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(7, 7), (5, 8), (8, 5), (1, 1), (3, 2)])
def test_odd_feature_map_before_stride2(mode, size):
    """The original crashes here; ours returns the plain conv's shape, the line outputs at the true strided
    positions (the stride-1 result subsampled) where the original's placement does not fill the map."""
    torch.manual_seed(2)
    conv = depthwise(stride=2, mode=mode)
    unit = depthwise(stride=1, mode=mode)
    unit.load_state_dict(conv.state_dict())
    x = torch.randn(2, 8, 3, *size)
    out = conv(x)
    assert out.shape == plain_copy(conv)(x).shape
    h, w = size
    if mode == "aligned" or (h * w - 1) // 4 + 1 != ((h - 1) // 2 + 1) * ((w - 1) // 2 + 1):
        torch.testing.assert_close(out, unit(x)[..., ::2, ::2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_channel_order_and_dynamic_half(mode):
    """Output is [static | dynamic]; the dynamic half is the plain 3D conv of the second half's filters."""
    torch.manual_seed(3)
    conv = depthwise(mode=mode)
    x = torch.randn(1, 8, 4, 6, 6)
    torch.testing.assert_close(conv(x)[:, 4:], plain_copy(conv)(x)[:, 4:])
    conv_t = temporal(mode=mode)
    x = torch.randn(1, 6, 4, 5, 5)
    torch.testing.assert_close(conv_t(x)[:, 4:], plain_copy(conv_t)(x)[:, 4:])


def test_no_new_parameters_and_gradients_reach_every_tap():
    conv = depthwise()
    assert [name for name, _ in conv.named_parameters()] == ["weight"]
    conv(torch.randn(1, 8, 3, 6, 6)).square().sum().backward()
    assert (conv.weight.grad[:, :, [0, 2]].abs().sum(dim=(2, 3, 4)) > 0).all()


def test_bias_is_added_once():
    torch.manual_seed(4)
    conv = STSConv3d(4, 4, 3, padding=1, groups=4, bias=True)
    with torch.no_grad():
        conv.weight.zero_()
    out = conv(torch.randn(1, 4, 2, 3, 3))
    torch.testing.assert_close(out, conv.bias.view(1, -1, 1, 1, 1).expand_as(out))


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel_size=3, stride=(2, 1, 1), padding=1, groups=4), "temporal downsampling"),
    (dict(kernel_size=(1, 3, 3), padding=(0, 1, 1)), "supports only"),
    (dict(kernel_size=3, padding=1, groups=1), "channel-wise"),
    (dict(kernel_size=(3, 1, 1), padding=(1, 0, 0), groups=2), "dense"),
])
def test_unsupported_convs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        STSConv3d(4, 4, **kwargs)


def test_mode_is_checked():
    with pytest.raises(ValueError, match="sts_mode"):
        sts_conv_type(True, "crooked")


def test_conv_type_keeps_pointwise_convs_plain():
    build = sts_conv_type(True)
    assert type(build(4, 8, 1)) is nn.Conv3d
    assert type(build(4, 8, (3, 1, 1), padding=(1, 0, 0))) is STSConv3d
    assert sts_conv_type(False) is nn.Conv3d


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("build", [temporal, depthwise])
@pytest.mark.parametrize("products", [False, True], ids=["pointwise-conv", "pointwise-products"])
def test_gradients_are_exact(mode, build, products, monkeypatch):
    """The hand-written backwards of the 3x1x1 form (the tap sum, and the pointwise product that small maps run as
    matrix products) and autograd elsewhere, against finite differences."""
    monkeypatch.setattr(sts_module, "_pointwise_as_products", lambda x: products)
    torch.manual_seed(5)
    conv = build(mode=mode).double()
    x = torch.randn(1, conv.in_channels, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    weight = conv.weight.detach().clone().requires_grad_()
    run = lambda inp, w: torch.func.functional_call(conv, {"weight": w}, (inp,))  # noqa: E731
    assert torch.autograd.gradcheck(run, (x, weight))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cin,cout,size", [(5, 12, (4, 3, 6)), (40, 48, (2, 1, 2))],
                         ids=["weight-grad-per-sample", "weight-grad-columns"])
def test_temporal_pointwise_routes_agree(mode, cin, cout, size, monkeypatch):
    """The 3x1x1 form's pointwise product as matrix products (contiguous CPU clips) or as a 1x1x1 conv: the same
    outputs and gradients either way, the weight gradient still in the parameter's tap-major layout; and bf16
    autocast runs the products in bf16 with float32 gradients."""
    torch.manual_seed(9)
    conv = temporal(cin=cin, cout=cout, mode=mode)
    x = torch.randn(2, cin, *size)
    g = torch.randn(2, cout, *size)
    results = []
    for products in (False, True):
        monkeypatch.setattr(sts_module, "_pointwise_as_products", lambda x, products=products: products)
        xs = x.clone().requires_grad_()
        conv.weight.grad = None
        out = conv(xs)
        out.backward(g)
        results.append((out, xs.grad, conv.weight.grad))
        assert conv.weight.grad.stride() == conv.weight.stride()
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x.requires_grad_())
    out.float().backward(g)
    assert out.dtype == torch.bfloat16 and conv.weight.grad.dtype == x.grad.dtype == torch.float32
    torch.testing.assert_close(out.float(), results[1][0], rtol=0.05, atol=0.05)


@pytest.mark.parametrize("mode", MODES)
def test_temporal_products_one_sample_at_a_time_agree(mode, monkeypatch):
    """Batches whose tap block would exceed glibc's mmap threshold run the products one sample at a time: the same
    outputs and gradients as the batched products, exact gradients, and under bf16 autocast bf16 products with
    float32 gradients."""
    torch.manual_seed(11)
    conv = temporal(cin=5, cout=12, mode=mode).double()
    x = torch.randn(3, 5, 4, 3, 6, dtype=torch.float64)
    g = torch.randn(3, 12, 4, 3, 6, dtype=torch.float64)
    monkeypatch.setattr(sts_module, "_pointwise_as_products", lambda x: True)
    results = []
    for threshold in (2 ** 62, 0):  # batched, then one sample at a time
        monkeypatch.setattr(sts_module, "_MMAP_THRESHOLD_MAX", threshold)
        xs = x.clone().requires_grad_()
        conv.weight.grad = None
        out = conv(xs)
        out.backward(g)
        results.append((out, xs.grad, conv.weight.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
    weight = conv.weight.detach().clone().requires_grad_()
    run = lambda inp, w: torch.func.functional_call(conv, {"weight": w}, (inp,))  # noqa: E731
    assert torch.autograd.gradcheck(run, (x[:2].clone().requires_grad_(), weight))
    conv = conv.float()
    xf = x.float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(xf)
    out.float().backward(g.float())
    assert out.dtype == torch.bfloat16 and xf.grad.dtype == conv.weight.grad.dtype == torch.float32
    torch.testing.assert_close(out.float(), results[0][0].float(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("mode", MODES)
def test_temporal_weight_is_tap_major_and_any_layout_gives_the_same_result(mode):
    """The 3x1x1 form's weight is stored tap by tap, so its pointwise weight is a view and its gradient arrives in
    the parameter's layout without a copy; a standard-layout weight (a user's, a loaded tensor) computes the same."""
    torch.manual_seed(6)
    conv = temporal(cin=5, cout=12, mode=mode)
    w = conv.weight
    assert w.shape == (12, 5, 3, 1, 1) and w.stride() == (5, 1, 60, 1, 1)
    pointwise = w.permute(2, 0, 1, 3, 4).reshape(36, 5, 1, 1, 1)
    assert pointwise.data_ptr() == w.data_ptr()  # a view: no copy of the weight per step
    standard = temporal(cin=5, cout=12, mode=mode)
    standard.weight = nn.Parameter(w.detach().contiguous())
    x = torch.randn(2, 5, 4, 3, 6)
    g = torch.randn(2, 12, 4, 3, 6)
    conv(x).backward(g)
    standard(x).backward(g)
    assert torch.equal(conv(x), standard(x))
    assert conv.weight.grad.stride() == w.stride()
    torch.testing.assert_close(conv.weight.grad, standard.weight.grad, rtol=0, atol=1e-5)
    # the layout survives loading, and the values round-trip through a plain conv's state_dict
    plain = plain_copy(conv)
    reloaded = temporal(cin=5, cout=12, mode=mode)
    reloaded.load_state_dict(plain.state_dict())
    assert reloaded.weight.stride() == w.stride() and torch.equal(reloaded.weight, w)


# stride 1 and 2, even and odd sizes, frames narrower and wider than 16 (the aligned lines' two forms); the odd ones
# at stride 2 are where the faithful strided sequence does not fill the output map (the line outputs are taken at
# the true strided positions)
FAST_CASES = [(1, (6, 10)), (1, (5, 7)), (1, (16, 17)), (2, (8, 12)), (2, (6, 9)), (2, (7, 9)), (2, (5, 5))]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stride,size", [case for case in FAST_CASES if max(case[1]) < 16])  # finite differences
def test_fast_depthwise_form_gradients_are_exact(mode, stride, size):
    """The hand-written backward of the depthwise form (channels-last frames) against finite differences."""
    torch.manual_seed(7)
    conv = STSConv3d(4, 4, 3, stride=(1, stride, stride), padding=1, groups=4, bias=False, mode=mode,
                     depthwise_impl="frames").double()
    x = torch.randn(2, 4, 3, *size, dtype=torch.float64, requires_grad=True)
    weight = conv.weight.detach().clone().requires_grad_()
    run = lambda inp, w: torch.func.functional_call(conv, {"weight": w}, (inp,))  # noqa: E731
    assert torch.autograd.gradcheck(run, (x, weight), fast_mode=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stride,size", FAST_CASES)
@pytest.mark.parametrize("x_grad", [True, False])
def test_fast_depthwise_form_equals_the_stock_one(mode, stride, size, x_grad):
    """The fast form (``'auto'`` on CPU float32) against the stock convs (``'conv3d'``): outputs and gradients."""
    torch.manual_seed(8)
    fast = STSConv3d(12, 12, 3, stride=(1, stride, stride), padding=1, groups=12, mode=mode)
    stock = STSConv3d(12, 12, 3, stride=(1, stride, stride), padding=1, groups=12, mode=mode,
                      depthwise_impl="conv3d")
    stock.load_state_dict(fast.state_dict())
    x = torch.randn(2, 12, 4, *size, requires_grad=x_grad)
    out, expected = fast(x), stock(x)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    grad = torch.randn_like(out)
    wrt = lambda conv: ((x,) if x_grad else ()) + (conv.weight, conv.bias)  # noqa: E731
    for a, b in zip(torch.autograd.grad(out, wrt(fast), grad), torch.autograd.grad(expected, wrt(stock), grad)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
