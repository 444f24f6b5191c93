"""CUDA depthwise kernels, layer by layer: the stock conv3d against the Triton kernels of
:mod:`sts3d.models.cuda_stencil` at the module's settings and at others (``stream*``: outputs per program / warps of the
streaming 3x3x3 forward and input-gradient kernel; ``per_frame``: those passes by the per-frame kernel everywhere,
``stream_s1``: by the streaming one at every stride-1 map; ``wgrad*``: the weight-gradient kernel's block / warps,
``wgrad_gather``: its gather of every tap per frame; ``masked_s2``: the stride-2 input gradient with every tap masked,
not by phase; ``interior``: the per-frame kernel with a path for the frames whose temporal taps all fall inside the
clip, their loads not masked by frame (``interior_forward``: in the forward only); ``dispatch``: launched through
Triton's dispatch on every call rather than the compiled kernels' own launchers, ``triton_launch.DIRECT``), and the STS
depthwise conv in both modes at the defaults (``sts_aligned_masked_s2``: aligned, masked). First, the host's cost of a
forward + backward (a tiny layer, where the GPU waits for the CPU). Per form: ms forward / forward + backward (input and
weight gradients), ``triton.testing.do_bench`` wall-clock medians, which include the launch overhead, / forward +
backward GPU time (the kernels' sum, from the profiler). The plain forms are checked against the stock conv first. A
second table gives each kernel's GPU time for the stock conv and the default kernels. For tuning on a new GPU.

    python bench/cuda_kernels.py [--batch 8] [--size 224] [--models csn50_ir x3d_s]
"""
from __future__ import annotations

import argparse
import time
from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.testing

from sts3d.models import cuda_stencil, triton_launch

from depthwise import launched, layer_shapes

SETTINGS = ("_STREAM_TILE", "_STREAM_WARPS", "_STREAM_STRIDES", "_STREAM_MIN_FRAME", "_TILE", "_WARPS", "_WGRAD_BLOCK",
            "_WGRAD_WARPS", "_WGRAD_STREAM", "_S2_PHASES", "_INTERIOR_PASSES")
DEFAULT = {k: getattr(cuda_stencil, k) for k in SETTINGS}
TILES = {  # the default, then variants: where the streaming kernel serves, the weight gradient's kernel and block
    "stencil": {}, "per_frame": dict(_STREAM_STRIDES=()), "stream_s1": dict(_STREAM_MIN_FRAME=0),
    "wgrad_gather": dict(_WGRAD_STREAM=False), "wgrad32w2": dict(_WGRAD_BLOCK=32, _WGRAD_WARPS=2),
    "wgrad128w4": dict(_WGRAD_BLOCK=128, _WGRAD_WARPS=4), "wgrad128w2": dict(_WGRAD_BLOCK=128, _WGRAD_WARPS=2),
    "wgrad256w4": dict(_WGRAD_BLOCK=256, _WGRAD_WARPS=4), "masked_s2": dict(_S2_PHASES=False),
    "interior": dict(_INTERIOR_PASSES=("forward", "input_grad")),
    "interior_forward": dict(_INTERIOR_PASSES=("forward",)),
    "dispatch": dict(direct=False)}


def set_tiles(direct: bool = triton_launch.DIRECT, **changes) -> None:
    triton_launch.DIRECT = direct
    for key, value in {**DEFAULT, **changes}.items():
        setattr(cuda_stencil, key, value)


def forms(s: int, variants: Optional[list[str]] = None) -> dict:
    """name -> run(x, weight, grad): the output when ``grad`` is None, else forward and backward, the gradients."""
    def stock(x, w, g):
        out = F.conv3d(x, w, stride=(1, s, s), padding=1, groups=x.shape[1])
        return out if g is None else torch.autograd.grad(out, (x, w), g)

    def stencil(tiles):
        def run(x, w, g):
            set_tiles(**tiles)
            out = cuda_stencil.depthwise_cuda(x, w, None, s)
            return out if g is None else torch.autograd.grad(out, (x, w), g)
        return run

    def sts(faithful, tiles=None):
        def run(x, w, g):
            set_tiles(**(tiles or {}))
            out = cuda_stencil.sts_depthwise_cuda(x, w, s, faithful)
            return out if g is None else torch.autograd.grad(out, (x, w), g)
        return run

    every = {"conv3d": stock, **{k: stencil(v) for k, v in TILES.items()}, "sts_faithful": sts(True),
             "sts_aligned": sts(False), "sts_faithful_wgrad32": sts(True, dict(_WGRAD_BLOCK=32)),
             "sts_aligned_masked_s2": sts(False, dict(_S2_PHASES=False)),
             "sts_faithful_dispatch": sts(True, TILES["dispatch"])}
    return {k: v for k, v in every.items() if k in ("conv3d", "stencil") or variants is None or k in variants}


