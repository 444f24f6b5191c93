"""The embedded default data: synthetic shape images (stage 1) and shape-motion videos (stage 2).

Both sets are drawn by the same renderer, so image pre-training has something to give the video task: light
shapes of a random hue (circle, square, triangle, cross, star, ring, bar, crescent) on dark, muted, textured
backgrounds, with pixel noise and a few small distractor blobs.

* **images** (``write_image_dataset``): one class per shape, each drawn with a random colour, size, position and
  rotation. ImageNet layout: ``OUT/train/<class>/<i>.png``, ``OUT/val/<class>/<i>.png``; the class folders
  are named ``00_circle``, ``01_square``, ... so that ``torchvision.datasets.ImageFolder``'s alphabetical order
  is the label order, also written to ``OUT/label_map.txt``.
* **videos** (``write_video_dataset``): one class per (shape, direction), e.g. ``circle_top_to_bottom`` and
  ``circle_bottom_to_top``; label ``shape_index * directions + direction_index``. A clip of the second direction
  is an exact time reversal of a clip drawn for the first, so the two classes of a shape have the same
  distribution of single frames: a model that ignores frame order is at chance (50 %) within a shape and must
  model time to tell them apart. On top: random start position, travel, speed profile, sideways drift, spin,
  colour, size, background texture, a small camera pan, distractor blobs moving anywhere, and pixel noise.
  The default two directions are down and up, which survive horizontal flips and crops; ``directions=4`` adds
  left to right and right to left, which a horizontal flip swaps (train those without flipping).
  H.264 (yuv420p) mp4 files written with PyAV under ``OUT/videos/<split>/<class>/<i>.mp4``; annotation lists
  ``OUT/train.txt`` and ``OUT/val.txt`` in the seed's format (``train/<class>/<i>.mp4 <label>``, paths relative
  to the data prefix ``OUT/videos``), and ``OUT/label_map.txt`` (line index = label).

Every sample has its own random generator seeded by ``(seed, set, split, label, index)``, so a set is the same for
a seed whatever the number of worker processes. A set is built in a hidden sibling directory and moved into place
when complete, with ``OUT/synthetic.json`` recording its settings; asking again for the same settings is a no-op,
asking for other settings (or finding a directory without the manifest) rebuilds it from clean.

Frame sizes: even (yuv420p), and not 16, 24, 48 or 72, widths that decord 0.6 misreads (checked on the first
video written). The defaults (96 px, 16 frames) leave the loader room to crop and rescale, e.g. to 64 px x 8 frames.

Command line::

    python -m sts3d.data.synthetic images OUT [--classes 6] [--train-per-class 200] [--val-per-class 50] \\
        [--size 96] [--seed 0] [--workers N]
    python -m sts3d.data.synthetic videos OUT [--shapes 4] [--directions 2] [--train-per-class 40] \\
        [--val-per-class 10] [--frames 16] [--size 96] [--fps 8] [--seed 0] [--workers N]
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES", "DIRECTIONS", "MANIFEST", "image_class_names", "video_class_names", "render_image", "render_video",
    "write_image_dataset", "write_video_dataset", "read_manifest", "main",
]

SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "bar", "crescent")
# Up and down first: a horizontal flip (the usual video augmentation) keeps them; it swaps left and right, so
# training on 4 directions needs the flip off (or a label swap).
DIRECTIONS = ("top_to_bottom", "bottom_to_top", "left_to_right", "right_to_left")
MANIFEST = "synthetic.json"
FORMAT_VERSION = 1   # bump when the drawing changes: sets written by another version are rebuilt
SPLITS = ("train", "val")

# What a directory may hold to be replaced without a manifest (a build of ours that died before the move).
_OURS = {"train", "val", "videos", "train.txt", "val.txt", "label_map.txt", MANIFEST, MANIFEST + ".tmp"}
_SET_CODE = {"images": 1, "videos": 2}
_RADIUS = (0.12, 0.20)   # shape circumradius, fraction of the frame side
_TILT = math.pi          # shapes are rotated by up to this much (radians) either way
_SPIN = 0.15             # and in videos spin by up to this much per frame
_SUPERSAMPLE = 2   # shapes are drawn at twice the size and box-filtered: anti-aliased edges


# --------------------------------------------------------------------------------------------------- class names

def image_class_names(num_classes: int) -> list[str]:
    """Folder names of the image classes, in label order (also ImageFolder's alphabetical order)."""
    _check_count("num_classes", num_classes, len(SHAPES))
    return [f"{i:02d}_{name}" for i, name in enumerate(SHAPES[:num_classes])]


def video_class_names(num_shapes: int, directions: int = 2) -> list[str]:
    """Video class names in label order: ``label = shape_index * directions + direction_index``."""
    _check_count("num_shapes", num_shapes, len(SHAPES))
    if directions not in (2, 4):
        raise ValueError(f"directions must be 2 (down/up) or 4 (also left/right), got {directions}")
    return [f"{shape}_{d}" for shape in SHAPES[:num_shapes] for d in DIRECTIONS[:directions]]


def _check_count(name, value, most):
    if not isinstance(value, (int, np.integer)) or not 1 <= value <= most:
        raise ValueError(f"{name} must be an integer from 1 to {most} (shapes: {', '.join(SHAPES)}), got {value!r}")


# ------------------------------------------------------------------------------------------------------ rendering

def _rng(seed: int, kind: str, split: str, label: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SET_CODE[kind], SPLITS.index(split), int(label), int(index)])


