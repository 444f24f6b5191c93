"""Correctness on a GPU: the depthwise and STS convs (both modes) against float64 CPU runs of the stock convs,
forward and input / weight gradients, then the six backbones on CUDA against the original's reference outputs and
against float64, all with the default ``depthwise_impl='auto'`` (on CUDA the Triton kernels of
:mod:`sts3d.models.cuda_stencil` for the depthwise convs).

TF32 is switched off here (PyTorch lets cuDNN convs use it by default, which alone gives ~1e-3 relative errors);
training runs keep PyTorch's defaults. Needs ``../shared/reference`` (or ``STS3D_REFERENCE_DIR``). Exit status 1 when
any check fails.

    python bench/cuda_check.py [--models csn50_ir x3d_s ...]

The kernels are launched through their compiled launchers after their first call
(``sts3d.models.triton_launch.DIRECT``); ``STS3D_DIRECT_LAUNCH=0`` runs every check with them launched through
Triton's dispatch instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import load_case, reference_input, set_reference_weights  # noqa: E402

from sts3d.models import create_backbone, cuda_stencil, list_backbones, native, triton_launch  # noqa: E402


def as_tuple(out) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm()).item()


def reference_errors(name: str, device: str) -> list[float]:
    """Max abs error over 2e-4 * max|reference| (the reference README's tolerance) of each case; <= 1 passes."""
    errors = []
    for sts in (False, True):
        for case, seed in (("", 1234), ("_case2", 4321)):
            data = load_case("outputs", f"{name}_{'sts' if sts else 'plain'}{case}.npz")
            model = create_backbone(name, sts=sts).eval()
            set_reference_weights(model, seed)
            with torch.no_grad():
                outs = as_tuple(model.to(device)(reference_input(data["input"].shape, seed).to(device)))
            for i, out in enumerate(outs):
                expected = torch.from_numpy(data[f"output{i}"])
                errors.append((out.cpu() - expected).abs().max().item() / (2e-4 * expected.abs().max().item()))
    return errors


def gradient_errors(name: str, mode: str, device: str) -> float:
    """Largest relative error of outputs, input gradient and all parameter gradients, eval mode (batch statistics of
    tiny maps would amplify rounding), float32 on ``device`` (``auto``) against CPU float64 (stock convs)."""
    frames = 16 if name.startswith("slowfast") else 4
    torch.manual_seed(0)
    reference = create_backbone(name, sts=True, sts_mode=mode, depthwise_impl="conv3d").double().eval()
    model = create_backbone(name, sts=True, sts_mode=mode).to(device).eval()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, frames, 48, 40, dtype=torch.float64)
    results = []
    for net, inp in ((reference, x.clone()), (model, x.float().to(device))):
        inp.requires_grad_()
        outs = as_tuple(net(inp))
        loss = sum((o * torch.linspace(-1, 1, o.numel(), device=o.device).view_as(o)).sum() for o in outs)
        loss.backward()
        # parameter gradients as one vector: those that are exactly 0 in theory (a conv bias before a batch norm)
        # are rounding noise alone, whose relative error means nothing
        results.append([*outs, inp.grad, torch.cat([p.grad.double().cpu().flatten() for p in net.parameters()])])
    return max(relative(a, b) for a, b in zip(results[1], results[0]))


def layer_errors(device: str) -> dict[str, float]:
    """Per conv kind, the largest relative error of output, input gradient and weight gradient of the ``auto`` conv
    in float32 on ``device`` against the stock convs in float64 on the CPU, over strides 1 and 2 and odd, even,
    tiny, large and one-frame maps; each of ours run twice (the first call compiles)."""
    from sts3d.models.depthwise import DepthwiseConv3d
    from sts3d.models.sts import STSConv3d

    builders = {"depthwise 3x3x3": lambda s, impl: DepthwiseConv3d(16, 16, 3, (1, s, s), 1, groups=16, impl=impl)}
    for mode in ("faithful", "aligned"):
        builders[f"STS depthwise, {mode}"] = lambda s, impl, mode=mode: STSConv3d(
            16, 16, 3, (1, s, s), 1, groups=16, bias=False, mode=mode, depthwise_impl=impl)
        builders[f"STS 3x1x1, {mode}"] = lambda s, impl, mode=mode: STSConv3d(
            8, 16, (3, 1, 1), padding=(1, 0, 0), bias=False, mode=mode)
    errors = {}
    for kind, build in builders.items():
        worst = 0.0
        # (2, 48, 46): frames large enough for the streaming CUDA kernel (cuda_stencil._STREAM_MIN_FRAME)
        for (t, h, w) in ((4, 14, 14), (3, 9, 7), (2, 4, 4), (1, 11, 13), (4, 1, 1), (2, 48, 46)):
            for s in ((1, 2) if "depthwise" in kind else (1,)):
                reference = build(s, "conv3d").double()
                conv = build(s, "auto").to(device)
                conv.load_state_dict(reference.state_dict())
                x = torch.randn(2, reference.in_channels, t, h, w, dtype=torch.float64)
                got = []
                # ours twice: a layer's first call compiles its kernels and caches its launches, later ones reuse them
                for net, inp in ((reference, x.clone()), (conv, x.float().to(device)), (conv, x.float().to(device))):
                    inp.requires_grad_()
                    out = net(inp)
                    grad = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
                    got.append([out, *torch.autograd.grad(out, (inp, net.weight), grad)])
                worst = max(worst, *(relative(a, b) for ours in got[1:] for a, b in zip(ours, got[0])))
        errors[kind] = worst
        print(f"{kind:<26} largest relative error {worst:.1e} (<= 1e-5)", flush=True)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list_backbones())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="default: cuda where there is one; cpu: the same checks of the CPU kernels")
    args = parser.parse_args()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    if args.device == "cuda":
        # the float64 references in PyTorch's own operators: independent of our code, and no wait for the CPU
        # kernels' build (minutes on some GPU hosts)
        native.available = lambda: False
    where = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    print(f"{where}, torch {torch.__version__}, Triton kernels available: {cuda_stencil.available()}, "
          f"direct launch: {triton_launch.DIRECT}")
    ok = all(error <= 1e-5 for error in layer_errors(args.device).values())
    print("\nwhole backbones: eval-mode outputs against the original's, and outputs and gradients against float64 "
          "(a ReLU whose input rounds to the other side of 0 can move the gradients by ~1e-3: bound 1e-2)")
    print(f"{'backbone':<18}{'reference (<= 1)':>18}{'faithful grads':>16}{'aligned grads':>15}")
    for name in args.models:
        worst = max(reference_errors(name, args.device))
        grads = [gradient_errors(name, mode, args.device) for mode in ("faithful", "aligned")]
        ok &= worst <= 1 and max(grads) <= 1e-2
        print(f"{name:<18}{worst:>18.3f}{grads[0]:>16.1e}{grads[1]:>15.1e}", flush=True)
    print("all checks passed" if ok else "CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
