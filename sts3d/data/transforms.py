"""Clip transforms on uint8 frames ``(T, H, W, C)``, with the seed's (mmcv / mmaction2 0.x) sizes and boxes.

Boxes are ``(x1, y1, x2, y2)``, sizes ``(h, w)``. Resizing is OpenCV bilinear on uint8 frames with sizes rounded as
``int(x + 0.5)``, as mmcv does, so test-time views equal the original's.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

Box = tuple[int, int, int, int]


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(h, w)`` after resizing the short side to ``short_side`` with the aspect ratio kept."""
    scale = short_side / min(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(T, H, W, C)`` uint8 -> ``(T, h, w, C)``, OpenCV bilinear frame by frame."""
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR) for frame in frames])


def crop_frames(frames: np.ndarray, box: Box) -> np.ndarray:
    x1, y1, x2, y2 = box
    return frames[:, y1:y2, x1:x2]


def center_crop_box(img_shape: tuple[int, int], crop_size: int) -> Box:
    h, w = img_shape
    left, top = (w - crop_size) // 2, (h - crop_size) // 2
    return left, top, left + crop_size, top + crop_size


def three_crop_boxes(img_shape: tuple[int, int], crop_size: int) -> list[Box]:
    """Three full-height (landscape) or full-width (portrait) squares: the start, the far end and the centre, in
    that order (the seed's ``ThreeCrop``). One side of the frame must equal ``crop_size``."""
    h, w = img_shape
    if crop_size not in (h, w):
        raise ValueError(f"ThreeCrop needs a frame side equal to the crop size {crop_size}, got {h}x{w}; "
                         f"resize the short side to {crop_size} first")
    if h == crop_size:
        step = (w - crop_size) // 2
        offsets = [(0, 0), (2 * step, 0), (step, 0)]
    else:
        step = (h - crop_size) // 2
        offsets = [(0, 0), (0, 2 * step), (0, step)]
    return [(x, y, x + crop_size, y + crop_size) for x, y in offsets]


def random_resized_crop_box(img_shape: tuple[int, int], rng: np.random.Generator,
                            area_range: tuple[float, float] = (0.08, 1.0),
                            aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3), max_attempts: int = 10) -> Box:
    """A box of random area fraction and log-uniform aspect ratio, placed at random; after ``max_attempts``
    candidates that do not fit, the centred square of the short side (the seed's ``RandomResizedCrop``)."""
    h, w = img_shape
    ratios = np.exp(rng.uniform(math.log(aspect_ratio_range[0]), math.log(aspect_ratio_range[1]), max_attempts))
    areas = rng.uniform(*area_range, max_attempts) * h * w
    crop_ws = np.round(np.sqrt(areas * ratios)).astype(int)
    crop_hs = np.round(np.sqrt(areas / ratios)).astype(int)
    for crop_w, crop_h in zip(crop_ws, crop_hs):
        if 0 < crop_h <= h and 0 < crop_w <= w:
            x = int(rng.integers(0, w - crop_w + 1))
            y = int(rng.integers(0, h - crop_h + 1))
            return x, y, x + int(crop_w), y + int(crop_h)
    side = min(h, w)
    return center_crop_box((h, w), side)
