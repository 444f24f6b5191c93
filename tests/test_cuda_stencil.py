"""The CUDA depthwise kernels (``sts3d.models.cuda_stencil``), run on the CPU by Triton's interpreter.

Triton picks the interpreter when its kernels are defined, so the cases run in child processes started with
``TRITON_INTERPRET=1`` (this file, run as a script), one per core, each taking its share of the cases and reporting
the results as JSON; the tests check them. The references are the stock convs in float64: ``F.conv3d`` and
``STSConv3d(depthwise_impl='conv3d')``, the form the reference-output tests check against the original.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

PLAIN_CASES = {  # name: (T, H, W, stride, kernel)
    "3x3x3 s1": (3, 7, 7, 1, (3, 3, 3)),
    "3x3x3 s2 odd": (2, 9, 7, 2, (3, 3, 3)),
    "3x3x3 s2 even": (2, 8, 6, 2, (3, 3, 3)),
    "one frame": (1, 5, 9, 1, (3, 3, 3)),
    "1x1 map s2": (2, 1, 1, 2, (3, 3, 3)),
    "1x3x3 s2": (2, 6, 5, 2, (1, 3, 3)),
    "5x1x1": (4, 3, 4, 1, (5, 1, 1)),
    "5x1x1 frames inside": (6, 3, 4, 1, (5, 1, 1)),  # frames 2 and 3 have all five temporal taps in the clip
    "several tiles": (3, 12, 11, 1, (3, 3, 3)),  # the weight gradient's programs cover 64 outputs of a frame
    # the stride-2 input gradient by phase: tiles of 8 x 32 inputs, odd sizes, and stage 1's one-frame clips
    "s2 several tiles": (2, 19, 37, 2, (3, 3, 3)),
    "one frame s2": (1, 6, 7, 2, (3, 3, 3)),
    "1x5x5 s2": (2, 9, 10, 2, (1, 5, 5)),
}
STS_CASES = {  # name: (T, H, W, stride); the faithful stride-2 placement differs where the lines fill the map
    "s1": (3, 7, 6, 1),
    "s1 short rows": (2, 3, 2, 1),
    "s2 fills": (2, 8, 8, 2),
    "s2 odd": (2, 9, 7, 2),
    "s2 tiny": (2, 2, 2, 2),
    "one frame": (1, 5, 9, 1),
    "several tiles": (2, 12, 11, 1),
    "s2 several tiles": (2, 19, 37, 2),
    # from 4 x 4 frames on the faithful lines' taps are moved from their output's row and column (smaller frames,
    # "s1 short rows" and "s2 tiny", divide per tap): the smallest such frames, wide and tall
    "s1 four rows": (2, 4, 9, 1),
    "s2 fills four rows": (2, 4, 10, 2),
    "s2 fills four columns": (2, 12, 4, 2),
}
TAP_SUM_SHAPES = ((3, 4, 5), (1, 1, 1), (2, 1, 6), (2, 5, 1), (4, 7, 3))  # (T, H, W): the edges of every line
# the default choice of kernels (here the per-frame forward, the streaming weight gradient), then the streaming forward
# and input gradient, then the weight gradient that gathers every tap per frame, then the per-frame kernel with its
# path for the frames whose temporal taps all fall inside the clip
KERNELS = ("default", "streaming", "gather", "frames inside")
CASE_SECTIONS = ("plain", "sts", "tap sum")  # results sections keyed by case; each child reports its share


def _relative(a, b) -> float:
    return ((a.double() - b).norm() / b.norm()).item() if b.norm() > 0 else (a.double() - b).norm().item()


def _errors(run, reference, inputs) -> list[float]:
    """Relative errors of the output and of each input's gradient, float32 kernels against float64 reference."""
    import torch

    ref_inputs = [t.double().requires_grad_() for t in inputs]
    expected = reference(*ref_inputs)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, ref_inputs, grad)
    got_inputs = [t.clone().requires_grad_() for t in inputs]
    got = run(*got_inputs)
    got_grads = torch.autograd.grad(got, got_inputs, grad.float())
    return [_relative(got, expected), *(_relative(a, b) for a, b in zip(got_grads, expected_grads))]