def device_time(run, reps: int = 10) -> tuple[float, dict[str, float]]:
    """GPU time per call in ms (the sum of its kernels, from the profiler: no launch overhead, which bounds small
    layers' wall time) and the share of each kernel."""
    run()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            run()
        torch.cuda.synchronize()
    kernels = {e.key: e.self_device_time_total / reps / 1e3 for e in prof.key_averages() if e.self_device_time_total}
    return sum(kernels.values()), kernels


def host_cost(runs: dict, reps: int = 300) -> str:
    """Microseconds per forward + backward of each form on a tiny layer, where the GPU waits for the host: the
    Python and launch overhead that bounds small layers' wall time; then the parts of the stencil's share, to tell
    where it goes (one Triton launch of the layer's forward kernel, an empty Triton kernel with pointer or integer
    arguments, a custom autograd function that does nothing, one small PyTorch operation)."""
    x = torch.randn(1, 8, 2, 7, 7, device="cuda", requires_grad=True)
    weight = torch.randn(8, 1, 3, 3, 3, device="cuda", requires_grad=True)
    grad = torch.randn_like(x)
    def per_call_us(run) -> float:
        for _ in range(20):
            run()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            run()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / reps * 1e6

    cells = [f"{key} {per_call_us(lambda: runs[key](x, weight, grad)):.0f}"
             for key in ("conv3d", "stencil", "dispatch", "sts_faithful", "sts_faithful_dispatch")]
    set_tiles()
    x_plain, out = x.detach(), torch.empty_like(x)
    plan = cuda_stencil._plan_of(x_plain, weight, 1, cuda_stencil.PLAIN)
    parts = {
        "stencil forward alone": lambda: cuda_stencil.depthwise_cuda(x_plain, weight.detach(), None, 1),
        "its forward launch": lambda: plan.forward(x_plain, weight, weight, out),
        "the same, through Triton's dispatch": launched(lambda: plan.forward(x_plain, weight, weight, out), False),
        # a Triton launcher checks each pointer argument with the driver (cuPointerGetAttribute)
        "empty Triton kernel, 4 pointers": lambda: _empty[(1,)](x, weight, grad, x),
        "empty Triton kernel, 4 ints": lambda: _empty[(1,)](1, 2, 3, 4),
        "its backward called directly": lambda: cuda_stencil._run_backward(plan, grad, x_plain, weight, True, True),
        "autograd function doing nothing, fwd+bwd": lambda: torch.autograd.grad(_Nothing.apply(x), x, grad),
        # the backward runs on the autograd engine's thread for the device: a launch from there
        "the same launching the empty kernel in its backward": lambda: torch.autograd.grad(_Launches.apply(x), x,
                                                                                            grad),
        "one small op (x.sum())": lambda: x_plain.sum(),
    }
    cells += [f"{key} {per_call_us(run):.0f}" for key, run in parts.items()]
    return "host cost of a forward + backward, us: " + ", ".join(cells)


