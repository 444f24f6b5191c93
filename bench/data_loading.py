"""Training clips/s and multi-view test videos/s of one data-loader worker, against the plain decord baseline.

Under the rules of ``../shared/bench-videos/README.md``: one decoder thread and one torch (and OpenCV) thread; a fresh
reader per clip; a random start per clip; the variants interleaved in one process (each clip's turn rotates the
order) and given the same start, so background load and keyframe distances hit all of them alike. Train clips are
32x2 with the train transforms; figures are the mean over ``--clips`` clips per video (clips/s = clips / total s).

Variants: the README's baseline (decord ``get_batch``, crop and resize each frame, flip); this project's loader
(``VideoDataset.load``: decode, crop + resize, flip, normalise to float) with each decoder, and as the fine-tuning
engine's workers run it (``normalize=False``: the same pixels as uint8, like the baseline's output; the engine
normalises on the device, ``data.normalize_on_device``); the opt-in multi-clip mode
(4 clips per decode); the decode floor (PyAV from the keyframe before the clip to its last frame, no RGB, packets
demuxed beforehand: the README's limit) and the same with unrequested non-reference frames skipped (the pyav reader's
decoding work alone). Test: 10 clips x ThreeCrop 256 at short side 256, every view from one decode against each
view decoding its own clip.

    python bench/data_loading.py [--clips 20] [--test-videos 2] [--quick]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import av
import cv2
import decord
import numpy as np
import torch

from sts3d.data.sampling import sample_frame_indices
from sts3d.data.transforms import crop_frames, random_resized_crop_box, resize_frames, short_side_size, three_crop_boxes
from sts3d.data.video import ClipSettings, VideoDataset, VideoRecord, open_video, read_frames, to_tensor

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "bench-videos"
CLIP_LEN, INTERVAL = 32, 2


def baseline(path: Path, rng: np.random.Generator) -> np.ndarray:
    """The README's plain decord loader: ``(32, 224, 224, 3)`` uint8."""
    reader = decord.VideoReader(str(path), num_threads=1)
    indices = sample_frame_indices(len(reader), CLIP_LEN, INTERVAL, rng=rng)
    frames = reader.get_batch(list(indices)).asnumpy()
    x1, y1, x2, y2 = random_resized_crop_box(frames.shape[1:3], rng)
    clip = np.stack([cv2.resize(f[y1:y2, x1:x2], (224, 224), interpolation=cv2.INTER_LINEAR) for f in frames])
    return clip[:, :, ::-1] if rng.random() < 0.5 else clip


def decode_floor(path: Path, rng: np.random.Generator, skip_nonref: bool) -> float:
    """Seconds to decode the clip's frames with PyAV on one thread, without RGB conversion: the packets from the
    keyframe before the clip to its last frame, then a flush. Opening and demuxing are not counted."""
    container = av.open(str(path))
    stream = container.streams.video[0]
    stream.thread_type, stream.codec_context.thread_count = "NONE", 1
    packets = [p for p in container.demux(stream) if p.size > 0 and p.pts is not None]
    pts = np.sort([p.pts for p in packets])
    wanted = set(pts[sample_frame_indices(len(packets), CLIP_LEN, INTERVAL, rng=rng)].tolist())
    positions = [k for k, p in enumerate(packets) if p.pts in wanted]
    first_pts = min(wanted)
    start = max(k for k, p in enumerate(packets[:positions[0] + 1]) if p.is_keyframe and p.pts <= first_pts)
    codec = stream.codec_context
    begin = time.perf_counter()
    for packet in packets[start:positions[-1] + 1]:
        codec.skip_frame = "NONREF" if skip_nonref and packet.pts not in wanted else "DEFAULT"
        codec.decode(packet)
    codec.decode(None)
    seconds = time.perf_counter() - begin
    container.close()
    return seconds


def per_view_test(path: Path, decoder: str) -> torch.Tensor:
    """Multi-view test where each of the 30 views decodes its own clip (a fresh reader per view)."""
    views = []
    for box_number in range(3):
        for clip in range(10):
            reader = open_video(path, decoder)
            indices = sample_frame_indices(len(reader), CLIP_LEN, INTERVAL, 10, test_mode=True)
            frames = read_frames(reader, indices.reshape(10, CLIP_LEN)[clip])
            frames = resize_frames(frames, short_side_size(*frames.shape[1:3], 256))
            box = three_crop_boxes(frames.shape[1:3], 256)[box_number]
            views.append(to_tensor(crop_frames(frames, box), CLIP_LEN))
    return torch.cat(views)


