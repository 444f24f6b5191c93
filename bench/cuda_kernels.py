"""CUDA depthwise kernels, layer by layer: the stock conv3d against the Triton kernels of
:mod:`sts3d.models.cuda_stencil` at several tile sizes (outputs per program / warps; the module's default first),
and the STS depthwise conv in both modes at the default tile, forward and forward + backward (input and weight
gradients), with ``triton.testing.do_bench`` medians; the plain forms are checked against the stock conv first.
For tuning the tile on a new GPU.

    python bench/cuda_kernels.py [--batch 8] [--size 224] [--models csn50_ir x3d_s]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton.testing

from sts3d.models import cuda_stencil

from depthwise import layer_shapes

TILES = {"tile256w2": (256, 2), "tile512w4": (512, 4), "tile128w1": (128, 1), "tile1024w8": (1024, 8)}


def forms(s: int) -> dict:
    """name -> run(x, weight, grad): the output when ``grad`` is None, else forward and backward, the gradients."""
    def stock(x, w, g):
        out = F.conv3d(x, w, stride=(1, s, s), padding=1, groups=x.shape[1])
        return out if g is None else torch.autograd.grad(out, (x, w), g)

    def stencil(tile, warps):
        def run(x, w, g):
            cuda_stencil._TILE, cuda_stencil._WARPS = tile, warps
            out = cuda_stencil.depthwise_cuda(x, w, None, s)
            return out if g is None else torch.autograd.grad(out, (x, w), g)
        return run

    def sts(faithful):
        def run(x, w, g):
            cuda_stencil._TILE, cuda_stencil._WARPS = TILES["tile256w2"]
            out = cuda_stencil.sts_depthwise_cuda(x, w, s, faithful)
            return out if g is None else torch.autograd.grad(out, (x, w), g)
        return run

    return {"conv3d": stock, **{k: stencil(*v) for k, v in TILES.items()}, "sts_faithful": sts(True),
            "sts_aligned": sts(False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=["csn50_ir", "x3d_s"])
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
    names = list(forms(1))
    print(f"{'C x T x H x W':<20}{'s':>3}{'n':>4}" + "".join(f"{k:>18}" for k in names) + f"{'stock/best':>12}")
    totals = dict.fromkeys(names, 0.0)
    for (c, t, h, w, s), count in shapes.items():
        x = torch.randn(args.batch, c, t, h, w, device="cuda", requires_grad=True)
        weight = torch.randn(c, 1, 3, 3, 3, device="cuda", requires_grad=True)
        runs = forms(s)
        ref_out = runs["conv3d"](x, weight, None)
        grad = torch.randn_like(ref_out)
        ref_grads = runs["conv3d"](x, weight, grad)
        cells = []
        for key, run in runs.items():
            try:
                out, grads = run(x, weight, None), run(x, weight, grad)
            except Exception as error:  # a kernel that does not build here: say so, time the others
                print(f"{key}: {type(error).__name__}: {str(error).strip().splitlines()[-1][:200]}", flush=True)
                cells.append(f"{'FAILED':>18}")
                continue
            error = max(((a - b).norm() / b.norm()).item() for a, b in zip((out, *grads), (ref_out, *ref_grads)))
            if error > 1e-4 and not key.startswith("sts"):
                cells.append(f"{'WRONG %.0e' % error:>18}")
                continue
            fwd = triton.testing.do_bench(lambda: run(x, weight, None), return_mode="median")
            both = triton.testing.do_bench(lambda: run(x, weight, grad), return_mode="median")
            totals[key] += both * count
            cells.append(f"{fwd:>8.3f} /{both:>7.3f}")
        best = min((float(c.split("/")[1]) for c in cells[1:-2] if "/" in c), default=float("nan"))
        stock = float(cells[0].split("/")[1])
        print(f"{f'{c} x {t} x {h} x {w}':<20}{s:>3}{count:>4}" + "".join(f"{c:>18}" for c in cells)
              + f"{stock / best:>11.2f}x", flush=True)
    print("sum over layers (ms, x count): " + ", ".join(f"{k} {v:.2f}" for k, v in totals.items()))


if __name__ == "__main__":
    main()