class _Nothing(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _Launches(_Nothing):
    @staticmethod
    def backward(ctx, grad):
        _empty[(1,)](grad, grad, grad, grad)
        return grad


@triton.jit(do_not_specialize=["a", "b", "c", "d"])
def _empty(a, b, c, d):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=["csn50_ir", "x3d_s"])
    parser.add_argument("--variants", nargs="+", help="time only these forms beside conv3d and stencil (default: all)")
    args = parser.parse_args()
    if not cuda_stencil.available():
        print("no CUDA device with triton here: nothing to time")
        return
    torch.backends.cudnn.allow_tf32 = False
    print(f"{torch.cuda.get_device_name()}, batch {args.batch}, clip {args.frames}x{args.size}x{args.size}; "
          "ms forward / forward + backward")
    shapes = {}
    for name in args.models:
        for shape, count in layer_shapes(name, (args.batch, 3, args.frames, args.size, args.size)).items():
            shapes[shape] = shapes.get(shape, 0) + count
    names = list(forms(1, args.variants))
    print(host_cost(forms(1)), flush=True)
    print(f"{'C x T x H x W':<20}{'s':>3}{'n':>4}" + "".join(f"{k:>25}" for k in names)
          + f"{'stock/stencil':>14}{'GPU':>6}{'stock/best GPU':>16}")
    totals = {k: [0.0, 0.0] for k in names}
    splits = []
    for (c, t, h, w, s), count in shapes.items():
        x = torch.randn(args.batch, c, t, h, w, device="cuda", requires_grad=True)
        weight = torch.randn(c, 1, 3, 3, 3, device="cuda", requires_grad=True)
        runs = forms(s, args.variants)
        ref_out = runs["conv3d"](x, weight, None)
        grad = torch.randn_like(ref_out)
        ref_grads = runs["conv3d"](x, weight, grad)
        cells, kernels, results = {}, {}, {}
        for key, run in runs.items():
            try:
                out, grads = run(x, weight, None), run(x, weight, grad)
            except Exception as error:  # a kernel that does not build here: say so, time the others
                print(f"{key}: {type(error).__name__}: {str(error).strip().splitlines()[-1][:200]}", flush=True)
                cells[key] = "FAILED"
                continue
            results[key] = (out, *grads)
            # the plain forms against the stock conv; an STS form launched through Triton's dispatch against the same
            # form launched directly (the same kernels: the same results, bit for bit)
            if key.startswith("sts"):
                expected, bound = results.get(key.removesuffix("_dispatch")) if key.endswith("_dispatch") else None, 0.0
            else:
                expected, bound = (ref_out, *ref_grads), 1e-4
            error = 0.0 if expected is None else max(((a - b).norm() / b.norm()).item()
                                                     for a, b in zip(results[key], expected))
            if error > bound:
                cells[key] = "WRONG %.0e" % error
                continue
            fwd = triton.testing.do_bench(lambda: run(x, weight, None), warmup=10, rep=40, return_mode="median")
            both = triton.testing.do_bench(lambda: run(x, weight, grad), warmup=10, rep=40, return_mode="median")
            gpu, kernels[key] = device_time(lambda: run(x, weight, grad))
            totals[key][0] += both * count
            totals[key][1] += gpu * count
            cells[key] = (fwd, both, gpu)
        plain = [v[2] for k, v in cells.items() if k != "conv3d" and not k.startswith("sts") and isinstance(v, tuple)]
        stock = cells["conv3d"]
        ratios = [stock[i] / cells["stencil"][i] if isinstance(cells["stencil"], tuple) else float("nan")
                  for i in (1, 2)]
        print(f"{f'{c} x {t} x {h} x {w}':<20}{s:>3}{count:>4}"
              + "".join(f"{v[0]:>7.3f} /{v[1]:>7.3f} /{v[2]:>7.3f}" if isinstance(v, tuple) else f"{v:>25}"
                        for v in cells.values())
              + f"{ratios[0]:>13.2f}x{ratios[1]:>5.2f}x{stock[2] / min(plain, default=float('nan')):>15.2f}x",
              flush=True)
        splits.append((f"{c} x {t} x {h} x {w} s{s}", kernels.get("conv3d", {}), kernels.get("stencil", {}),
                       kernels.get("sts_faithful", {})))
    print("sum over layers x count, ms wall / GPU: " + ", ".join(f"{k} {v[0]:.2f} / {v[1]:.2f}"
                                                                 for k, v in totals.items()))
    print("\nGPU ms per kernel, forward + backward: stock conv3d | default stencil | faithful STS")
    for layer, *parts in splits:
        print(f"{layer:<26}" + " | ".join(", ".join(f"{k[:30]} {v:.3f}" for k, v in part.items()) for part in parts),
              flush=True)


if __name__ == "__main__":
    main()
