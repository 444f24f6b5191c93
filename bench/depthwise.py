"""Depthwise 3x3x3 conv: the fast forms (``depthwise_impl='frames'`` and ``'stencil'``) against the stock ``nn.Conv3d``
(``'conv3d'``).

Setting of the speed issue: 2 CPU threads, batch 2, 8x128x128 clips, training mode, in one process. With ``--device
cuda`` the stencil form is the Triton kernels of :mod:`sts3d.models.cuda_stencil` and the stock conv is also timed on
channels-last-3d tensors (``conv3d_cl``: cuDNN's kernels, what the ``channels_last`` switch runs), and the stencil with
its kernels launched through Triton's dispatch on every call (``stencil_dispatch``, what ``STS3D_DIRECT_LAUNCH=0`` runs)
rather than through their compiled launchers: host time on the small layers and steps. Part 1 times every distinct
depthwise conv shape of the backbones (forward + backward of input and weight), part 2 the forward + backward step of
each whole backbone with STS off. Each round times the forms in turn; the script prints the medians and the ratios stock
/ form (above 1: the form is faster). ``'auto'`` picks ``'stencil'`` where it is built. Targets: every layer >= 2x
forward + backward; whole step >= 1.25x for x3d_s and >= 1.1x for csn50_ir.

    python bench/depthwise.py [--rounds 9] [--threads 2] [--models csn50_ir x3d_s] [--skip-layers] [--skip-steps]
                              [--device cuda --batch 8 --size 224]
"""
from __future__ import annotations

import argparse
import collections
import statistics
import time
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from sts3d.models import create_backbone, cuda_stencil, native, stencil, triton_launch
from sts3d.models.depthwise import DepthwiseConv3d, depthwise_conv3d

STEP_TARGETS = {"x3d_s": 1.25, "csn50_ir": 1.1}
LAYER_TARGET = 2.0
FORMS = ("conv3d", "frames", "stencil")  # the stock conv, then the fast forms; targets are met by the fastest
CUDA_FORMS = ("conv3d", "conv3d_cl", "frames", "stencil", "stencil_dispatch")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forms(device: torch.device, only: Optional[list[str]] = None) -> tuple[str, ...]:
    """The forms compared on ``device`` (the stock conv first), or those of them in ``only``."""
    names = CUDA_FORMS if device.type == "cuda" else FORMS
    return tuple(k for k in names if k == "conv3d" or only is None or k in only)


def layer_shapes(name: str, clip: tuple[int, ...]) -> collections.Counter:
    """``(C, T, H, W, spatial stride)`` of every depthwise conv input of backbone ``name`` -> how many convs have it."""
    model = create_backbone(name, depthwise_impl="conv3d").eval()  # the shapes only: no kernel build
    shapes: collections.Counter = collections.Counter()
    hooks = [m.register_forward_hook(lambda m, inp, out: shapes.update([(*inp[0].shape[1:], m.stride[1])]))
             for m in model.modules() if isinstance(m, DepthwiseConv3d)]
    with torch.no_grad():
        model(torch.zeros(clip))
    for hook in hooks:
        hook.remove()
    return shapes


def interleaved(variants: dict[str, Callable[[], tuple[float, float]]], rounds: int) -> dict[str, tuple[float, float]]:
    """Median (forward s, forward + backward s) of each variant, the variants timed in turn each round."""
    for run in variants.values():  # warm-up: allocator, oneDNN primitive caches
        run()
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for k, run in variants.items():
            times[k].append(run())
    return {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()}


def launched(run: Callable[[], Any], direct: bool) -> Callable[[], Any]:
    """``run`` with the Triton kernels launched through their compiled launchers (``direct``, the default) or
    through Triton's dispatch every time (``triton_launch.DIRECT``)."""
    def wrapped() -> Any:
        default, triton_launch.DIRECT = triton_launch.DIRECT, direct
        try:
            return run()
        finally:
            triton_launch.DIRECT = default
    return wrapped