def _hsv_to_rgb(h, s, v):
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32) * 255


def _luma(rgb):
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _background(rng, height, width):
    """A dark, muted two-colour texture with some fine grain, float32 (height, width, 3) in [0, 255]."""
    hue = rng.random()
    base = rng.uniform(0.12, 0.4)
    c1 = _hsv_to_rgb(hue, rng.uniform(0.0, 0.35), np.clip(base - rng.uniform(0.03, 0.1), 0, 1))
    c2 = _hsv_to_rgb((hue + rng.uniform(-0.2, 0.2)) % 1, rng.uniform(0.0, 0.35),
                     np.clip(base + rng.uniform(0.03, 0.1), 0, 1))
    cells = int(rng.integers(3, 8))
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    mix = np.asarray(coarse.resize((width, height), Image.BICUBIC), np.float32) / 255
    grain_cells = max(2, min(height, width) // 6)
    grain = Image.fromarray((rng.random((grain_cells, grain_cells)) * 255).astype(np.uint8))
    mix = mix + (np.asarray(grain.resize((width, height), Image.BILINEAR), np.float32) / 255 - 0.5) * 0.3
    mix = np.clip(mix, 0, 1)[..., None]
    return c1 * (1 - mix) + c2 * mix


def _object_colour(rng):
    """A random hue, lightened to a luma of 150-230: the objects stand out from the dark backgrounds.

    Luma contrast is what makes the shapes quick to learn (a 4-layer CNN at 64 px: ~95 % after 5 epochs of the
    default image set, against ~45 % with objects and backgrounds of random brightness).
    """
    colour = _hsv_to_rgb(rng.random(), rng.uniform(0.4, 0.9), 1.0)
    luma, target = _luma(colour), rng.uniform(150, 230)
    if luma < target:   # blend towards white
        a = (target - luma) / (255 - luma)
        colour = colour * (1 - a) + 255 * a
    return colour.astype(np.float32)


def _polygon(cx, cy, radii, angle, start=-math.pi / 2):
    n = len(radii)
    thetas = [start + angle + 2 * math.pi * k / n for k in range(n)]
    return [(cx + r * math.cos(t), cy + r * math.sin(t)) for r, t in zip(radii, thetas)]


def _rotated(points, cx, cy, angle):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float):
    """Draw ``shape`` (circumradius ``r``, rotated by ``angle``) filled with 255 on a mode 'L' image."""
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        inner = 0.55 * r
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    elif shape == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        ox, oy = cx + 0.5 * r * math.cos(angle), cy + 0.5 * r * math.sin(angle)
        draw.ellipse([ox - 0.85 * r, oy - 0.85 * r, ox + 0.85 * r, oy + 0.85 * r], fill=0)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, [r] * 4, angle, start=math.pi / 4), fill=255)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, [r] * 3, angle), fill=255)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [r, 0.42 * r] * 5, angle), fill=255)
    elif shape == "cross":
        a, b = r * 0.92, r * 0.3
        arms = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b),
                (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        draw.polygon(_rotated(arms, cx, cy, angle), fill=255)
    elif shape == "bar":
        a, b = r * 0.97, r * 0.3
        draw.polygon(_rotated([(-a, -b), (a, -b), (a, b), (-a, b)], cx, cy, angle), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")


def _mask(height, width, draw_fn):
    """A float32 (height, width, 1) coverage mask in [0, 1]; ``draw_fn(draw, scale)`` draws at ``scale`` times."""
    img = Image.new("L", (width * _SUPERSAMPLE, height * _SUPERSAMPLE), 0)
    draw_fn(ImageDraw.Draw(img), _SUPERSAMPLE)
    return (np.asarray(img.reduce(_SUPERSAMPLE), np.float32) / 255)[..., None]


def _composite(canvas, mask, colour, shade):
    canvas *= 1 - mask
    canvas += mask * (colour * shade)


def _finish(canvas, rng, noise):
    canvas += rng.normal(0.0, noise, canvas.shape).astype(np.float32)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def _shape_radius(rng, size):
    return rng.uniform(*_RADIUS) * size


def _blobs(rng, size, count):
    """Small distractor ellipses: centre, radii, colour, velocity (pixels per frame)."""
    out = []
    for _ in range(count):
        speed = rng.uniform(0.0, 0.03) * size
        heading = rng.uniform(0, 2 * math.pi)
        out.append(dict(x=rng.uniform(0, size), y=rng.uniform(0, size), rx=rng.uniform(0.025, 0.05) * size,
                        ry=rng.uniform(0.025, 0.05) * size, colour=_object_colour(rng) * rng.uniform(0.6, 1.0),
                        vx=speed * math.cos(heading), vy=speed * math.sin(heading)))
    return out


def _draw_blob(canvas, blob, t):
    x, y = blob["x"] + blob["vx"] * t, blob["y"] + blob["vy"] * t
    rx, ry = blob["rx"], blob["ry"]
    h, w = canvas.shape[:2]
    mask = _mask(h, w, lambda d, s: d.ellipse([(x - rx) * s, (y - ry) * s, (x + rx) * s, (y + ry) * s], fill=255))
    _composite(canvas, mask, blob["colour"], 1.0)


def render_image(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """One image of ``shape``: uint8 (size, size, 3) RGB."""
    canvas = _background(rng, size, size)
    blobs = _blobs(rng, size, int(rng.integers(0, 3)))
    for blob in blobs[: len(blobs) // 2]:   # some behind, some in front of the shape
        _draw_blob(canvas, blob, 0)
    r = _shape_radius(rng, size)
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    angle = rng.uniform(-_TILT, _TILT)
    mask = _mask(size, size, lambda d, s: _draw_shape(d, shape, cx * s, cy * s, r * s, angle))
    _composite(canvas, mask, _object_colour(rng), 1.0)
    for blob in blobs[len(blobs) // 2:]:
        _draw_blob(canvas, blob, 0)
    return _finish(canvas, rng, rng.uniform(2.0, 8.0))


def render_video(rng: np.random.Generator, shape: str, direction: str, frames: int, size: int,
                 return_track: bool = False):
    """One clip of ``shape`` moving in ``direction``: uint8 (frames, size, size, 3) RGB.

    The clip is drawn moving top to bottom (or left to right) and reversed in time for the opposite direction, so
    the two directions have the same distribution of single frames. With ``return_track`` also returns the shape's
    centre per frame, float (frames, 2) as (x, y) pixels.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; directions: {', '.join(DIRECTIONS)}")
    if frames < 2:
        raise ValueError(f"a video needs at least 2 frames, got {frames}")
    pan = 0.06 * size                      # the camera pans at most this far (pixels) over the clip
    margin = int(math.ceil(pan)) + 1
    big = _background(rng, size + 2 * margin, size + 2 * margin)
    pan_heading = rng.uniform(0, 2 * math.pi)
    pan_len = rng.uniform(0, pan)
    blobs = _blobs(rng, size, int(rng.choice([0, 1, 1, 2, 3])))
    in_front = rng.random(len(blobs)) < 0.5

    r = _shape_radius(rng, size)
    travel = rng.uniform(0.3, 0.6) * size  # along the motion axis, over the whole clip
    drift = rng.uniform(-0.1, 0.1) * size  # across it
    along = rng.uniform(r + travel / 2, size - r - travel / 2)
    across = rng.uniform(r + abs(drift) / 2, size - r - abs(drift) / 2)
    ease = rng.uniform(-0.8, 0.8)          # speed profile: u + ease * sin(2 pi u) / (2 pi), monotone for |ease| < 1
    angle0, spin = rng.uniform(-_TILT, _TILT), rng.uniform(-_SPIN, _SPIN)
    colour = _object_colour(rng)
    flicker = rng.uniform(0.0, 0.06)
    noise = rng.uniform(2.0, 8.0)
    vertical = direction in ("top_to_bottom", "bottom_to_top")

    clip = np.empty((frames, size, size, 3), np.uint8)
    track = np.empty((frames, 2), np.float64)
    for t in range(frames):
        u = t / (frames - 1)
        p = u + ease * math.sin(2 * math.pi * u) / (2 * math.pi)
        a = along + travel * (p - 0.5) + rng.normal(0, 0.01 * size)
        b = across + drift * (u - 0.5) + rng.normal(0, 0.01 * size)
        cx, cy = (b, a) if vertical else (a, b)
        track[t] = cx, cy
        ox = margin + int(round(pan_len * (u - 0.5) * math.cos(pan_heading)))
        oy = margin + int(round(pan_len * (u - 0.5) * math.sin(pan_heading)))
        canvas = big[oy:oy + size, ox:ox + size].copy()
        for blob, front in zip(blobs, in_front):
            if not front:
                _draw_blob(canvas, blob, t)
        angle = angle0 + spin * t
        mask = _mask(size, size, lambda d, s: _draw_shape(d, shape, cx * s, cy * s, r * s, angle))
        _composite(canvas, mask, colour, 1.0 + rng.uniform(-flicker, flicker))
        for blob, front in zip(blobs, in_front):
            if front:
                _draw_blob(canvas, blob, t)
        clip[t] = _finish(canvas, rng, noise)
    if direction in ("right_to_left", "bottom_to_top"):
        clip, track = clip[::-1].copy(), track[::-1].copy()
    return (clip, track) if return_track else clip


def write_mp4(path, clip: np.ndarray, fps: int = 8, crf: int = 20):
    """Write uint8 (T, H, W, 3) RGB frames as H.264 yuv420p mp4, the same bytes for the same frames.

    Two things make x264's output repeatable: one thread, and no macroblock-tree rate control (``mbtree=0``).
    With mbtree on, the same frames gave different bytes from run to run in forked workers (and now and then in
    one process), small differences in quantisation of up to ~13 grey levels.
    """
    import av

    t, h, w, _ = clip.shape
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs even frame sizes, got {w}x{h}")
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps),
                                      options={"preset": "veryfast", "crf": str(crf), "x264-params": "mbtree=0"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # One thread, set on the context: an options "threads" entry is overridden by PyAV's own thread_count
        # (0, auto), and x264's output then depends on the threads it picks.
        stream.codec_context.thread_count = 1
        for frame in clip:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ------------------------------------------------------------------------------------------ one sample, in workers

def _make_image(job):
    root, seed, split, label, index, shape, size, rel = job
    img = render_image(_rng(seed, "images", split, label, index), shape, size)
    Image.fromarray(img).save(os.path.join(root, rel), compress_level=1)


def _check_decodable(path, frames: int, size: int):
    """Decode one written video with decord (the stage-2 reader) and check its frame count and size.

    decord 0.6 misreads some frame widths (16, 24, 48 and 72 pixels among 16-256: wrong channel count or an
    exception); this turns that into a clear error at generation time rather than a crash in training.
    """
    try:
        import decord
    except ImportError:
        return
    problem = None
    try:
        reader = decord.VideoReader(str(path))
        n = len(reader)
        shape = tuple(reader.get_batch([0, n - 1]).asnumpy().shape) if n else None
        if n != frames or shape != (2, size, size, 3):
            problem = f"decord reads {n} frames of shape {shape[1:] if shape else None}"
    except Exception as e:   # decord raises its own error types
        problem = f"decord fails: {str(e).splitlines()[0][:200]}"
    if problem:
        raise ValueError(f"{path}: written with {frames} frames of {size}x{size}x3 but {problem}; decord cannot "
                         f"read this frame size, choose another --size (e.g. 32, 40, 56, 64, 80, 96, 112)")


def _make_video(job):
    root, seed, split, label, index, shape, direction, frames, size, fps, rel = job
    clip = render_video(_rng(seed, "videos", split, label, index), shape, direction, frames, size)
    write_mp4(os.path.join(root, rel), clip, fps=fps)


# ----------------------------------------------------------------------------------- manifest and atomic building

def read_manifest(out_dir) -> dict | None:
    """The settings a complete set in ``out_dir`` was written with, or None."""
    try:
        with open(Path(out_dir) / MANIFEST) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _is_complete(out_dir: Path, kind: str, settings: dict) -> bool:
    manifest = read_manifest(out_dir)
    if (manifest is None or manifest.get("kind") != kind or manifest.get("version") != FORMAT_VERSION
            or manifest.get("settings") != settings):
        return False
    return all((out_dir / rel).is_file() for rel in manifest.get("files", []))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(out_dir: Path):
    """Remove hidden build or old directories of ``out_dir`` left by processes that are gone."""
    prefix = f".{out_dir.name}."
    for p in out_dir.parent.glob(prefix + "*"):
        kind, _, pid = p.name[len(prefix):].rpartition("-")
        if kind in ("partial", "old") and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _check_replaceable(out_dir: Path):
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if (read_manifest(out_dir) or {}).get("kind") in _SET_CODE:
        return
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in _OURS)
    if foreign:
        raise FileExistsError(f"{out_dir} holds files that are not a synthetic data set ({', '.join(foreign[:5])}"
                              f"{', ...' if len(foreign) > 5 else ''}) and no {MANIFEST}; refusing to replace it. "
                              "Choose an empty or new directory.")


def _build(out_dir, kind: str, settings: dict, names: list[str], jobs_fn, worker_fn, lists_fn, workers, progress,
           force: bool, check_fn=None) -> Path:
    out_dir = Path(out_dir).resolve()
    if not force and _is_complete(out_dir, kind, settings):
        if progress:
            print(f"synthetic {kind}: {out_dir} already holds this set ({MANIFEST} matches); nothing to do")
        return out_dir
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        start = time.perf_counter()
        jobs, files = jobs_fn(str(tmp))
        for d in sorted({os.path.dirname(rel) for rel in files}):
            (tmp / d).mkdir(parents=True, exist_ok=True)
        _run(jobs, worker_fn, workers, progress, desc=f"synthetic {kind}")
        if check_fn is not None:
            check_fn(tmp, files)
        (tmp / "label_map.txt").write_text("".join(n + "\n" for n in names))
        lists_fn(tmp)
        manifest = dict(kind=kind, version=FORMAT_VERSION, settings=settings, classes=names, files=files,
                        seconds=round(time.perf_counter() - start, 2))
        with open(tmp / (MANIFEST + ".tmp"), "w") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
        os.replace(tmp / (MANIFEST + ".tmp"), tmp / MANIFEST)
        # Move into place. Another process (another rank) may have finished the same set meanwhile: keep theirs.
        if _is_complete(out_dir, kind, settings):
            shutil.rmtree(tmp)
            return out_dir
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            _check_replaceable(out_dir)
            os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not _is_complete(out_dir, kind, settings):
                raise
            shutil.rmtree(tmp)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        print(f"synthetic {kind}: wrote {len(files)} files for {len(names)} classes to {out_dir} "
              f"in {manifest['seconds']:.1f} s")
    return out_dir


def _default_workers():
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _run(jobs, fn, workers, progress, desc):
    from tqdm import tqdm

    workers = _default_workers() if workers is None else max(1, int(workers))
    bar = tqdm(total=len(jobs), desc=desc, unit="file", disable=not progress, file=sys.stderr)
    if workers == 1 or len(jobs) < 8:
        for job in jobs:
            fn(job)
            bar.update()
    else:
        # fork where there is one: the workers need only numpy, PIL and av, and skip re-importing torch.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        with multiprocessing.get_context(method).Pool(workers) as pool:
            for _ in pool.imap_unordered(fn, jobs, chunksize=max(1, min(16, len(jobs) // (8 * workers)))):
                bar.update()
    bar.close()


def _check_per_class(train_per_class, val_per_class):
    for name, v in (("train_per_class", train_per_class), ("val_per_class", val_per_class)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if train_per_class + val_per_class == 0:
        raise ValueError("train_per_class and val_per_class are both 0: nothing to write")


def _check_size(size, even):
    if not isinstance(size, (int, np.integer)) or size < 16 or (even and size % 2):
        raise ValueError(f"size must be an {'even ' if even else ''}integer >= 16, got {size!r}")


# --------------------------------------------------------------------------------------------------- public API

def write_image_dataset(out_dir, num_classes: int = 6, train_per_class: int = 200, val_per_class: int = 50,
                        size: int = 96, seed: int = 0, workers: int | None = None, progress: bool = True,
                        force: bool = False) -> Path:
    """Write the shape images in ImageNet layout under ``out_dir`` and return its resolved path.

    ``out_dir/train/<class>/<i>.png``, ``out_dir/val/<class>/<i>.png``, ``out_dir/label_map.txt`` (class folder
    names, line index = label = ImageFolder's index) and ``out_dir/synthetic.json``. Same seed, same pixels.
    """
    names = image_class_names(num_classes)
    _check_per_class(train_per_class, val_per_class)
    _check_size(size, even=False)
    settings = dict(num_classes=int(num_classes), train_per_class=int(train_per_class),
                    val_per_class=int(val_per_class), size=int(size), seed=int(seed))
    counts = dict(train=int(train_per_class), val=int(val_per_class))

    def jobs_fn(root):
        jobs, files = [], []
        for split in SPLITS:
            for label, name in enumerate(names):
                for i in range(counts[split]):
                    rel = f"{split}/{name}/{i:04d}.png"
                    jobs.append((root, int(seed), split, label, i, SHAPES[label], int(size), rel))
                    files.append(rel)
        return jobs, files

    return _build(out_dir, "images", settings, names, jobs_fn, _make_image, lambda root: None, workers, progress,
                  force)


def write_video_dataset(out_dir, num_shapes: int = 4, train_per_class: int = 40, val_per_class: int = 10,
                        frames: int = 16, size: int = 96, fps: int = 8, seed: int = 0, directions: int = 2,
                        workers: int | None = None, progress: bool = True, force: bool = False) -> Path:
    """Write the shape-motion videos under ``out_dir`` and return its resolved path.

    ``out_dir/videos/<split>/<class>/<i>.mp4`` (H.264, yuv420p, exactly ``frames`` frames of ``size`` x ``size``),
    ``out_dir/train.txt`` and ``out_dir/val.txt`` (``<split>/<class>/<i>.mp4 <label>`` per line, relative to the
    data prefix ``out_dir/videos``), ``out_dir/label_map.txt`` and ``out_dir/synthetic.json``.
    ``num_shapes * directions`` classes.
    """
    names = video_class_names(num_shapes, directions)
    _check_per_class(train_per_class, val_per_class)
    _check_size(size, even=True)
    if not isinstance(frames, (int, np.integer)) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
    if not isinstance(fps, (int, np.integer)) or fps < 1:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    settings = dict(num_shapes=int(num_shapes), directions=int(directions), train_per_class=int(train_per_class),
                    val_per_class=int(val_per_class), frames=int(frames), size=int(size), fps=int(fps),
                    seed=int(seed))
    counts = dict(train=int(train_per_class), val=int(val_per_class))
    lines = {split: [] for split in SPLITS}

    def jobs_fn(root):
        jobs, files = [], []
        for split in SPLITS:
            for label, name in enumerate(names):
                shape, direction = SHAPES[label // directions], DIRECTIONS[label % directions]
                for i in range(counts[split]):
                    rel = f"{split}/{name}/{i:04d}.mp4"
                    jobs.append((root, int(seed), split, label, i, shape, direction, int(frames), int(size),
                                 int(fps), "videos/" + rel))
                    files.append("videos/" + rel)
                    lines[split].append(f"{rel} {label}\n")
        return jobs, files

    def lists_fn(root):
        for split in SPLITS:
            (root / f"{split}.txt").write_text("".join(lines[split]))

    def check_fn(root, files):
        if files:
            _check_decodable(root / files[0], int(frames), int(size))

    return _build(out_dir, "videos", settings, names, jobs_fn, _make_video, lists_fn, workers, progress, force,
                  check_fn)


def _defaults(fn):
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty and k not in ("workers", "progress", "force")}


# The defaults, read off the signatures for the command line. Images: a superset of the video shapes, as ImageNet
# is of Kinetics' objects.
IMAGE_DEFAULTS = _defaults(write_image_dataset)
VIDEO_DEFAULTS = _defaults(write_video_dataset)


# ---------------------------------------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sts3d.data.synthetic", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)

    def common(p, defaults):
        p.add_argument("out", type=Path, help="output directory")
        p.add_argument("--train-per-class", type=int, default=defaults["train_per_class"],
                       help="training samples per class (default: %(default)s)")
        p.add_argument("--val-per-class", type=int, default=defaults["val_per_class"],
                       help="validation samples per class (default: %(default)s)")
        p.add_argument("--size", type=int, default=defaults["size"], help="frame side in pixels (default: %(default)s)")
        p.add_argument("--seed", type=int, default=defaults["seed"], help="(default: %(default)s)")
        p.add_argument("--workers", type=int, default=None, help="processes (default: the CPUs, at most 4)")
        p.add_argument("--force", action="store_true", help="rebuild even if OUT already holds this set")
        p.add_argument("--quiet", action="store_true", help="no progress bar or messages")

    images = sub.add_parser("images", help="shape images, ImageNet layout (stage 1)")
    common(images, IMAGE_DEFAULTS)
    images.add_argument("--classes", type=int, default=IMAGE_DEFAULTS["num_classes"],
                        help=f"number of shapes, at most {len(SHAPES)} (default: %(default)s)")
    videos = sub.add_parser("videos", help="shape-motion mp4 videos and annotation lists (stage 2)")
    common(videos, VIDEO_DEFAULTS)
    videos.add_argument("--shapes", type=int, default=VIDEO_DEFAULTS["num_shapes"],
                        help=f"number of shapes, at most {len(SHAPES)}; classes = shapes x directions "
                        "(default: %(default)s)")
    videos.add_argument("--directions", type=int, default=VIDEO_DEFAULTS["directions"], choices=(2, 4),
                        help="2: down and up; 4: also left and right (train those without flips) "
                        "(default: %(default)s)")
    videos.add_argument("--frames", type=int, default=VIDEO_DEFAULTS["frames"],
                        help="frames per video (default: %(default)s)")
    videos.add_argument("--fps", type=int, default=VIDEO_DEFAULTS["fps"], help="(default: %(default)s)")
    args = parser.parse_args(argv)

    common_kw = dict(train_per_class=args.train_per_class, val_per_class=args.val_per_class, size=args.size,
                     seed=args.seed, workers=args.workers, progress=not args.quiet, force=args.force)
    try:
        if args.kind == "images":
            out = write_image_dataset(args.out, num_classes=args.classes, **common_kw)
            if not args.quiet:
                print(f"images: {out}/train/<class>/*.png, {out}/val/<class>/*.png; classes in {out}/label_map.txt")
        else:
            out = write_video_dataset(args.out, num_shapes=args.shapes, directions=args.directions,
                                      frames=args.frames, fps=args.fps, **common_kw)
            if not args.quiet:
                print(f"videos: data prefix {out}/videos; annotation lists {out}/train.txt, {out}/val.txt; "
                      f"classes in {out}/label_map.txt")
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
