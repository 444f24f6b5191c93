"""Clip transforms on uint8 frames ``(T, H, W, C)``, with the seed's (mmcv / mmaction2 0.x) sizes and boxes.

Boxes are ``(x1, y1, x2, y2)``, sizes ``(h, w)``. Resizing is OpenCV bilinear on uint8 frames with sizes rounded as
``int(x + 0.5)``, as mmcv does, so test-time views equal the original's. Training may instead crop the decoded frame
and resize once (:func:`source_box`, :func:`resized_crops`): the same box, a quarter of the resizing work.
"""
from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

Box = tuple[int, int, int, int]


class CropSizeError(ValueError):
    """A crop the frames cannot give (mmaction's assertion): a setting to fix, not a video to skip."""


def short_side_size(height: int, width: int, short_side: Optional[int]) -> tuple[int, int]:
    """``(h, w)`` after resizing the short side to ``short_side`` with the aspect ratio kept (mmcv's
    ``rescale_size``); ``None`` (a pipeline without that Resize) keeps the size."""
    if short_side is None:
        return height, width
    scale = short_side / min(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(T, H, W, C)`` uint8 -> ``(T, h, w, C)``, OpenCV bilinear frame by frame."""
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    out = np.empty((len(frames), h, w, frames.shape[3]), dtype=frames.dtype)
    for frame, target in zip(frames, out):
        cv2.resize(frame, (w, h), dst=target, interpolation=cv2.INTER_LINEAR)
    return out


def source_box(box: Box, resized_shape: tuple[int, int], source_shape: tuple[int, int]) -> Box:
    """A box drawn on frames resized to ``resized_shape``, in pixels of the ``source_shape`` frames (rounded to the
    nearest pixel, at least one wide), so cropping the source covers the same part of the scene."""
    (h, w), (source_h, source_w) = resized_shape, source_shape
    sx, sy = source_w / w, source_h / h
    x1, y1 = min(int(box[0] * sx + 0.5), source_w - 1), min(int(box[1] * sy + 0.5), source_h - 1)
    x2, y2 = min(max(int(box[2] * sx + 0.5), x1 + 1), source_w), min(max(int(box[3] * sy + 0.5), y1 + 1), source_h)
    return x1, y1, x2, y2


def resized_crops(frames: np.ndarray, box: Box, size: tuple[int, int], flip: bool = False) -> np.ndarray:
    """``(T, H, W, C)`` uint8 -> the ``box`` of every frame resized to ``(T, h, w, C)`` (OpenCV bilinear), mirrored
    left-right if ``flip``: one pass per frame, straight into the output, instead of resize, crop, resize, flip."""
    h, w = size
    x1, y1, x2, y2 = box
    out = np.empty((len(frames), h, w, frames.shape[3]), dtype=frames.dtype)
    scratch = np.empty((h, w, frames.shape[3]), dtype=frames.dtype) if flip else None
    for frame, target in zip(frames, out):
        if flip:
            cv2.flip(cv2.resize(frame[y1:y2, x1:x2], (w, h), dst=scratch, interpolation=cv2.INTER_LINEAR), 1,
                     dst=target)
        else:
            cv2.resize(frame[y1:y2, x1:x2], (w, h), dst=target, interpolation=cv2.INTER_LINEAR)
    return out


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
        raise CropSizeError(f"ThreeCrop needs a frame side equal to the crop size {crop_size}, got {h}x{w}; "
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