@contextlib.contextmanager
def _kernels(kernels: str):
    """``cuda_stencil`` set to the kernel choice ``kernels`` (one of ``KERNELS``) inside the block, as it was after."""
    from sts3d.models import cuda_stencil

    settings = {"_WGRAD_STREAM": kernels != "gather",
                "_INTERIOR_PASSES": ("forward", "input_grad") if kernels == "frames inside" else ()}
    if kernels == "streaming":  # 3x3x3 convs stream through the frames only on large frames by default (none here)
        settings.update(_STREAM_STRIDES=(1, 2), _STREAM_MIN_FRAME=0)
    saved = {name: getattr(cuda_stencil, name) for name in settings}
    for name, value in settings.items():
        setattr(cuda_stencil, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(cuda_stencil, name, value)


def _plain_case(kernels: str, name: str) -> list[float]:
    import torch.nn.functional as F

    from sts3d.models import cuda_stencil

    t, h, w, s, kernel = PLAIN_CASES[name]
    c = 2
    inputs = [torch.randn(1, c, t, h, w), torch.randn(c, 1, *kernel), torch.randn(c)]
    pad = tuple(k // 2 for k in kernel)
    with _kernels(kernels):
        return _errors(lambda x, wt, b: cuda_stencil.depthwise_cuda(x, wt, b, s),
                       lambda x, wt, b: F.conv3d(x, wt, b, stride=(1, s, s), padding=pad, groups=c), inputs)


def _sts_case(kernels: str, mode: str, name: str) -> list[float]:
    from sts3d.models import cuda_stencil
    from sts3d.models.sts import STSConv3d

    t, h, w, s = STS_CASES[name]
    c = 4  # two static and two dynamic channels
    reference = STSConv3d(c, c, 3, (1, s, s), 1, groups=c, bias=False, mode=mode, depthwise_impl="conv3d").double()
    with _kernels(kernels):
        return _errors(lambda x, wt: cuda_stencil.sts_depthwise_cuda(x, wt, s, mode == "faithful"),
                       lambda x, wt: torch.func.functional_call(reference, {"weight": wt}, (x,)),
                       [torch.randn(1, c, t, h, w), torch.randn(c, 1, 3, 3, 3)])


def _tap_sum_case(mode: str, shape: tuple[int, int, int]) -> list[float]:
    """The dense 3x1x1 STS conv's tap sum, one kernel per pass, against _TemporalTapSum in float64."""
    from sts3d.models import cuda_tap_sum
    from sts3d.models.sts import _TemporalTapSum

    c = 8
    line_w, line_h = ("row_major", "col_major") if mode == "faithful" else ("w", "h")
    axes = ((0, 2, line_w), (2, 4, line_h), (4, c, "t"))
    return _errors(lambda y: cuda_tap_sum.tap_sum_cuda(y, c // 4, mode == "faithful"),
                   lambda y: _TemporalTapSum.apply(y, axes), [torch.randn(2, 3 * c, *shape)])


def _other_checks() -> dict:
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from sts3d.models import cuda_stencil, cuda_tap_sum
    from sts3d.models.sts import STSConv3d, _TemporalTapSum

    results: dict = {}
    c = 2
    with FlopCounterMode(display=False):  # a dispatch mode: the registered operator, not the eager path
        results["tap sum, registered"] = _errors(
            lambda y: cuda_tap_sum.tap_sum_cuda(y, 1, True),
            lambda y: _TemporalTapSum.apply(y, ((0, 1, "row_major"), (1, 2, "col_major"), (2, 4, "t"))),
            [torch.randn(1, 12, 3, 4, 5)])

    # only the gradients asked for are computed, and they are the full ones
    x, wt = torch.randn(1, c, 2, 5, 5), torch.randn(c, 1, 3, 3, 3)
    only_w = wt.clone().requires_grad_()
    grad_w, = torch.autograd.grad(cuda_stencil.depthwise_cuda(x, only_w, None, 1).sum(), only_w)
    ref_w = wt.double().requires_grad_()
    expected_w, = torch.autograd.grad(F.conv3d(x.double(), ref_w, padding=1, groups=c).sum(), ref_w)
    results["weight grad alone"] = _relative(grad_w, expected_w)

    # without a gradient to record (torch.no_grad, or inputs that need none) no autograd function runs: the same outputs
    needing = [x.clone().requires_grad_(), wt.clone().requires_grad_(), torch.randn(1, 12, 3, 4, 5).requires_grad_()]
    outputs = {"plain": lambda x, wt, y: cuda_stencil.depthwise_cuda(x, wt, None, 2),
               "sts": lambda x, wt, y: cuda_stencil.sts_depthwise_cuda(x, wt, 1, True),
               "tap sum": lambda x, wt, y: cuda_tap_sum.tap_sum_cuda(y, 1, True)}
    results["no grad"] = {}
    for name, run in outputs.items():
        recorded = run(*needing)
        with torch.no_grad():
            unrecorded = run(*needing)
        plain_inputs = run(*[t.detach() for t in needing])
        results["no grad"][name] = [recorded.grad_fn is not None, unrecorded.grad_fn is None,
                                    torch.equal(recorded, unrecorded), torch.equal(recorded, plain_inputs)]

    # torch.compile sees one operator: no graph break, the same result
    compiled = torch.compile(lambda x, wt: cuda_stencil.sts_depthwise_cuda(x, wt, 2, True), backend="aot_eager",
                             fullgraph=True)
    eager = cuda_stencil.sts_depthwise_cuda(x, wt, 2, True)
    results["compiled"] = _relative(compiled(x, wt), eager.double())

    # a channels-last clip (the channels_last switch) is computed in NCDHW and handed back channels-last
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    out_cl = cuda_stencil.depthwise_cuda(x_cl, wt, None, 2)
    results["channels_last"] = {"layout": out_cl.is_contiguous(memory_format=torch.channels_last_3d),
                                "error": _relative(out_cl, F.conv3d(x.double(), wt.double(), stride=(1, 2, 2),
                                                                    padding=1, groups=c))}

    # bfloat16 activations (autocast on a GPU) with the float32 weight: float32 accumulation, bf16 output rounding
    xb, wb = x.bfloat16().requires_grad_(), wt.clone().requires_grad_()
    out = cuda_stencil.sts_depthwise_cuda(xb, wb, 1, True)
    grad_x, grad_w = torch.autograd.grad(out.float().sum(), (xb, wb))
    reference = STSConv3d(c, c, 3, 1, 1, groups=c, bias=False, depthwise_impl="conv3d").double()
    expected = torch.func.functional_call(reference, {"weight": wt.double()}, (xb.detach().double(),))
    results["bf16"] = {"dtypes": [str(out.dtype), str(grad_x.dtype), str(grad_w.dtype)],
                       "error": _relative(out, expected)}

    with FlopCounterMode(display=False) as counter:
        cuda_stencil.depthwise_cuda(x, wt, None, 1)
    with FlopCounterMode(display=False) as stock:
        F.conv3d(x, wt, padding=1, groups=c)
    results["flops"] = [counter.get_total_flops(), stock.get_total_flops()]

    # the direct launch (triton_launch.DIRECT) hands a compiled kernel's launcher every argument in the kernel's
    # order: the tensors and sizes fill its runtime parameters, then each compile-time one takes its value. Under
    # the interpreter, which compiles nothing, the switch leaves every launch to Triton's dispatch.
    import inspect

    from sts3d.models import triton_launch

    launches = {}
    for s, mode in ((1, cuda_stencil.PLAIN), (2, cuda_stencil.PLAIN), (1, cuda_stencil.FAITHFUL),
                    (2, cuda_stencil.ALIGNED)):
        plan = cuda_stencil._plan((1, 4, 3, 9, 8), (3, 3, 3), s, mode, True, cuda_stencil._settings())
        for name, count in (("forward", 4), ("input_grad", 4), ("weight_grad", 3)):
            launches[f"mode {mode} s{s} {name}"] = getattr(plan, name), count
    for name, launch in zip(("sum", "spread"), cuda_tap_sum._launches((1, 4, 3, 5, 6), 1, True)):
        launches[f"tap {name}"] = launch, 2
    results["launch arguments"] = {}
    for name, (launch, count) in launches.items():
        params = list(inspect.signature(launch.kernel.fn).parameters.values())
        compile_time = ["constexpr" in str(p.annotation) for p in params]
        arguments, runtime = launch.arguments(count), count + len(launch.sizes)
        results["launch arguments"][name] = (
            arguments[:runtime] == (*range(count), *launch.sizes)
            and compile_time == [False] * runtime + [True] * (len(params) - runtime)
            and all(arguments[i] == launch.consts.get(p.name, p.default) for i, p in enumerate(params[runtime:],
                                                                                               runtime)))
    default = triton_launch.DIRECT
    inputs = [torch.randn(1, c, 3, 7, 7), torch.randn(c, 1, 3, 3, 3), torch.randn(c)]
    results["direct switch, interpreted"] = []
    for direct in (True, False):
        triton_launch.DIRECT = direct
        results["direct switch, interpreted"].append(max(_errors(
            lambda x, wt, b: cuda_stencil.depthwise_cuda(x, wt, b, 2),
            lambda x, wt, b: F.conv3d(x, wt, b, stride=(1, 2, 2), padding=1, groups=c), inputs)))
    triton_launch.DIRECT = default
    return results


def _jobs() -> list[tuple[str, str, Callable]]:
    """Every case as (section, key, function): the section's results map the key to what the function returns;
    ``None`` sections merge the returned dict into the results."""
    jobs = []
    for kernels in KERNELS:
        jobs += [("plain", f"{kernels} {name}", functools.partial(_plain_case, kernels, name))
                 for name in PLAIN_CASES]
        for mode in ("faithful", "aligned") if kernels != "gather" else ():  # the static half always gathers
            jobs += [("sts", f"{kernels} {mode} {name}", functools.partial(_sts_case, kernels, mode, name))
                     for name in STS_CASES]
    jobs += [("tap sum", f"{mode} {'x'.join(map(str, shape))}", functools.partial(_tap_sum_case, mode, shape))
             for mode in ("faithful", "aligned") for shape in TAP_SUM_SHAPES]
    return jobs + [(None, "", _other_checks)]


def run_cases(part: int = 0, parts: int = 1) -> dict:
    """The results of every ``parts``-th job from ``part`` on, each job seeded by its index (any split gives the
    same inputs)."""
    results: dict = {section: {} for section in CASE_SECTIONS}
    for index, (section, key, job) in enumerate(_jobs()):
        if index % parts == part:
            torch.manual_seed(index)
            if section is None:
                results.update(job())
            else:
                results[section][key] = job()
    return results


@pytest.fixture(scope="module")
def results() -> dict:
    pytest.importorskip("triton", reason="triton ships with PyTorch's CUDA wheels; CPU-only wheels lack it")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    # the interpreter runs the kernels in Python, one core each: the jobs are split over a child per core
    parts = max(1, min(4, len(os.sched_getaffinity(0))))
    children = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(part), str(parts)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                for part in range(parts)]
    results: dict = {}
    try:
        for child in children:
            stdout, stderr = child.communicate(timeout=900)
            assert child.returncode == 0, stderr[-3000:]
            for section, found in json.loads(stdout.strip().splitlines()[-1]).items():
                if section in CASE_SECTIONS:
                    results.setdefault(section, {}).update(found)
                else:
                    results[section] = found
    finally:
        for child in children:
            child.kill()
    return results


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("name", PLAIN_CASES)
def test_plain_depthwise_matches_conv3d(results, name, kernels):
    """Output, input, weight and bias gradients."""
    errors = results["plain"][f"{kernels} {name}"]
    assert max(errors) < 1e-5, errors


@pytest.mark.parametrize("kernels", [k for k in KERNELS if k != "gather"])
@pytest.mark.parametrize("mode", ["faithful", "aligned"])
@pytest.mark.parametrize("name", STS_CASES)
def test_sts_depthwise_matches_reference(results, mode, name, kernels):
    errors = results["sts"][f"{kernels} {mode} {name}"]
    assert max(errors) < 1e-5, errors


@pytest.mark.parametrize("mode", ["faithful", "aligned"])
@pytest.mark.parametrize("shape", TAP_SUM_SHAPES)
def test_tap_sum_matches_the_shifted_adds(results, mode, shape):
    """The dense 3x1x1 STS conv's tap sum and its transpose in one kernel each, against ``_TemporalTapSum``."""
    errors = results["tap sum"][f"{mode} {'x'.join(map(str, shape))}"]
    assert max(errors) < 1e-6, errors


def test_tap_sum_registered_operator(results):
    assert max(results["tap sum, registered"]) < 1e-6


def test_weight_gradient_alone(results):
    assert results["weight grad alone"] < 1e-5


def test_compiles_without_graph_break(results):
    assert results["compiled"] < 1e-6


def test_channels_last_clip_keeps_its_layout(results):
    assert results["channels_last"]["layout"]
    assert results["channels_last"]["error"] < 1e-5


def test_bfloat16_activations(results):
    assert results["bf16"]["dtypes"] == ["torch.bfloat16", "torch.bfloat16", "torch.float32"]
    assert results["bf16"]["error"] < 1e-2  # bf16 output rounding: 2**-8 per element


def test_flop_count_is_the_convs(results):
    ours, stock = results["flops"]
    assert ours == stock > 0


@pytest.mark.parametrize("name", ["plain", "sts", "tap sum"])
def test_same_outputs_without_a_gradient_to_record(results, name):
    assert all(results["no grad"][name]), results["no grad"][name]


def test_launch_arguments_in_the_kernels_order(results):
    assert results["launch arguments"] and all(results["launch arguments"].values()), results["launch arguments"]


def test_direct_launch_switch_under_the_interpreter(results):
    assert max(results["direct switch, interpreted"]) < 1e-5


def test_not_offered_without_cuda():
    import torch

    from sts3d.models import cuda_stencil

    if not torch.cuda.is_available():
        assert not cuda_stencil.available() and not cuda_stencil.takes(torch.float32)


if __name__ == "__main__":  # PART PARTS: the fixture's child processes
    print(json.dumps(run_cases(*map(int, sys.argv[1:3]))))
