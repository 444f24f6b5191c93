#!/usr/bin/env python
"""Classify one video with a fine-tuned recognizer:
``python demo/demo.py VIDEO CONFIG CHECKPOINT [--label-map FILE] [--top-k 5] [--out-image strip.png]
[--out-filename labelled.mp4] [--device cuda:0] [--float32] [--cfg-options k=v ...]``, or in mmaction's order,
``python demo/demo.py CONFIG CHECKPOINT VIDEO [LABEL_FILE] [--out-filename out.mp4] [--fps 30] [--font-scale 0.5]
[--font-color white] [--target-resolution W H] [--resize-algorithm bicubic]``.

The video is read as the config's test pipeline says (its clips and crops), every view goes through the network
and the softmax scores are averaged; the top-k classes are printed, named from the label map (one name per line,
line index = label) or else by their ids. ``--out-image`` writes a PNG strip of the frames of the first sampled
clip, titled with the predictions; ``--out-filename`` writes the whole video (.mp4, H.264, or .gif) with the top
class drawn on every frame, as mmaction's demo did. A missing or undecodable video, or a checkpoint that does not
fit the config's model, ends with one ``error: ...`` line on stderr and exit status 2.
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

import cv2
import numpy as np
import torch

from sts3d.checkpoint import CheckpointError
from sts3d.config import ConfigError, load_config
from sts3d.data.pipeline import PipelineError, clip_settings, num_segments
from sts3d.data.sampling import sample_frame_indices
from sts3d.data.synthetic import write_mp4
from sts3d.data.video import VideoDataset, VideoRecord, open_video, read_frames
from sts3d.engine.video_test import autocast_for_testing, load_for_test, video_scores
from sts3d.models.builder import build_recognizer


class DemoError(Exception):
    """What the user must fix; printed as one line."""


# mmcv's colour names, as RGB
FONT_COLORS = {"white": (255, 255, 255), "black": (0, 0, 0), "red": (255, 0, 0), "green": (0, 255, 0),
               "blue": (0, 0, 255), "cyan": (0, 255, 255), "yellow": (255, 255, 0), "magenta": (255, 0, 255)}
RESIZE_ALGORITHMS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
                     "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Classify one video with a fine-tuned recognizer.",
                                     allow_abbrev=False)
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="VIDEO CONFIG CHECKPOINT, or mmaction's order CONFIG CHECKPOINT VIDEO [LABEL_FILE] "
                             "(told apart by the config's .py)")
    parser.add_argument("--label-map", type=Path, help="class names, one per line (line index = label)")
    parser.add_argument("--top-k", type=int, default=5, help="how many classes to print (default: %(default)s)")
    parser.add_argument("--out-image", type=Path, help="write a PNG strip of sampled frames with the predictions")
    parser.add_argument("--out-filename", type=Path,
                        help="write the video with the top class drawn on it (.mp4 or .gif)")
    parser.add_argument("--fps", type=int, default=30, help="frame rate of --out-filename (default: %(default)s)")
    parser.add_argument("--font-scale", type=float, default=0.5, help="label size on --out-filename frames")
    parser.add_argument("--font-color", default="white", choices=sorted(FONT_COLORS), help="label colour")
    parser.add_argument("--target-resolution", type=int, nargs=2, metavar=("W", "H"),
                        help="resize --out-filename frames (-1 for one side keeps the aspect ratio)")
    parser.add_argument("--resize-algorithm", default="bicubic", choices=sorted(RESIZE_ALGORITHMS),
                        help="interpolation for --target-resolution (default: %(default)s)")
    parser.add_argument("--use-frames", action="store_true", help=argparse.SUPPRESS)  # mmaction's rawframes input
    # mmaction's demo defaulted to cuda:0; a machine without a GPU still runs it, on the CPU
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda:0 when a GPU is there, else cpu)")
    parser.add_argument("--float32", action="store_true",
                        help="score in float32 on a GPU (the seed's test forwards ran in fp16 autocast there)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config settings, as tools/test.py does")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.use_frames:
        parser.error("--use-frames: rawframe folders are not supported; give the video file")
    inputs = args.inputs
    if inputs[0].endswith(".py") and len(inputs) in (3, 4):  # mmaction: CONFIG CHECKPOINT VIDEO [LABEL_FILE]
        args.config, args.checkpoint, video = inputs[:3]
        if len(inputs) == 4:
            if args.label_map is not None:
                parser.error("give the label map once: as LABEL_FILE or --label-map")
            args.label_map = Path(inputs[3])
    elif len(inputs) == 3:
        video, args.config, args.checkpoint = inputs
    else:
        parser.error("expected VIDEO CONFIG CHECKPOINT or CONFIG CHECKPOINT VIDEO [LABEL_FILE]")
    args.video = Path(video)
    if args.out_filename is not None and args.out_filename.suffix.lower() not in (".mp4", ".gif"):
        parser.error(f"--out-filename {args.out_filename}: write .mp4 or .gif")
    target = args.target_resolution
    if target is not None and (target == [-1, -1] or min(target) < -1 or 0 in target):
        parser.error(f"--target-resolution {target[0]} {target[1]}: give W H, -1 for at most one of them")
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


def output_size(width: int, height: int, target: Optional[Sequence[int]]) -> tuple[int, int]:
    """``(w, h)`` of the labelled video: ``target`` with -1 for a side that keeps the aspect ratio, rounded down to
    even sizes (H.264's 4:2:0 needs them)."""
    w, h = width, height
    if target is not None:
        tw, th = target
        w, h = (tw, round(height * tw / width)) if th == -1 else (round(width * th / height), th) if tw == -1 \
            else (tw, th)
    return max(2, w - w % 2), max(2, h - h % 2)


def write_labelled_video(video: Path, decoder: str, label: str, args: argparse.Namespace) -> None:
    """Every frame of ``video``, resized as ``--target-resolution`` says, with ``label`` drawn at the top left, to
    ``--out-filename`` at ``--fps``."""
    reader = open_video(video, decoder)
    frames = reader.get(list(range(len(reader))))
    w, h = output_size(frames.shape[2], frames.shape[1], args.target_resolution)
    text_h = cv2.getTextSize(label, cv2.FONT_HERSHEY_DUPLEX, args.font_scale, 1)[0][1]
    labelled = np.empty((len(frames), h, w, 3), dtype=np.uint8)
    for frame, out in zip(frames, labelled):
        resized = cv2.resize(frame, (w, h), interpolation=RESIZE_ALGORITHMS[args.resize_algorithm]) \
            if frame.shape[:2] != (h, w) else frame
        out[:] = resized
        cv2.putText(out, label, (10, 10 + text_h), cv2.FONT_HERSHEY_DUPLEX, args.font_scale,
                    FONT_COLORS[args.font_color], 1, cv2.LINE_AA)
    args.out_filename.parent.mkdir(parents=True, exist_ok=True)
    if args.out_filename.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in labelled]
        images[0].save(args.out_filename, save_all=True, append_images=images[1:], duration=1000 / args.fps,
                       loop=0)
    else:
        write_mp4(args.out_filename, labelled, fps=args.fps)


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
    autocast = autocast_for_testing(cfg, torch.device(args.device), args.float32)
    scores = video_scores(model, views, max_views, "prob", autocast)
    top = torch.topk(scores, min(args.top_k, num_classes))
    print(f"{args.video}: {len(views)} views")
    for rank, (score, label) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        print(f"{rank:>2}. {names[label]:<30} {score:.4f}")
    if args.out_image:
        best = ", ".join(f"{names[i]} {s:.2f}" for s, i in zip(top.values.tolist()[:3], top.indices.tolist()[:3]))
        save_strip(first_clip_frames(args.video, test["pipeline"], decoder), f"{args.video.name}: {best}",
                   args.out_image)
        print(f"wrote {args.out_image}")
    if args.out_filename:
        write_labelled_video(args.video, decoder, names[int(top.indices[0])], args)
        print(f"wrote {args.out_filename}")


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
