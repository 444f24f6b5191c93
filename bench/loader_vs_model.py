"""Does the data loader keep up with the model? Loader clips/s per worker over model clips/s, for the 32-frame configs.

The seed notes that its 32-frame Kinetics configs were CPU-bound: decoding and augmenting 32x2 clips could not feed
the GPUs. For each config this script measures, in one process:

* the loader: clips/s of one worker (one torch, OpenCV and decoder thread, as a DataLoader worker runs) producing
  the config's training clips (its ``data.train.pipeline``: 32x2 sampling, short side 256, RandomResizedCrop 224,
  flip, normalisation) from the two videos of ``../shared/bench-videos/`` (Kinetics-like, short side 320), with
  each decoder asked for;
* the model: clips/s of the fine-tuning step the engine runs for that config (its ``model``, SGD, gradient
  clipping; STS on), at the config's clip shape, ``--batch`` clips a step, on ``--device``.

It prints ``loader / model`` (above 1: one worker keeps up) and the workers needed, against the config's
``workers_per_gpu``. On a CPU-only machine the model is the slow side by far; the figure that matters is on a GPU:

    python bench/loader_vs_model.py                                  # CPU: batch 1, 2 model threads
    python bench/loader_vs_model.py --device cuda --batch 16         # a GPU at the configs' batch
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import torch

from sts3d.config import load_config
from sts3d.data.pipeline import build_dataset
from sts3d.engine.distributed import DistContext
from sts3d.engine.video_train import Precision, Trainer, build_optimizer, prepare_model
from sts3d.models.builder import build_recognizer

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "Spatiotemporal_Finetuning" / "configs" / "recognition"
THIRTY_TWO_FRAME = ("csn/ircsn50_32x2_STS_k400_video.py", "slowfast/slowfast50_4x16_32x2_STS_k400_video.py",
                    "slowfast/slowfast50_8x8_32x2_STS_k400_video.py")
VIDEOS = REPO.parent / "shared" / "bench-videos"


def loader_speed(cfg, decoder: str, clips: int, ann_file: Path) -> float:
    """Clips/s of one worker making the config's training clips (1 torch, OpenCV and decoder thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        split = dict(cfg.data.train, ann_file=str(ann_file), data_prefix=str(VIDEOS))
        dataset = build_dataset(split, "train", None, decoder=decoder, seed=0)
        dataset[0]  # first-call costs (imports, codec set-up)
        start = time.perf_counter()
        for index in range(clips):
            clip, _, skipped = dataset[index % len(dataset)]
            if skipped:
                raise RuntimeError(f"{decoder}: a benchmark video was skipped")
        return clips / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def model_speed(cfg, device: str, batch: int, steps: int) -> tuple[float, tuple[int, ...]]:
    """Clips/s of the engine's training step for the config's model; also the clip shape ``(C, T, H, W)``."""
    torch.manual_seed(0)
    ctx = DistContext(device=torch.device(device))
    model = build_recognizer(cfg.model)
    precision = Precision.from_config(cfg, ctx.device)
    step_model, channels_last = prepare_model(model, cfg, ctx, precision)
    trainer = Trainer(cfg, ctx, model, step_model, build_optimizer(cfg, model), None, precision,
                      precision.scaler(ctx.device), {"max_norm": 40.0, "norm_type": 2.0}, None,
                      channels_last)
    clip_len = next(s for s in cfg.data.train.pipeline if s["type"] == "SampleFrames")["clip_len"]
    shape = (3, clip_len, 224, 224)
    clips = trainer.to_device(torch.randn(batch, 1, *shape))
    labels = torch.randint(cfg.model.cls_head.num_classes, (batch,), device=device)
    trainer.step(clips, labels)  # warm-up: allocator, cuDNN autotuning
    times = []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.step(clips, labels)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times), shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(THIRTY_TWO_FRAME),
                        help="paths under configs/recognition/ (default: the three 32-frame K400 configs)")
    parser.add_argument("--decoders", nargs="+", default=["decord", "pyav"])
    parser.add_argument("--clips", type=int, default=12, help="loader clips timed per decoder")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=1, help="clips per model step")
    parser.add_argument("--steps", type=int, default=3, help="model steps timed (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the model step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    videos = sorted(VIDEOS.glob("*.mp4"))
    if not videos:
        raise SystemExit(f"error: no benchmark videos in {VIDEOS}")
    with tempfile.TemporaryDirectory() as tmp:
        ann_file = Path(tmp) / "bench.txt"
        ann_file.write_text("".join(f"{v.name} 0\n" for v in videos))
        print(f"device={args.device} batch={args.batch} model threads={args.threads} loader: 1 thread, "
              f"{args.clips} clips from {', '.join(v.name for v in videos)}; torch={torch.__version__}")
        print(f"{'config':<48}{'model clips/s':>14}{'decoder':>10}{'loader clips/s':>16}{'loader/model':>14}"
              f"{'workers needed':>16}{'config workers':>16}")
        for name in args.configs:
            cfg = load_config(CONFIGS / name)
            model_rate, shape = model_speed(cfg, args.device, args.batch, args.steps)
            for decoder in args.decoders:
                rate = loader_speed(cfg, decoder, args.clips, ann_file)
                print(f"{name:<48}{model_rate:>14.3f}{decoder:>10}{rate:>16.2f}{rate / model_rate:>14.1f}"
                      f"{math.ceil(model_rate / rate):>16}{cfg.data.workers_per_gpu:>16}", flush=True)


if __name__ == "__main__":
    main()
