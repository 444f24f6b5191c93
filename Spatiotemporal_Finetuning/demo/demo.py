#!/usr/bin/env python
"""Classify one video with a fine-tuned recognizer:
``python demo/demo.py VIDEO CONFIG CHECKPOINT [--label-map FILE] [--top-k 5] [--out-image strip.png]
[--device cpu] [--cfg-options k=v ...]``.

The video is read as the config's test pipeline says (its clips and crops), every view goes through the network
and the softmax scores are averaged; the top-k classes are printed, named from ``--label-map`` (one name per line,
line index = label) or else by their ids. ``--out-image`` writes a PNG strip of the frames of the first sampled
clip, titled with the predictions. A missing or undecodable video, or a checkpoint that does not fit the config's
model, ends with one ``error: ...`` line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

try:
    import sts3d  # noqa: F401  (installed with pip install -e .)
except ImportError:  # a checkout that was not installed: use the library beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch

from sts3d.checkpoint import CheckpointError
from sts3d.config import ConfigError, load_config
from sts3d.data.pipeline import PipelineError, clip_settings, num_segments
from sts3d.data.sampling import sample_frame_indices
from sts3d.data.video import VideoDataset, VideoRecord, open_video, read_frames
from sts3d.engine.video_test import load_for_test, video_scores
from sts3d.models.builder import build_recognizer


class DemoError(Exception):
    """What the user must fix; printed as one line."""


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Classify one video with a fine-tuned recognizer.")
    parser.add_argument("video", type=Path, help="video file")
    parser.add_argument("config", help="the config the checkpoint was trained with (.py)")
    parser.add_argument("checkpoint", help="fine-tuned checkpoint (tools/train.py's epoch_<n>.pth, ...)")
    parser.add_argument("--label-map", type=Path, help="class names, one per line (line index = label)")
    parser.add_argument("--top-k", type=int, default=5, help="how many classes to print (default: %(default)s)")
    parser.add_argument("--out-image", type=Path, help="write a PNG strip of sampled frames with the predictions")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config settings, as tools/test.py does")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    return args


def class_names(label_map: Optional[Path], num_classes: int) -> list[str]:
    if label_map is None:
        return [str(i) for i in range(num_classes)]
    if not label_map.is_file():
        raise DemoError(f"{label_map}: label map not found")
    names = [line.strip() for line in label_map.read_text().splitlines() if line.strip()]
    if len(names) != num_classes:
        raise DemoError(f"{label_map} names {len(names)} classes, the model has {num_classes}")
    return names


def read_views(video: Path, pipeline: list, decoder: str) -> torch.Tensor:
    """All test views ``(V, 3, T, S, S)`` of ``video``, as ``tools/test.py`` builds them."""
    settings, _ = clip_settings(pipeline, "data.test.pipeline")
    dataset = VideoDataset([VideoRecord(video, 0, "command line")], settings, test_mode=True, decoder=decoder)
    try:
        return dataset.load(dataset.records[0], np.random.default_rng(0))
    except Exception as error:  # decoders raise many kinds; any of them means this file cannot be used
        raise DemoError(f"cannot read video {video}: {error}") from error


def first_clip_frames(video: Path, pipeline: list, decoder: str) -> np.ndarray:
    """The raw RGB frames ``(T, H, W, 3)`` of the first clip the test pipeline samples."""
    settings, _ = clip_settings(pipeline, "data.test.pipeline")
    reader = open_video(video, decoder)
    indices = sample_frame_indices(len(reader), settings.clip_len, settings.frame_interval, settings.num_clips,
                                   test_mode=True)
    return read_frames(reader, indices[:settings.clip_len])


def save_strip(frames: np.ndarray, title: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.6 * len(frames), 2.2))
    for i, (ax, frame) in enumerate(zip(fig.subplots(1, len(frames), squeeze=False)[0], frames)):
        ax.imshow(frame)
        ax.set_axis_off()
        ax.set_title(f"frame {i + 1}", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def run(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.cfg_options)
    test = cfg["data"]["test"]
    decoder = cfg["data"].get("decoder", "decord")
    num_classes = int(cfg["model"]["cls_head"]["num_classes"])
    names = class_names(args.label_map, num_classes)
    if not args.video.is_file():
        raise DemoError(f"{args.video}: no such video")
    views = read_views(args.video, test["pipeline"], decoder)
    model = build_recognizer({**cfg["model"], "num_segments": num_segments(test["pipeline"])})
    load_for_test(model, args.checkpoint)
    model.to(args.device).eval()
    max_views = (cfg["model"].get("test_cfg") or {}).get("max_testing_views")
    scores = video_scores(model, views, max_views, "prob")
    top = torch.topk(scores, min(args.top_k, num_classes))
    print(f"{args.video}: {len(views)} views")
    for rank, (score, label) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        print(f"{rank:>2}. {names[label]:<30} {score:.4f}")
    if args.out_image:
        best = ", ".join(f"{names[i]} {s:.2f}" for s, i in zip(top.values.tolist()[:3], top.indices.tolist()[:3]))
        save_strip(first_clip_frames(args.video, test["pipeline"], decoder), f"{args.video.name}: {best}",
                   args.out_image)
        print(f"wrote {args.out_image}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (DemoError, ConfigError, PipelineError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
