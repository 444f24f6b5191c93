"""STS on over STS off, per depthwise layer, timed inside the network: where ``bench/sts_overhead.py``'s whole-step
overhead of ir-CSN-50 and X3D-S sits, with the caches as a training step leaves them.

``bench/sts_layers.py`` times each layer on its own, over and over, so its input, weight and buffers stay in the
caches; in a step every layer finds them evicted by the layers before. This script profiles whole forward +
backward steps of the plain model and the STS models (faithful, aligned), interleaved step by step in one process,
and sums the CPU depthwise operators (``sts3d::depthwise_stencil`` and its backward, the ``'stencil'`` kernels that
``depthwise_impl='auto'`` picks on the CPU) per layer shape, direction and stride. Prints, per shape, the plain
model's milliseconds per step (all its layers of that shape) and the STS models' ratios, then the milliseconds
STS adds per step, split by stride and direction, beside the whole step's time. Medians over ``--steps`` steps.
Same clip as the STS benchmark (batch 2, 8x128x128), 2 threads. CPU only: on a GPU the kernels run from the
autograd function directly, without the operators this reads.

    python bench/sts_in_network.py [--models x3d_s csn50_ir] [--steps 25] [--threads 2]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from sts3d.models import create_backbone, native
from sts_overhead import VARIANTS, clip_shape, step  # the whole-backbone benchmark's models, clips and step

OPERATORS = {"sts3d::depthwise_stencil": "forward", "sts3d::depthwise_stencil_backward": "backward"}


def layer_key(event) -> tuple[str, tuple[int, ...], int]:
    """(direction, input (C, T, H, W), spatial stride) of a profiled depthwise operator."""
    direction = OPERATORS[event.name]
    if direction == "forward":  # (x, weight, bounds, plan, out_h, out_w)
        shape, out_h = event.input_shapes[0][1:], event.concrete_inputs[4]
    else:  # (grad, x, ...)
        shape, out_h = event.input_shapes[1][1:], event.input_shapes[0][3]
    return direction, tuple(shape), -(-shape[2] // out_h)


@contextlib.contextmanager
def profiler_lines_hidden():
    """The process's stderr sent to /dev/null for the block: the profiler's C++ side writes two or three lines at
    every start and stop (``USDT: ... profiler_start``), hundreds per run, which no log level silences."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profiled_step(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, collections.Counter]:
    """Seconds of one step (profiler included) and the depthwise operators' microseconds per layer key."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with profiler_lines_hidden(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step(model, x)
    seconds = time.perf_counter() - start
    times: collections.Counter = collections.Counter()
    for event in prof.events():
        if event.name in OPERATORS:
            times[layer_key(event)] += event.cpu_time_total
    return seconds, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["x3d_s", "csn50_ir"], choices=["x3d_s", "csn50_ir"])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not native.available():
        raise SystemExit("bench/sts_in_network.py: the compiled CPU depthwise kernels are not available here "
                         "(sts3d.models.native.available() is false), and they are what it times")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads={args.threads} batch=2 steps={args.steps} torch={torch.__version__} cpu={native.cpu_name()}")
    for name in args.models:
        models = {k: create_backbone(name, **v).train() for k, v in VARIANTS.items() if k != "control"}
        for m in models.values():
            m.load_state_dict(models["plain"].state_dict())
        x = torch.randn(2, *clip_shape(name, 8, 128))
        for m in models.values():  # warm-up: the kernels' plans and buffers
            profiled_step(m, x)
        seconds = {k: [] for k in models}
        per_layer = {k: collections.defaultdict(list) for k in models}
        for _ in range(args.steps):
            for k, m in models.items():
                s, times = profiled_step(m, x)
                seconds[k].append(s)
                for key, us in times.items():
                    per_layer[k][key].append(us / 1e3)
        ms = {k: {key: statistics.median(v) for key, v in layers.items()} for k, layers in per_layer.items()}
        print(f"\n{name}: whole step (profiled) plain {statistics.median(seconds['plain']) * 1e3:.0f} ms, depthwise "
              f"operators per step: " + ", ".join(f"{k} {sum(ms[k].values()):.1f} ms" for k in models))
        print(f"{'direction':<10}{'input (C, T, H, W)':<22}{'stride':>7}{'plain ms':>10}{'faithful':>10}{'aligned':>9}")
        added = {k: collections.Counter() for k in ("faithful", "aligned")}
        for key in sorted(ms["plain"], key=lambda k: (k[0] != "forward", k[2], k[1])):
            plain = ms["plain"][key]
            print(f"{key[0]:<10}{str(key[1]):<22}{key[2]:>7}{plain:>10.2f}"
                  + "".join(f"{ms[k][key] / plain:>{w}.3f}" for k, w in (("faithful", 10), ("aligned", 9))))
            for k in added:
                added[k][(key[2], key[0])] += ms[k][key] - plain
        for k, parts in added.items():
            print(f"{k} adds {sum(parts.values()):.2f} ms per step: "
                  + ", ".join(f"stride {s} {d} {v:+.2f}" for (s, d), v in sorted(parts.items())))


if __name__ == "__main__":
    main()
