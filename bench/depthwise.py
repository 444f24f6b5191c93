"""Depthwise 3x3x3 conv: the fast forms (``depthwise_impl='frames'`` and ``'stencil'``) against the stock
``nn.Conv3d`` (``'conv3d'``).

Setting of the speed issue: 2 CPU threads, batch 2, 8x128x128 clips, training mode, in one process. Part 1 times
every distinct depthwise conv shape of the backbones (forward + backward of input and weight), part 2 the forward +
backward step of each whole backbone with STS off. Each round times the forms in turn; the script prints the medians
and the ratios stock / form (above 1: the form is faster). ``'auto'`` picks ``'stencil'`` where it is built.
Targets: every layer >= 2x forward + backward; whole step >= 1.25x for x3d_s and >= 1.1x for csn50_ir.

    python bench/depthwise.py [--rounds 9] [--threads 2] [--models csn50_ir x3d_s] [--skip-layers] [--skip-steps]
"""
from __future__ import annotations

import argparse
import collections
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from sts3d.models import create_backbone, native, stencil
from sts3d.models.depthwise import DepthwiseConv3d, depthwise_conv3d

STEP_TARGETS = {"x3d_s": 1.25, "csn50_ir": 1.1}
LAYER_TARGET = 2.0
FORMS = ("conv3d", "frames", "stencil")  # the stock conv, then the fast forms; targets are met by the fastest


def layer_shapes(name: str, clip: tuple[int, ...]) -> collections.Counter:
    """``(C, T, H, W, spatial stride)`` of every depthwise conv input of backbone ``name`` -> how many convs have it."""
    model = create_backbone(name).eval()
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


def layer_runner(conv: Callable, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> Callable:
    def run() -> tuple[float, float]:
        start = time.perf_counter()
        out = conv(x, weight)
        mid = time.perf_counter()
        torch.autograd.grad(out, (x, weight), grad)
        return mid - start, time.perf_counter() - start
    return run


def bench_layers(name: str, args: argparse.Namespace) -> bool:
    clip = (args.batch, 3, args.frames, args.size, args.size)
    print(f"\n{name}: depthwise layers, median forward + backward ms of each form, and stock / form")
    print(f"{'C x T x H x W':<20}{'stride':>7}{'count':>6}" + "".join(f"{k:>10}" for k in FORMS)
          + "".join(f"{'x ' + k:>10}" for k in FORMS[1:]))
    met = True
    for (c, t, h, w, s), count in layer_shapes(name, clip).items():
        x = torch.randn(args.batch, c, t, h, w, requires_grad=True)
        weight = torch.randn(c, 1, 3, 3, 3, requires_grad=True)
        convs = {"conv3d": lambda x, weight: F.conv3d(x, weight, stride=(1, s, s), padding=1, groups=c),
                 "frames": lambda x, weight: depthwise_conv3d(x, weight, stride=(s, s)),
                 "stencil": lambda x, weight: stencil.depthwise_stencil(x, weight, None, s)}
        grad = torch.randn_like(convs["conv3d"](x, weight))
        med = interleaved({k: layer_runner(conv, x, weight, grad) for k, conv in convs.items()}, args.rounds)
        ratios = [med["conv3d"][1] / med[k][1] for k in FORMS[1:]]
        met &= max(ratios) >= LAYER_TARGET
        print(f"{f'{c} x {t} x {h} x {w}':<20}{s:>7}{count:>6}" + "".join(f"{med[k][1] * 1e3:>10.2f}" for k in FORMS)
              + "".join(f"{r:>10.2f}" for r in ratios), flush=True)
    return met


def step_runner(model: torch.nn.Module, x: torch.Tensor) -> Callable:
    def run() -> tuple[float, float]:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        out = model(x)
        mid = time.perf_counter()
        out.mean().backward()
        return mid - start, time.perf_counter() - start
    return run


def bench_step(name: str, args: argparse.Namespace) -> bool:
    models = {impl: create_backbone(name, depthwise_impl=impl).train() for impl in FORMS}
    for model in models.values():
        model.load_state_dict(models["conv3d"].state_dict())
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    med = interleaved({k: step_runner(m, x) for k, m in models.items()}, args.rounds)
    target = STEP_TARGETS.get(name, 1.0)
    total = med["conv3d"][1] / med["stencil"][1]
    print(f"{name:<12} fwd+bwd s " + " / ".join(f"{k} {med[k][1]:.3f}" for k in FORMS) + "   stock / form: "
          + ", ".join(f"{k} {med['conv3d'][1] / med[k][1]:.2f}x" for k in FORMS[1:])
          + f" (target {target}x: {'met' if total >= target else 'MISSED'})", flush=True)
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not native.available():
        raise SystemExit("the stencil extension could not be built here: nothing to compare")
    print(f"threads={args.threads} batch={args.batch} clip={args.frames}x{args.size}x{args.size} "
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
