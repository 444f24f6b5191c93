"""Video datasets: annotation lists, decoders behind one small interface, and clip / multi-view pipelines.

Annotation lists have the seed's format: one ``relative/path/video.ext <int label>`` per line, joined to
``data_prefix``. Decoding is online and reads only the frames a clip needs: decord by default, torchcodec as an
option (it needs FFmpeg's shared libraries). A video that cannot be decoded is skipped with one warning naming it
and replaced by another sample, and counted, so training never stops on it.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .sampling import sample_frame_indices
from .transforms import (center_crop_box, crop_frames, random_resized_crop_box, resize_frames, short_side_size,
                         three_crop_boxes)

logger = logging.getLogger(__name__)

# The seed's normalisation (RGB, 0-255 scale): the ImageNet mean and std of the image pre-training.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


class AnnotationError(ValueError):
    """A malformed annotation list; the message starts with ``file:line``."""


@dataclass(frozen=True)
class VideoRecord:
    path: Path
    label: int
    source: str  # "ann_file:line", for messages


def read_annotations(ann_file: Union[str, Path], data_prefix: Union[str, Path] = "",
                     num_classes: Optional[int] = None) -> list[VideoRecord]:
    """Parse an annotation list; any malformed line or out-of-range label stops with ``file:line`` in the error."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise AnnotationError(f"{ann_file}: annotation file not found")
    records = []
    for number, line in enumerate(ann_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{ann_file}:{number}"
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise AnnotationError(f"{where}: expected 'relative/path label', got {line!r}")
        path, label_text = parts
        try:
            label = int(label_text)
        except ValueError:
            raise AnnotationError(f"{where}: label {label_text!r} is not an integer") from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise AnnotationError(f"{where}: label {label} is outside [0, {num_classes}) "
                                  f"(model.cls_head.num_classes)")
        records.append(VideoRecord(Path(data_prefix) / path, label, where))
    if not records:
        raise AnnotationError(f"{ann_file}: no videos listed")
    return records


class VideoReader(Protocol):
    """An opened video: its length and random access to frames as ``(T, H, W, 3)`` uint8 RGB."""

    def __len__(self) -> int: ...

    def get(self, indices: Sequence[int]) -> np.ndarray: ...


class DecordReader:
    def __init__(self, path: Path) -> None:
        import decord

        self._reader = decord.VideoReader(str(path), num_threads=1)

    def __len__(self) -> int:
        return len(self._reader)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        return self._reader.get_batch(list(indices)).asnumpy()


class TorchcodecReader:
    def __init__(self, path: Path) -> None:
        from torchcodec.decoders import VideoDecoder

        self._decoder = VideoDecoder(str(path), num_ffmpeg_threads=1)

    def __len__(self) -> int:
        return self._decoder.metadata.num_frames

    def get(self, indices: Sequence[int]) -> np.ndarray:
        return self._decoder.get_frames_at(list(indices)).data.permute(0, 2, 3, 1).numpy()


DECODERS = {"decord": DecordReader, "torchcodec": TorchcodecReader}


def open_video(path: Path, decoder: str = "decord") -> VideoReader:
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {sorted(DECODERS)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video")
    reader = DECODERS[decoder](path)
    if len(reader) <= 0:
        raise RuntimeError(f"{path}: no frames")
    return reader


def read_frames(reader: VideoReader, indices: np.ndarray) -> np.ndarray:
    """Decode each distinct index once (looped clips repeat frames) and return them in ``indices`` order."""
    unique, inverse = np.unique(indices, return_inverse=True)
    return reader.get(unique.tolist())[inverse]


def to_tensor(frames: np.ndarray, clip_len: int) -> torch.Tensor:
    """``(K * clip_len, H, W, 3)`` uint8 -> normalised float ``(K, 3, clip_len, H, W)``."""
    clip = torch.from_numpy(np.ascontiguousarray(frames)).float()
    clip = (clip - torch.tensor(MEAN)) / torch.tensor(STD)
    k = clip.shape[0] // clip_len
    return clip.view(k, clip_len, *clip.shape[1:]).permute(0, 4, 1, 2, 3).contiguous()


@dataclass
class ClipSettings:
    """What a sample is: ``num_clips`` clips of ``clip_len`` frames ``frame_interval`` apart, resized to a short
    side of ``short_side``, then (train) a random-resized crop resized to ``crop_size`` and an optional flip, or
    (test) ``'three'`` or ``'center'`` crops of ``crop_size``."""
    clip_len: int
    frame_interval: int = 1
    num_clips: int = 1
    short_side: int = 256
    crop_size: int = 224
    flip: bool = True
    test_crop: str = "center"
    area_range: tuple[float, float] = (0.08, 1.0)
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)


@dataclass
class VideoDataset(Dataset):
    """Clips of the videos of an annotation list.

    Training (``test_mode=False``): ``(clips (num_clips, 3, T, S, S), label, skipped)`` with random sampling and
    augmentation; a video that fails to decode is replaced by another one. Testing: ``(views (V, 3, T, S, S), label,
    skipped)`` with
    ``V = num_clips x crops`` in crop-major order (the seed's), each video's views from one decode.
    """
    records: list[VideoRecord]
    settings: ClipSettings
    test_mode: bool = False
    decoder: str = "decord"
    seed: int = 0
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        """``(tensor, label, skipped)``: ``skipped`` counts the unreadable videos met on the way, so a training
        loop can total them across loader workers. In test mode an unreadable video is not replaced (scores are
        kept in dataset order): it comes back as an empty tensor with ``skipped == 1``."""
        rng = np.random.default_rng([self.seed, index, torch.randint(2 ** 31, ()).item()])
        skipped = 0
        for _ in range(len(self.records)):
            record = self.records[index]
            try:
                return self.load(record, rng), record.label, skipped
            except Exception as error:  # decoders raise many kinds: any unreadable video is skipped
                self._skip(record, error)
                skipped += 1
                if self.test_mode:
                    return torch.empty(0), record.label, skipped
                index = int(rng.integers(len(self.records)))
        raise RuntimeError("no video of the dataset could be decoded")

    def _skip(self, record: VideoRecord, error: Exception) -> None:
        self.skipped.append(str(record.path))
        message = f"skipping unreadable video {record.path} ({record.source}): {error}"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        logger.warning(message)

    def load(self, record: VideoRecord, rng: np.random.Generator) -> torch.Tensor:
        s = self.settings
        reader = open_video(record.path, self.decoder)
        indices = sample_frame_indices(len(reader), s.clip_len, s.frame_interval, s.num_clips,
                                       test_mode=self.test_mode, rng=rng)
        frames = read_frames(reader, indices)
        frames = resize_frames(frames, short_side_size(*frames.shape[1:3], s.short_side))
        if self.test_mode:
            boxes = (three_crop_boxes(frames.shape[1:3], s.crop_size) if s.test_crop == "three"
                     else [center_crop_box(frames.shape[1:3], s.crop_size)])
            return torch.cat([to_tensor(crop_frames(frames, box), s.clip_len) for box in boxes])
        box = random_resized_crop_box(frames.shape[1:3], rng, s.area_range, s.aspect_ratio_range)
        frames = resize_frames(crop_frames(frames, box), (s.crop_size, s.crop_size))
        if s.flip and rng.random() < 0.5:
            frames = frames[:, :, ::-1]
        return to_tensor(frames, s.clip_len)
