"""One depthwise layer's forward + backward through the default CUDA kernels, a few times: a small program for
Nsight Compute or Nsight Systems to profile (``bench/cuda_kernels.py`` times every layer and form).

    python bench/cuda_layer.py C T H W STRIDE [--batch 8] [--sts faithful|aligned] [--steps 3]
    ncu --kernel-name regex:_weight_grad --launch-count 1 --set full python bench/cuda_layer.py 64 8 56 56 1
"""
from __future__ import annotations

import argparse

import torch

from sts3d.models import cuda_stencil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # one positional per number: argparse's usage error crashes on a tuple metavar of a positional
    for name in ("C", "T", "H", "W", "STRIDE"):
        parser.add_argument(name, type=int)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sts", choices=["faithful", "aligned"], help="the STS depthwise conv instead of the plain")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if not cuda_stencil.available():
        raise SystemExit("no CUDA device with triton here")
    c, t, h, w, stride = args.C, args.T, args.H, args.W, args.STRIDE
    x = torch.randn(args.batch, c, t, h, w, device="cuda", requires_grad=True)
    weight = torch.randn(c, 1, 3, 3, 3, device="cuda", requires_grad=True)
    for _ in range(args.steps):
        if args.sts:
            out = cuda_stencil.sts_depthwise_cuda(x, weight, stride, args.sts == "faithful")
        else:
            out = cuda_stencil.depthwise_cuda(x, weight, None, stride)
        torch.autograd.grad(out, (x, weight), torch.ones_like(out))
    torch.cuda.synchronize()
    print(f"{args.steps} forward + backward steps of {c} x {t} x {h} x {w}, stride {stride}, batch {args.batch}")


if __name__ == "__main__":
    main()
