"""STS on over STS off: forward + backward time of each backbone, measured in one process, interleaved.

Setting of the foundation issue: 2 CPU threads, batch 2, 8x128x128 clips (32 frames for SlowFast), at least 7
rounds; each round times the plain model, the STS model (faithful), the STS model (aligned) and a second plain model
(the control), ``--instances`` models of each (default 2), in an order rotated from round to round. A variant's time
is the mean over its instances of their median times. Prints those and the ratios. Target: every STS ratio <= 1.03.
The control's ratio to the plain model is the method's own error: two instances of the same model differ by a few
percent on this CPU, as much as the target's margin; more instances shrink that. The last ratio columns are the
paired estimate: per round, each variant's mean time over its instances divided by the plain model's in the same
round, and the median of those ratios over the rounds. A round's variants run back to back, so a slowdown of the
machine that lasts a round or more (on the 2-core VM steps of one model vary by 25 % from round to round) cancels
in the pair instead of landing on whichever variant it hits; ``--rounds`` narrows what is left. Beside each paired
estimate, its 90 % bootstrap interval (the rounds resampled with replacement): on a VM whose steps vary by 10-25 %, a
1-2 % cost needs 30-60 rounds before the interval clears the target's margin. All use the same
``--depthwise-impl`` (default ``auto``, the models' default; ``conv3d`` for the stock depthwise conv). The last
columns are the median minor page faults per step (thousands) of each variant: blocks above glibc's ``mmap``
threshold are mapped and faulted in afresh at every step, a cost that follows the size of the temporaries.

    python bench/sts_overhead.py [--rounds 7] [--threads 2] [--models csn50_ir x3d_s ...] [--device cpu|cuda]
                                 [--depthwise-impl auto|frames|conv3d] [--instances 2]
"""
from __future__ import annotations

import argparse
import random
import resource
import statistics
import time

import torch

from sts3d.models import create_backbone, list_backbones, native
from sts3d.models.depthwise import DEPTHWISE_IMPLS


# The models compared: STS off, on in both modes, and a second plain model (the control of the method)
VARIANTS = {"plain": dict(sts=False), "faithful": dict(sts=True, sts_mode="faithful"),
            "aligned": dict(sts=True, sts_mode="aligned"), "control": dict(sts=False)}


def clip_shape(name: str, frames: int, size: int) -> tuple[int, int, int, int]:
    return (3, 32 if name.startswith("slowfast") else frames, size, size)


def step(model: torch.nn.Module, x: torch.Tensor) -> None:
    out = model(x)
    loss = sum(o.float().mean() for o in (out if isinstance(out, tuple) else (out,)))
    loss.backward()


def timed(model: torch.nn.Module, x: torch.Tensor, device: str) -> tuple[float, int]:
    """Seconds and minor page faults of one step."""
    if device == "cuda":
        torch.cuda.synchronize()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    step(model, x)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def bootstrap_interval(ratios: list[float], level: float = 0.9, resamples: int = 2000) -> tuple[float, float]:
    """The ``level`` interval of the median of ``ratios`` over resamples of them with replacement (fixed seed)."""
    draw = random.Random(0)
    medians = sorted(statistics.median(draw.choices(ratios, k=len(ratios))) for _ in range(resamples))
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[int((1 - tail) * resamples) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--models", nargs="+", default=list_backbones())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depthwise-impl", default="auto", choices=DEPTHWISE_IMPLS)
    parser.add_argument("--instances", type=int, default=2, help="models built per variant (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device={args.device} threads={args.threads} batch={args.batch} rounds={args.rounds} "
          f"instances={args.instances} depthwise_impl={args.depthwise_impl} torch={torch.__version__}"
          + ("" if args.device == "cuda" else f" cpu={native.cpu_name()}"))
    print(f"{'backbone':<18}{'plain s':>10}{'faithful s':>12}{'aligned s':>11}{'faithful/plain':>16}"
          f"{'aligned/plain':>15}{'control/plain':>15}  faults/step (k): plain faithful aligned"
          f"   paired: faithful aligned control   90 % intervals: faithful aligned control")
    worst = worst_paired = worst_upper = 0.0
    for name in args.models:
        # instances interleaved (plain, faithful, aligned, control, plain, ...): each variant's time is the mean of
        # its instances' medians, which evens out what one instance's memory placement adds or saves
        models = [(k, create_backbone(name, depthwise_impl=args.depthwise_impl, **v).to(args.device).train())
                  for _ in range(args.instances) for k, v in VARIANTS.items()]
        for _, m in models:
            m.load_state_dict(models[0][1].state_dict())
        x = torch.randn(args.batch, *clip_shape(name, args.frames, args.size), device=args.device)
        for _, m in models:  # warm-up: allocator, kernels' first-call costs
            step(m, x)
        times = [[] for _ in models]
        faults = [[] for _ in models]
        for r in range(args.rounds):
            for i in [(r + j) % len(models) for j in range(len(models))]:
                models[i][1].zero_grad(set_to_none=True)
                seconds, count = timed(models[i][1], x, args.device)
                times[i].append(seconds)
                faults[i].append(count)
        med = {k: statistics.mean(statistics.median(t) for (kind, _), t in zip(models, times) if kind == k)
               for k in VARIANTS}
        per_round = {k: [statistics.mean(t[r] for (kind, _), t in zip(models, times) if kind == k)
                         for r in range(args.rounds)] for k in VARIANTS}
        round_ratios = {k: [a / b for a, b in zip(per_round[k], per_round["plain"])] for k in VARIANTS}
        paired = {k: statistics.median(v) for k, v in round_ratios.items()}
        interval = {k: bootstrap_interval(v) for k, v in round_ratios.items()}
        kfaults = {k: statistics.median(n for (kind, _), f in zip(models, faults) if kind == k for n in f) / 1e3
                   for k in VARIANTS}
        ratios = (med["faithful"] / med["plain"], med["aligned"] / med["plain"])
        worst = max(worst, *ratios)
        print(f"{name:<18}{med['plain']:>10.3f}{med['faithful']:>12.3f}{med['aligned']:>11.3f}"
              f"{ratios[0]:>16.3f}{ratios[1]:>15.3f}{med['control'] / med['plain']:>15.3f}"
              f"{kfaults['plain']:>24.1f}{kfaults['faithful']:>9.1f}{kfaults['aligned']:>8.1f}"
              f"{paired['faithful']:>18.3f}{paired['aligned']:>8.3f}{paired['control']:>8.3f}   "
              + "  ".join(f"{interval[k][0]:.3f}-{interval[k][1]:.3f}" for k in ("faithful", "aligned", "control")),
              flush=True)
        worst_paired = max(worst_paired, paired["faithful"], paired["aligned"])
        worst_upper = max(worst_upper, interval["faithful"][1], interval["aligned"][1])
    print(f"worst ratio {worst:.3f} (target <= 1.03): {'met' if worst <= 1.03 else 'MISSED'}; paired "
          f"{worst_paired:.3f}: {'met' if worst_paired <= 1.03 else 'MISSED'}; highest upper end of a 90 % interval "
          f"{worst_upper:.3f}: {'met' if worst_upper <= 1.03 else 'not shown'}")


if __name__ == "__main__":
    main()
