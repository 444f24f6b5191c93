"""Stage-1 training throughput: images/s of a training step (forward, BCE loss, backward, LAMB step) per model at
224 px, eager float32 vs ``--channels-last`` vs bfloat16 autocast (``--amp``), in one process, interleaved.

Uses the trainer's own pieces (``sts3d.engine.image_train.prepare_model`` / ``autocast``), so the variants are what
``train.py`` runs. Prints the median images/s of each variant and its ratio to eager. Each model runs in a child
process: PyTorch 2.14's CPU bfloat16 conv3d has crashed the process (memory corruption in oneDNN) for some shapes,
so a model whose run dies is measured again without the bf16 variant and the crash is reported.

    python bench/image_train_throughput.py [--batch 4] [--rounds 3] [--threads 2] [--device cpu|cuda] [--models ...]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import timm
import torch
from timm.optim import create_optimizer_v2

import sts3d  # noqa: F401  (registers the v3d_* models)
from sts3d.engine.image_train import autocast, prepare_model
from sts3d.models import IMAGE_MODELS

VARIANTS = {"eager": dict(channels_last=False, amp=False), "channels-last": dict(channels_last=True, amp=False),
            "bf16": dict(channels_last=False, amp=True)}


def build(name: str, device: torch.device, channels_last: bool, amp: bool):
    model = timm.create_model(name, num_classes=1000)
    dtype = torch.bfloat16 if amp else None
    prepare_model(model, device, dtype, channels_last)
    optimizer = create_optimizer_v2(model, "lamb", lr=5e-3, weight_decay=0.02)
    return model.train(), optimizer, dtype


def step(model, optimizer, dtype, images, targets, device, channels_last) -> None:
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(device, dtype):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(name: str, variants: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Median images/s of each variant of ``name``, interleaved round by round."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    targets = torch.zeros(args.batch, 1000, device=device)
    targets[:, 0] = 1
    runs = {k: build(name, device, **VARIANTS[k]) for k in variants}
    for key, (model, opt, dtype) in runs.items():  # warm-up
        step(model, opt, dtype, images, targets, device, VARIANTS[key]["channels_last"])
    speeds = {k: [] for k in runs}
    for _ in range(args.rounds):
        for key, (model, opt, dtype) in runs.items():
            start = time.perf_counter()
            step(model, opt, dtype, images, targets, device, VARIANTS[key]["channels_last"])
            speeds[key].append(args.batch / (time.perf_counter() - start))
    return {k: statistics.median(v) for k, v in speeds.items()}


def run_child(name: str, variants: list[str], argv: list[str]) -> tuple[int, str]:
    child = subprocess.run([sys.executable, __file__, *argv, "--models", name, "--child", ",".join(variants)],
                           capture_output=True, text=True)
    return child.returncode, child.stdout.strip().splitlines()[-1] if child.stdout.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=sorted(IMAGE_MODELS))
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure these variants, print one line
    args, argv = parser.parse_args(), list(sys.argv[1:])
    if args.child:
        med = measure(args.models[0], args.child.split(","), args)
        print(" ".join(f"{k}={v}" for k, v in med.items()))
        return
    if "--models" in argv:
        argv = argv[:argv.index("--models")]
    print(f"device={args.device} threads={args.threads} batch={args.batch} size={args.size} rounds={args.rounds} "
          f"torch={torch.__version__}")
    print(f"{'model':<26}" + "".join(f"{k + ' img/s':>20}" for k in VARIANTS) + f"{'ch-last/eager':>15}"
          f"{'bf16/eager':>15}")
    for name in args.models:
        code, line = run_child(name, list(VARIANTS), argv)
        note = ""
        if code != 0:
            note = f"  bf16 run crashed (exit {code}); measured without it"
            code, line = run_child(name, ["eager", "channels-last"], argv)
        if code != 0:
            print(f"{name:<26} failed (exit {code})", flush=True)
            continue
        med = {k: float(v) for k, v in (item.split("=") for item in line.split())}
        cells = "".join(f"{med[k]:>20.2f}" if k in med else f"{'crashed':>20}" for k in VARIANTS)
        ratios = "".join(f"{med[k] / med['eager']:>15.2f}" if k in med else f"{'-':>15}"
                         for k in ("channels-last", "bf16"))
        print(f"{name:<26}{cells}{ratios}{note}", flush=True)


if __name__ == "__main__":
    main()
