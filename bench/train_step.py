"""Training-step speed of the six networks with the config's speed switches, and peak memory per step.

For every network and switch (``channels_last``, ``bf16``, ``compile``: the keys of the fine-tuning configs;
``cudagraphs``: ``compile='reduce-overhead'``, a GPU's, not in the default list) a child
process builds the network twice, as the fine-tuning engine does (``sts3d.engine.video_train``: STS on, SGD, grad
clipping at 40), once eager float32 and once with the switch, and times their steps interleaved over several rounds,
so the printed ratio compares the two under the same load. A child per switch keeps a crash (CPU bf16 conv3d in
some PyTorch builds) from ending the run; it is reported. ``--memory`` prints each network's peak memory of one
step per batch size (CUDA: ``max_memory_allocated``; CPU: the growth of the process's peak resident size over the
built model), with and without activation checkpointing (``with_cp``) where the backbone offers it.

    python bench/train_step.py                      # CPU defaults: batch 2, 8x112x112 (SlowFast 32 frames)
    python bench/train_step.py --device cuda --batch 16 --size 224 --models slowfast50_8x8
    python bench/train_step.py --memory --batches 1 2 4
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# switch name -> the config's setting; ``cudagraphs`` is the compile switch's 'reduce-overhead' mode
SWITCHES = {"channels_last": {"channels_last": True}, "bf16": {"bf16": True}, "compile": {"compile": True},
            "cudagraphs": {"compile": "reduce-overhead"}}
MODELS = ("csn50_ir", "r2plus1d34", "slowfast50_4x16", "slowfast50_8x8", "slowonly50", "x3d_s")


def clip_frames(name: str, frames: int) -> int:
    """SlowFast takes 4x the frames (its fast pathway's), as in the seed's 32-frame configs."""
    return frames * 4 if name.startswith("slowfast") else frames


def build_trainer(name: str, switch: str | None, device: str, with_cp: bool = False):
    import torch

    from sts3d.engine.distributed import DistContext
    from sts3d.engine.video_train import Precision, Trainer, build_optimizer, prepare_model
    from sts3d.models import create_recognizer

    cfg = {"optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4},
           "optimizer_config": {"grad_clip": {"max_norm": 40, "norm_type": 2}}}
    if switch:
        cfg.update(SWITCHES[switch])
    ctx = DistContext(device=torch.device(device))
    overrides = {"with_cp": True} if with_cp else {}
    model = create_recognizer(name, num_classes=400, sts=True, **overrides)
    precision = Precision.from_config(cfg, ctx.device)
    step_model, channels_last = prepare_model(model, cfg, ctx, precision)
    optimizer = build_optimizer(cfg, model)
    return Trainer(cfg, ctx, model, step_model, optimizer, None, precision, precision.scaler(ctx.device),
                   {"max_norm": 40.0, "norm_type": 2.0}, None,
                   channels_last)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def child_speed(args: argparse.Namespace) -> dict:
    """Eager float32 against ``args.switch``, interleaved; seconds per step (medians) and the first-step time."""
    import torch

    torch.manual_seed(0)
    trainers = {"eager": build_trainer(args.model, None, args.device), args.switch:
                build_trainer(args.model, args.switch, args.device)}
    t = clip_frames(args.model, args.frames)
    clips = torch.randn(args.batch, 1, 3, t, args.size, args.size)
    labels = torch.randint(400, (args.batch,), device=args.device)
    first = {}
    for key, trainer in trainers.items():  # warm-up: compilation, cuDNN autotuning, allocator
        start = time.perf_counter()
        trainer.step(trainer.to_device(clips), labels)
        _sync(args.device)
        first[key] = time.perf_counter() - start
    times = {key: [] for key in trainers}
    for _ in range(args.rounds):
        for key, trainer in trainers.items():
            device_clips = trainer.to_device(clips)
            _sync(args.device)
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.step(device_clips, labels)
            _sync(args.device)
            times[key].append((time.perf_counter() - start) / args.steps)
    return {"median": {k: statistics.median(v) for k, v in times.items()}, "first_step": first}


def child_memory(args: argparse.Namespace) -> dict:
    """Peak memory (MiB) of one training step, over the memory of the built model. On CUDA one child measures every
    ``(batch, with_cp)`` of ``--batches`` (the peak counter resets); on the CPU the peak resident size cannot, so
    each child measures ``--batch`` and ``--with-cp`` alone."""
    import torch

    def step(batch: int, with_cp: bool) -> float:
        """MiB the step took over the built model."""
        trainer = build_trainer(args.model, None, args.device, with_cp=with_cp)
        clips = torch.randn(batch, 1, 3, clip_frames(args.model, args.frames), args.size, args.size)
        labels = torch.randint(400, (batch,), device=args.device)
        if args.device != "cuda":
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            trainer.step(trainer.to_device(clips), labels)
            return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        trainer.step(trainer.to_device(clips), labels)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20

    if args.device != "cuda":
        return {"peak_mib": step(args.batch, args.with_cp)}
    peaks = {}
    for batch in args.batches:
        for with_cp in (False, True):
            torch.cuda.empty_cache()
            try:
                peaks[f"{batch} {int(with_cp)}"] = step(batch, with_cp)
            except torch.OutOfMemoryError:
                peaks[f"{batch} {int(with_cp)}"] = None
    return {"peaks_mib": peaks}


def run_child(argv: list[str], threads: int) -> tuple[dict | None, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"crashed (exit {result.returncode}): {last[:120]}"
    return json.loads(result.stdout.strip().splitlines()[-1]), ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--switches", nargs="+", default=["channels_last", "bf16", "compile"],
                        choices=list(SWITCHES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8, help="clip length (SlowFast: 4x this)")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per child (CPU)")
    parser.add_argument("--memory", action="store_true", help="peak memory per step instead of speed")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4], help="batch sizes for --memory")
    parser.add_argument("--child", choices=["speed", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--switch", help=argparse.SUPPRESS)
    parser.add_argument("--with-cp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps((child_speed if args.child == "speed" else child_memory)(args)))
        return
    common = ["--device", args.device, "--frames", str(args.frames), "--size", str(args.size),
              "--threads", str(args.threads)]
    import torch

    print(f"torch {torch.__version__}, device {args.device}, {args.threads} threads per run, "
          f"{os.cpu_count()} CPUs; clips {args.frames}x{args.size}x{args.size} (SlowFast {4 * args.frames} frames)")
    if args.memory:
        print(f"\npeak memory of one training step (MiB over the built model), STS on; batch sizes {args.batches}")
        print(f"{'model':<17}" + "".join(f"{f'b{b}':>10}{f'b{b} cp':>10}" for b in args.batches))
        for name in args.models:
            cells = []
            if args.device == "cuda":  # one child for the model's every cell (counts over the built model each)
                result, error = run_child(["--child", "memory", "--model", name, "--batches",
                                           *map(str, args.batches), *common], args.threads)
                peaks = result["peaks_mib"] if result else {}
                for batch in args.batches:
                    for cp in (0, 1):
                        peak = peaks.get(f"{batch} {cp}")
                        cells.append(f"{peak:>10.0f}" if peak is not None else f"{'OOM' if result else 'n/a':>10}")
            else:
                for batch in args.batches:
                    for cp in (False, True):
                        result, error = run_child(["--child", "memory", "--model", name, "--batch", str(batch),
                                                   *(["--with-cp"] if cp else []), *common], args.threads)
                        cells.append(f"{result['peak_mib']:>10.0f}" if result else f"{'n/a':>10}")
            print(f"{name:<17}" + "".join(cells), flush=True)
        return
    print(f"batch {args.batch}; {args.rounds} interleaved rounds of {args.steps} steps; clips/s, and speed-up "
          "over eager float32 measured in the same process\n")
    print(f"{'model':<17}{'switch':<15}{'eager clips/s':>14}{'switch clips/s':>16}{'speed-up':>10}{'1st step s':>12}")
    for name in args.models:
        for switch in args.switches:
            result, error = run_child(["--child", "speed", "--model", name, "--switch", switch, "--batch",
                                       str(args.batch), "--rounds", str(args.rounds), "--steps", str(args.steps),
                                       *common], args.threads)
            if result is None:
                print(f"{name:<17}{switch:<15}{error}", flush=True)
                continue
            eager, fast = result["median"]["eager"], result["median"][switch]
            print(f"{name:<17}{switch:<15}{args.batch / eager:>14.2f}{args.batch / fast:>16.2f}"
                  f"{eager / fast:>9.2f}x{result['first_step'][switch]:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
