"""STS on over STS off, layer by layer: where the whole-backbone overhead of ``bench/sts_overhead.py`` comes from.

For each backbone, every conv that STS replaces is paired with the plain model's conv of the same name (the same
weight), and each distinct (input shape, layer) is timed forward + backward (input and weight gradients) on a
tensor of the shape it sees in the backbone at the benchmark's clip (batch 2, 8x128x128, 32 frames for SlowFast):
plain, STS faithful, STS aligned, interleaved round by round in one process, median of ``--rounds``, each round
``--repeats`` steps. Ratios above 1 are STS's cost; ``count`` is how many layers of the backbone have that shape.
With ``--device cuda`` the last columns give the same ratios of GPU time (the kernels' sum, from the profiler),
which launch overhead does not enter: where they differ from the wall-clock ratios, the CPU bounds the layer.

    python bench/sts_layers.py [--models r2plus1d34 x3d_s] [--threads 2] [--rounds 7] [--repeats 3]
                               [--device cuda --batch 8 --size 224]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from sts3d.models import create_backbone, list_backbones, native
from sts3d.models.sts import STSConv3d
from sts_overhead import clip_shape  # the same clips as the whole-backbone benchmark


def layer_inputs(name: str, frames: int, size: int) -> dict[str, tuple[int, ...]]:
    """The input shape of every STS conv of the backbone, by module name."""
    model = create_backbone(name, sts=True)
    shapes: dict[str, tuple[int, ...]] = {}

    def record(key: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            shapes[key] = tuple(inputs[0].shape)
        return hook

    hooks = [m.register_forward_hook(record(key)) for key, m in model.named_modules() if isinstance(m, STSConv3d)]
    with torch.no_grad():
        model(torch.randn(2, *clip_shape(name, frames, size)))
    for hook in hooks:
        hook.remove()
    return shapes


def fwd_bwd(conv: nn.Module, x: torch.Tensor, repeats: int) -> float:
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        x.grad = None
        conv.weight.grad = None
        conv(x).sum().backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list_backbones())
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    cuda = args.device == "cuda"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device={args.device} threads={args.threads} batch={args.batch} rounds={args.rounds} "
          f"repeats={args.repeats} torch={torch.__version__}"
          + ("" if args.device == "cuda" else f" cpu={native.cpu_name()}"))
    print(f"{'backbone':<17}{'layer (C_in, T, H, W) -> C_out':<34}{'kind':>10}{'stride':>7}{'count':>6}"
          f"{'plain ms':>10}{'faith./plain':>13}{'align./plain':>13}"
          + (f"{'GPU plain ms':>14}{'faith./plain':>13}{'align./plain':>13}" if cuda else ""))
    for name in args.models:
        plain_modules = dict(create_backbone(name, sts=False).named_modules())
        sts_models = {mode: dict(create_backbone(name, sts=True, sts_mode=mode).named_modules())
                      for mode in ("faithful", "aligned")}
        groups: dict[tuple, list[str]] = {}
        for key, shape in layer_inputs(name, args.frames, args.size).items():
            conv = sts_models["faithful"][key]
            groups.setdefault((shape[1:], conv.out_channels, conv.kind, conv.stride[1]), []).append(key)
        for (shape, out_channels, kind, stride), keys in sorted(groups.items(), key=lambda kv: kv[0][2:]):
            key = keys[0]
            convs = {"plain": plain_modules[key].train(), **{m: sts_models[m][key].train() for m in sts_models}}
            for conv in convs.values():
                conv.weight.data.copy_(convs["plain"].weight.data)
                conv.to(args.device)
            x = torch.randn(args.batch, *shape, device=args.device, requires_grad=True)
            for conv in convs.values():
                fwd_bwd(conv, x, 1)
            times: dict[str, list[float]] = {k: [] for k in convs}
            for _ in range(args.rounds):
                for k, conv in convs.items():
                    times[k].append(fwd_bwd(conv, x, args.repeats))
            med = {k: statistics.median(v) for k, v in times.items()}
            layer = f"{shape} -> {out_channels}"
            gpu = ""
            if cuda:
                from cuda_kernels import device_time

                ms = {k: device_time(lambda conv=conv: fwd_bwd(conv, x, 1))[0] for k, conv in convs.items()}
                gpu = f"{ms['plain']:>14.3f}{ms['faithful'] / ms['plain']:>13.2f}{ms['aligned'] / ms['plain']:>13.2f}"
            print(f"{name:<17}{layer:<34}{kind:>10}{stride:>7}{len(keys):>6}{med['plain'] * 1e3:>10.2f}"
                  f"{med['faithful'] / med['plain']:>13.2f}{med['aligned'] / med['plain']:>13.2f}{gpu}", flush=True)


if __name__ == "__main__":
    main()
