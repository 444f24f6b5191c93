"""Which frames of a video a clip reads: the seed's ``SampleFrames`` (mmaction2 0.x), train and test modes.

Indices are 0-based; a clip of ``clip_len`` frames ``frame_interval`` apart starts at each of ``num_clips`` offsets.
Indices past the end wrap around (``out_of_bound_opt='loop'``), so videos shorter than a clip loop, as in the seed.
With ``clip_len=1`` and ``num_clips=K`` this is TSN-style segment sampling (Something-Something V2): one frame from
each of ``K`` equal segments.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def train_clip_offsets(total_frames: int, clip_len: int, frame_interval: int, num_clips: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Random clip starts for training: one per equal segment of the valid start range, else sorted random ones,
    else evenly spread, else all 0 (the seed's rules, in that order)."""
    span = clip_len * frame_interval
    avg_interval = (total_frames - span + 1) // num_clips
    if avg_interval > 0:
        return np.arange(num_clips) * avg_interval + rng.integers(avg_interval, size=num_clips)
    if total_frames > max(num_clips, span):
        return np.sort(rng.integers(total_frames - span + 1, size=num_clips))
    if avg_interval == 0:
        ratio = (total_frames - span + 1.0) / num_clips
        return np.around(np.arange(num_clips) * ratio).astype(np.int64)
    return np.zeros(num_clips, dtype=np.int64)


def test_clip_offsets(total_frames: int, clip_len: int, frame_interval: int, num_clips: int) -> np.ndarray:
    """Evenly spaced clip starts for testing: ``int(avg * k + avg / 2)`` with ``avg = (N - span + 1) / K``, or all 0
    when the video is shorter than a clip's span."""
    span = clip_len * frame_interval
    if total_frames <= span - 1:
        return np.zeros(num_clips, dtype=np.int64)
    avg_interval = (total_frames - span + 1) / float(num_clips)
    return (np.arange(num_clips) * avg_interval + avg_interval / 2.0).astype(np.int64)


def sample_frame_indices(total_frames: int, clip_len: int, frame_interval: int = 1, num_clips: int = 1,
                         test_mode: bool = False, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """The flat list of ``num_clips * clip_len`` frame indices, clip after clip, looped into ``[0, total_frames)``."""
    if total_frames <= 0:
        raise ValueError(f"cannot sample frames from a video of {total_frames} frames")
    if test_mode:
        offsets = test_clip_offsets(total_frames, clip_len, frame_interval, num_clips)
    else:
        offsets = train_clip_offsets(total_frames, clip_len, frame_interval, num_clips,
                                     rng if rng is not None else np.random.default_rng())
    indices = offsets[:, None] + np.arange(clip_len)[None, :] * frame_interval
    return np.mod(indices.reshape(-1), total_frames)