def interleaved(variants: dict[str, Callable[[np.random.Generator], float]], rounds: int) -> dict[str, float]:
    """Total seconds of each variant over ``rounds``; round ``i`` gives every variant the seed ``i`` (the same
    start and crop) and rotates their order. A variant may return its own timing (the floor), else it is timed."""
    names, totals = list(variants), dict.fromkeys(variants, 0.0)
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            begin = time.perf_counter()
            result = variants[name](np.random.default_rng(i))
            totals[name] += result if isinstance(result, float) else time.perf_counter() - begin
    return totals


def torchcodec_available(path: Path) -> bool:
    try:
        open_video(path, "torchcodec")
        return True
    except Exception as error:  # missing package or FFmpeg libraries
        print(f"torchcodec unavailable: {str(error).strip().splitlines()[0]}")
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=20, help="train clips per video and variant")
    parser.add_argument("--test-videos", type=int, default=2, help="multi-view test videos per variant (0: none)")
    parser.add_argument("--quick", action="store_true", help="5 clips and 1 test video: a smoke run")
    parser.add_argument("--videos", type=Path, default=VIDEOS)
    args = parser.parse_args()
    if args.quick:
        args.clips, args.test_videos = 5, 1
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    paths = sorted(args.videos.glob("*.mp4"))
    decoders = ["decord", "pyav"] + (["torchcodec"] if torchcodec_available(paths[0]) else [])
    train = ClipSettings(clip_len=CLIP_LEN, frame_interval=INTERVAL)
    multi = ClipSettings(clip_len=CLIP_LEN, frame_interval=INTERVAL, clips_per_decode=4)
    print(f"torch {torch.__version__}, 1 torch / OpenCV / decoder thread; {args.clips} train clips 32x2 per video, "
          f"interleaved; clips/s of one worker (ratio to the baseline)")
    for path in paths:
        record = VideoRecord(path, 0, path.name)
        variants: dict[str, Callable[[np.random.Generator], float]] = {
            "baseline (decord get_batch + crop/resize)": lambda rng: baseline(path, rng)}
        for decoder in decoders:
            data = VideoDataset([record], train, decoder=decoder)
            variants[f"loader, {decoder}"] = lambda rng, data=data: data.load(record, rng)
        for decoder in ("decord", "pyav"):  # what the engine's workers do: the same pixels, normalised on the device
            data = VideoDataset([record], train, decoder=decoder, normalize=False)
            variants[f"loader, {decoder}, uint8 (engine default)"] = lambda rng, data=data: data.load(record, rng)
        for decoder in ("decord", "pyav"):
            data = VideoDataset([record], multi, decoder=decoder)
            variants[f"loader, {decoder}, 4 clips per decode (opt-in)"] = lambda rng, data=data: data.load(record, rng)
        variants["decode floor (keyframe..clip end, no RGB)"] = lambda rng: decode_floor(path, rng, False)
        variants["decode floor, non-ref frames skipped"] = lambda rng: decode_floor(path, rng, True)
        totals = interleaved(variants, args.clips)
        base = args.clips / totals[next(iter(variants))]
        print(f"\n{path.name}")
        for name, seconds in totals.items():
            clips = args.clips * (4 if "4 clips" in name else 1)
            print(f"  {name:55s} {clips / seconds:6.2f} clips/s  ({clips / seconds / base:.2f}x)")
        loader = args.clips / totals["loader, pyav, uint8 (engine default)"] / base
        floor = args.clips / totals["decode floor, non-ref frames skipped"] / base
        print(f"  target 1.5x: the loader (pyav, uint8) {loader:.2f}x, {'met' if loader >= 1.5 else 'not met'}; "
              f"{loader / floor:.0%} of its decoding floor, which is {floor:.2f}x"
              + ("" if floor >= 1.5 else " (under 1.5x: out of reach of a loader giving the same frames)"))
    if args.test_videos <= 0:
        return
    print(f"\nmulti-view test (10 clips x 3 crops, 32x2, short side 256, ThreeCrop 256), {args.test_videos} videos "
          f"per variant, interleaved; videos/s")
    test = ClipSettings(clip_len=CLIP_LEN, frame_interval=INTERVAL, num_clips=10, crop_size=256, test_crop="three")
    for path in paths:
        record = VideoRecord(path, 0, path.name)
        variants = {}
        for decoder in ("decord", "pyav"):
            data = VideoDataset([record], test, test_mode=True, decoder=decoder)
            variants[f"one decode for all views, {decoder}"] = lambda rng, data=data: data.load(record, rng)
            variants[f"a decode per view, {decoder}"] = lambda rng, decoder=decoder: per_view_test(path, decoder)
        totals = interleaved(variants, args.test_videos)
        base = args.test_videos / totals["a decode per view, decord"]
        print(f"\n{path.name}")
        for name, seconds in totals.items():
            rate = args.test_videos / seconds
            print(f"  {name:55s} {rate:6.3f} videos/s  ({rate / base:.2f}x)")


if __name__ == "__main__":
    main()