def layer_runner(conv: Callable, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> Callable:
    def run() -> tuple[float, float]:
        sync(x.device)
        start = time.perf_counter()
        out = conv(x, weight)
        sync(x.device)
        mid = time.perf_counter()
        torch.autograd.grad(out, (x, weight), grad)
        sync(x.device)
        return mid - start, time.perf_counter() - start
    return run


def max_error(conv: Callable, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, ref: list) -> float:
    """Largest relative error (norm of the difference over the reference's) of output, input and weight gradient."""
    xs, ws = x.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    out = conv(xs, ws)
    got = [out, *torch.autograd.grad(out, (xs, ws), grad)]
    return max(((a.double() - b).norm() / b.norm()).item() for a, b in zip(got, ref))


def bench_layers(name: str, args: argparse.Namespace) -> bool:
    device = torch.device(args.device)
    names = forms(device, args.forms)
    clip = (args.batch, 3, args.frames, args.size, args.size)
    print(f"\n{name}: depthwise layers, median forward + backward ms of each form, stock / form, and the largest "
          "relative error of any form (output and both gradients, against float64)")
    print(f"{'C x T x H x W':<20}{'stride':>7}{'count':>6}" + "".join(f"{k:>10}" for k in names)
          + "".join(f"{'x ' + k:>12}" for k in names[1:]) + f"{'error':>10}")
    met = True
    for (c, t, h, w, s), count in layer_shapes(name, clip).items():
        x = torch.randn(args.batch, c, t, h, w, device=device, requires_grad=True)
        x_cl = x.detach().contiguous(memory_format=torch.channels_last_3d).requires_grad_()
        weight = torch.randn(c, 1, 3, 3, 3, device=device, requires_grad=True)
        convs = {"conv3d": lambda x, weight: F.conv3d(x, weight, stride=(1, s, s), padding=1, groups=c),
                 "frames": lambda x, weight: depthwise_conv3d(x, weight, stride=(s, s)),
                 "stencil": lambda x, weight: stencil.depthwise_stencil(x, weight, None, s)}
        grad = torch.randn_like(convs["conv3d"](x, weight))
        runners = {k: layer_runner(conv, x, weight, grad) for k, conv in convs.items()}
        if device.type == "cuda":
            runners["conv3d_cl"] = layer_runner(convs["conv3d"], x_cl, weight, grad)
            runners["stencil_dispatch"] = launched(runners["stencil"], direct=False)
        med = interleaved({k: runners[k] for k in names}, args.rounds)
        ratios = [med["conv3d"][1] / med[k][1] for k in names[1:]]
        met &= max(ratios) >= LAYER_TARGET
        xr, wr = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
        out = convs["conv3d"](xr, wr)
        ref = [out, *torch.autograd.grad(out, (xr, wr), grad.double())]
        error = max(max_error(conv, x, weight, grad, ref) for conv in convs.values())
        print(f"{f'{c} x {t} x {h} x {w}':<20}{s:>7}{count:>6}" + "".join(f"{med[k][1] * 1e3:>10.2f}" for k in names)
              + "".join(f"{r:>12.2f}" for r in ratios) + f"{error:>10.1e}", flush=True)
    return met


def step_runner(model: torch.nn.Module, x: torch.Tensor) -> Callable:
    def run() -> tuple[float, float]:
        model.zero_grad(set_to_none=True)
        sync(x.device)
        start = time.perf_counter()
        out = model(x)
        sync(x.device)
        mid = time.perf_counter()
        out.mean().backward()
        sync(x.device)
        return mid - start, time.perf_counter() - start
    return run


def bench_step(name: str, args: argparse.Namespace) -> bool:
    device = torch.device(args.device)
    names = forms(device, args.forms)
    impls = {k: k.removesuffix("_cl").removesuffix("_dispatch") for k in names}
    models = {k: create_backbone(name, depthwise_impl=impl).to(device).train() for k, impl in impls.items()}
    for model in models.values():
        model.load_state_dict(models["conv3d"].state_dict())
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=device)
    inputs = {k: x for k in names}
    if "conv3d_cl" in models:  # the whole network channels-last, as the channels_last switch runs it
        models["conv3d_cl"].to(memory_format=torch.channels_last_3d)
        inputs["conv3d_cl"] = x.contiguous(memory_format=torch.channels_last_3d)
    runners = {k: step_runner(m, inputs[k]) for k, m in models.items()}
    if "stencil_dispatch" in runners:
        runners["stencil_dispatch"] = launched(runners["stencil_dispatch"], direct=False)
    med = interleaved(runners, args.rounds)
    target = STEP_TARGETS.get(name, 1.0)
    total = med["conv3d"][1] / med["stencil"][1]
    print(f"{name:<12} fwd+bwd s " + " / ".join(f"{k} {med[k][1]:.4f}" for k in names) + "   stock / form: "
          + ", ".join(f"{k} {med['conv3d'][1] / med[k][1]:.2f}x" for k in names[1:])
          + f" (target {target}x: {'met' if total >= target else 'MISSED'})", flush=True)
    if device.type == "cuda":  # a step whose GPU time is well under its wall time waits on the host's launches
        from cuda_kernels import device_time  # imports triton, which CPU-only installs lack

        gpu = {k: device_time(run, reps=3)[0] / 1e3 for k, run in runners.items()}
        print(f"{'':<12} GPU s    " + " / ".join(f"{k} {gpu[k]:.4f}" for k in names) + "   stock / form: "
              + ", ".join(f"{k} {gpu['conv3d'] / gpu[k]:.2f}x" for k in names[1:]), flush=True)
    return total >= target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--models", nargs="+", default=["csn50_ir", "x3d_s"])
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--forms", nargs="+", help="compare only these forms with the stock conv (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not (cuda_stencil.available() if args.device == "cuda" else native.available()):
        raise SystemExit("the stencil kernels cannot run here (no built extension / no triton): nothing to compare")
    where = (torch.cuda.get_device_name() if args.device == "cuda"
             else f"{args.threads} threads of {native.cpu_name()}")
    print(f"{where}, batch={args.batch} clip={args.frames}x{args.size}x{args.size} "
          f"rounds={args.rounds} torch={torch.__version__}")
    met = True
    if not args.skip_layers:
        for name in args.models:
            met &= bench_layers(name, args)
    if not args.skip_steps:
        print("\nwhole backbone, STS off, each depthwise_impl")
        for name in args.models:
            met &= bench_step(name, args)
    print(f"\nall targets: {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
