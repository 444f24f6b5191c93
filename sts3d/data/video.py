"""Video datasets: annotation lists, decoders behind one small interface, and clip / multi-view pipelines.

Annotation lists have the seed's format: one ``relative/path/video.ext <int label>`` per line, joined to
``data_prefix``. Decoding is online and reads only the frames a clip needs: decord by default; ``pyav`` (the fast
one: it skips the decoding work no requested frame depends on) and torchcodec (it needs FFmpeg's shared libraries)
as options. All three give the same RGB frames. A video that cannot be decoded is skipped with one warning naming it
and replaced by another sample, and counted, so training never stops on it.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .mp4 import SampleTable, read_sample_table
from .sampling import sample_frame_indices
from .transforms import (CropSizeError, center_crop_box, crop_frames, random_resized_crop_box, resize_frames,
                         short_side_size, source_box, three_crop_boxes)

logger = logging.getLogger(__name__)

# The seed's normalisation (RGB, 0-255 scale): the ImageNet mean and std of the image pre-training.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
_MEAN, _STD = torch.tensor(MEAN).view(3, 1, 1, 1), torch.tensor(STD).view(3, 1, 1, 1)  # against (3, T, H, W)
# (x - mean) / std for every uint8 x, per channel: (3, 256) float32, the same operations as on a clip
_NORMALISED = torch.arange(256, dtype=torch.float32).expand(3, 1, 1, 256).sub(_MEAN).div(_STD).view(3, 256).numpy()


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

        # NHWC straight from the decoder: the frames need no transposing copy
        self._decoder = VideoDecoder(str(path), num_ffmpeg_threads=1, dimension_order="NHWC")

    def __len__(self) -> int:
        return self._decoder.metadata.num_frames

    def get(self, indices: Sequence[int]) -> np.ndarray:
        return self._decoder.get_frames_at(list(indices)).data.numpy()


class FrameSizeChanged(RuntimeError):
    """The decoder's frames are not the size the container announced; the reader has switched to the demuxer's
    figures (``frame_shape`` is now right): ask again."""


class PyAVReader:
    """FFmpeg through PyAV on one thread, doing only the work the requested frames need.

    Frame ``i`` is the ``i``-th packet in presentation order (decord's numbering). For an MP4 / MOV file with an
    H.264 track the frames are numbered from the ``moov`` box's sample tables (:mod:`sts3d.data.mp4`): no pass over
    the file, no container opened, and ``get`` reads just the bytes of the packets it decodes into a decoder set up
    as FFmpeg's demuxer would set it up (the ``avcC`` record, the ``colr`` tags). Any other file, or one whose tables
    the parser does not take, is demuxed once with PyAV, which numbers the frames and keeps the packets.

    ``get`` feeds the decoder the packets from the keyframe before the first requested frame up to the last
    requested one and then flushes it, so nothing past the clip is decoded; the decoder skips every non-reference
    frame that is not requested (no other frame is predicted from it, so the frames that come out are bit-identical
    to a full decode: on x264's default B-frames that is about half the frames outside the clip and a quarter
    inside a 32x2 clip); and only requested frames are converted to RGB (swscale, as decord does, one thread).
    ``read`` hands each frame over as soon as it is converted (the training path crops, resizes and normalises it
    into the clip there and then), so no full-size RGB clip need be assembled.
    """

    _READ_AT_ONCE = 64 << 20  # packets spanning more bytes than this are read one by one

    def __init__(self, path: Path) -> None:
        from av.video.reformatter import VideoReformatter

        self._path = path
        table = read_sample_table(path)
        if table is None:
            self._open_demuxed()
        else:
            self._open_table(table)
        self._reformatter = VideoReformatter()

    def _open_table(self, table: SampleTable) -> None:
        import av

        self._table, self._packets = table, None
        self._container = None
        codec = av.CodecContext.create(table.codec, "r")
        codec.extradata = table.extradata
        codec.thread_type, codec.thread_count = "NONE", 1
        if table.colour is not None:  # what FFmpeg copies from the container to the decoder
            primaries, transfer, matrix, full_range = table.colour
            codec.color_primaries, codec.color_trc, codec.colorspace = primaries, transfer, matrix
            if full_range is not None:
                codec.color_range = 2 if full_range else 1  # AVCOL_RANGE_JPEG / AVCOL_RANGE_MPEG
        self._codec = codec
        self._index(table.pts, table.keyframes)
        self.frame_shape = (table.height, table.width)

    def _open_demuxed(self) -> None:
        import av

        self._table = None
        self._container = av.open(str(self._path))
        stream = self._container.streams.video[0]
        stream.thread_type = "NONE"
        self._codec = stream.codec_context
        self._codec.thread_count = 1
        # one demuxing pass numbers the frames and finds the keyframes; the packets are kept (a few MB for a
        # Kinetics clip), so decoding needs neither a seek nor a second read of the file
        self._packets = [packet for packet in self._container.demux(stream)
                         if packet.size > 0 and packet.pts is not None]
        self._index(np.array([packet.pts for packet in self._packets], dtype=np.int64),
                    np.array([packet.is_keyframe for packet in self._packets], dtype=bool))
        self.frame_shape = (self._codec.height, self._codec.width)

    def _index(self, pts: np.ndarray, keyframes: np.ndarray) -> None:
        """Number the frames: ``pts`` and ``keyframes`` per packet in decoding order."""
        self._decode_position = np.argsort(pts, kind="stable")  # frame index -> packet position
        self._pts = pts[self._decode_position]  # frame index -> pts (sorted)
        self._keyframe_indices = np.sort(np.searchsorted(self._pts, pts[keyframes]))

    def __len__(self) -> int:
        return len(self._pts)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        """``(len(indices), H, W, 3)`` uint8 RGB, in ``indices`` order (repeats allowed)."""
        for attempt in range(2):
            out = np.empty((len(indices), *self.frame_shape, 3), dtype=np.uint8)

            def store(pixels: np.ndarray, slots: list[int]) -> None:
                for slot in slots:
                    out[slot] = pixels

            try:
                self.read(indices, store)
                return out
            except FrameSizeChanged:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def read(self, indices: Sequence[int], store: Callable[[np.ndarray, list[int]], None]) -> None:
        """Decode the frames ``indices`` names and hand each one as it comes out, an ``(H, W, 3)`` uint8 RGB view
        valid during the call, to ``store`` with the positions in ``indices`` it fills (several where an index
        repeats). Raises :class:`FrameSizeChanged` (before storing anything) if the decoder disagrees with the
        container about the frame size."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0 or indices.min() < 0 or indices.max() >= len(self):
            raise IndexError(f"frame indices must lie in [0, {len(self)}), got {indices.tolist()}")
        slots: dict[int, list[int]] = {}
        for slot, pts in enumerate(self._pts[indices].tolist()):
            slots.setdefault(pts, []).append(slot)
        before = self._keyframe_indices[self._keyframe_indices <= indices.min()]
        start = int(self._decode_position[before[-1]]) if len(before) else 0
        stop = int(self._decode_position[indices].max())
        missing = self._decode(slots, store, start, stop, skip=True)
        if missing:  # a stream that does not start cleanly at that keyframe: decode everything up to the clip
            missing = self._decode(slots, store, 0, stop, skip=False)
        if missing:
            raise RuntimeError(f"frames {sorted(np.searchsorted(self._pts, list(missing)).tolist())} did not decode")

    def _packets_between(self, start: int, stop: int) -> list[Any]:
        """The packets ``start..stop`` in decoding order (``av.Packet``)."""
        if self._packets is not None:
            return self._packets[start:stop + 1]
        import av

        table = self._table
        offsets, sizes = table.offsets[start:stop + 1].tolist(), table.sizes[start:stop + 1].tolist()
        first, end = min(offsets), max(o + n for o, n in zip(offsets, sizes))
        packets = []
        with open(self._path, "rb") as file:
            if end - first <= self._READ_AT_ONCE:
                file.seek(first)
                data = memoryview(file.read(end - first))
                chunks = [data[o - first:o - first + n] for o, n in zip(offsets, sizes)]
            else:
                chunks = []
                for offset, size in zip(offsets, sizes):
                    file.seek(offset)
                    chunks.append(file.read(size))
            if any(len(chunk) != size for chunk, size in zip(chunks, sizes)):
                raise RuntimeError(f"{self._path}: truncated (packets past the end of the file)")
        for position, chunk in enumerate(chunks, start):
            packet = av.Packet(chunk)
            packet.pts, packet.dts = int(table.pts[position]), int(table.dts[position])
            packet.is_keyframe = bool(table.keyframes[position])
            packets.append(packet)
        return packets

    def _decode(self, slots: dict[int, list[int]], store: Callable[[np.ndarray, list[int]], None], start: int,
                stop: int, skip: bool) -> set[int]:
        """Decode packets ``start..stop`` (decode order) and flush, storing the requested frames; returns the pts of
        those that did not come out."""
        missing = set(slots)
        self._codec.flush_buffers()
        for packet in self._packets_between(start, stop):
            # the decoder reads skip_frame per packet: a non-reference frame nobody asked for is not decoded
            self._codec.skip_frame = "NONREF" if skip and packet.pts not in slots else "DEFAULT"
            for frame in self._codec.decode(packet):
                self._convert(frame, slots, missing, store)
        self._codec.skip_frame = "DEFAULT"
        for frame in self._codec.decode(None):
            self._convert(frame, slots, missing, store)
        return missing

    def _convert(self, frame: Any, slots: dict[int, list[int]], missing: set[int],
                 store: Callable[[np.ndarray, list[int]], None]) -> None:
        """Convert ``frame`` (an ``av.VideoFrame``) to RGB and store it if it is still missing."""
        if frame.pts not in missing:
            return
        if (frame.height, frame.width) != self.frame_shape:
            if self._table is None:
                raise RuntimeError(f"frame size {frame.width}x{frame.height} changes within the stream")
            self._open_demuxed()  # let the demuxer (and the decoder) say what size the frames are
            raise FrameSizeChanged(f"{self._path}: frames are {frame.width}x{frame.height}, not the container's "
                                   f"{self.frame_shape[1]}x{self.frame_shape[0]}")
        missing.discard(frame.pts)
        rgb = self._reformatter.reformat(frame, format="rgb24", threads=1)
        plane = rgb.planes[0]
        pixels = np.frombuffer(plane, np.uint8).reshape(rgb.height, plane.line_size)[:, :rgb.width * 3]
        store(pixels.reshape(rgb.height, rgb.width, 3), slots[frame.pts])


DECODERS = {"decord": DecordReader, "torchcodec": TorchcodecReader, "pyav": PyAVReader}


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
    frames = reader.get(unique.tolist())
    # the common case, distinct increasing indices, needs no reordering copy
    return frames if len(unique) == len(indices) and np.array_equal(unique, indices) else frames[inverse]


def normalize_clips(clips: torch.Tensor) -> torch.Tensor:
    """uint8 clips ``(..., 3, T, H, W)`` (a loader's output with ``normalize=False``) -> float32 ``(x - mean) /
    std``, on their device, with the same float32 operations as the loader's, so the values are identical.
    Float clips (already normalised by the loader) are returned as they are."""
    if clips.dtype != torch.uint8:
        return clips
    mean, std = (torch.tensor(v, dtype=torch.float32, device=clips.device).view(3, 1, 1, 1) for v in (MEAN, STD))
    return clips.float().sub_(mean).div_(std)


def to_tensor(frames: np.ndarray, clip_len: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(K * clip_len, H, W, 3)`` uint8 -> normalised float ``(K, 3, clip_len, H, W)``, written into ``out`` if
    given (a slice of a sample's tensor, so views are not concatenated afterwards). A uint8 ``out`` receives the
    frames as they are, channels first (for :func:`normalize_clips` on the device).

    Each frame is split into its channels and each channel mapped through a 256-entry table straight into its
    plane of ``out``: the table holds ``(x - mean) / std`` computed with the same two float32 operations as the
    plain formula, so the values are identical, in about half the time of converting, normalising and
    transposing the clip as a whole."""
    k, (h, w) = len(frames) // clip_len, frames.shape[1:3]
    if out is None:
        out = torch.empty((k, 3, clip_len, h, w), dtype=torch.float32)
    if not out.is_contiguous():  # the table writes need contiguous planes
        out.copy_(torch.from_numpy(frames).unflatten(0, (k, clip_len)).permute(0, 4, 1, 2, 3))
        return out if out.dtype == torch.uint8 else out.sub_(_MEAN).div_(_STD)
    normalise = _Normaliser(out, clip_len)
    for slot, frame in enumerate(frames):
        normalise(frame, slot)
    return out


class _Normaliser:
    """Writes frames (``(H, W, 3)`` uint8) into their planes of a contiguous ``(K, 3, T, H, W)`` tensor: float, the
    channels split into reused buffers, then each through its table (see :func:`to_tensor`); uint8, the channels
    split straight into the planes."""

    def __init__(self, out: torch.Tensor, clip_len: int) -> None:
        self.planes, self.clip_len = out.numpy(), clip_len
        self.raw = out.dtype == torch.uint8
        self.channels = [np.empty(out.shape[-2:], dtype=np.uint8) for _ in range(3)]

    def __call__(self, frame: np.ndarray, slot: int) -> None:
        clip, t = divmod(slot, self.clip_len)
        planes = self.planes[clip, :, t]
        if self.raw:
            for channel, plane in zip(cv2.split(frame, self.channels), planes):
                plane[...] = channel
            return
        for values, table, plane in zip(cv2.split(frame, self.channels), _NORMALISED, planes):
            cv2.LUT(values, table, dst=plane)


class TrainClipWriter:
    """Turns decoded frames, one at a time, into a training clip: the ``box`` (source pixels) of each
    frame resized to ``size`` (OpenCV bilinear), mirrored if ``flip``, normalised into ``out``
    (``(K, 3, T, h, w)``, contiguous; a uint8 ``out`` takes the pixels as they are) at the frame's slot(s): the
    values of :func:`~sts3d.data.transforms.resized_crops` then :func:`to_tensor`, while the frame is still in
    cache. A streaming reader (``PyAVReader.read``) calls it as each frame is decoded."""

    def __init__(self, box: tuple[int, int, int, int], flip: bool, out: torch.Tensor, clip_len: int) -> None:
        h, w = out.shape[-2:]
        self.box, self.size, self.flip = box, (w, h), flip
        self.resized = np.empty((h, w, 3), dtype=np.uint8)
        self.mirrored = np.empty((h, w, 3), dtype=np.uint8) if flip else None
        self.normalise = _Normaliser(out, clip_len)

    def __call__(self, frame: np.ndarray, slots: list[int]) -> None:
        x1, y1, x2, y2 = self.box
        crop = cv2.resize(frame[y1:y2, x1:x2], self.size, dst=self.resized, interpolation=cv2.INTER_LINEAR)
        if self.flip:
            crop = cv2.flip(crop, 1, dst=self.mirrored)
        for slot in slots:
            self.normalise(crop, slot)


@dataclass
class ClipSettings:
    """What a sample is: ``num_clips`` clips of ``clip_len`` frames ``frame_interval`` apart, resized to a short
    side of ``short_side`` (``None``: as decoded), then (train) a random-resized crop resized to ``crop_size`` and an
    optional flip, or (test) ``'three'`` or ``'center'`` crops of ``crop_size``."""
    clip_len: int
    frame_interval: int = 1
    num_clips: int = 1
    short_side: Optional[int] = 256
    crop_size: int = 224
    flip: bool = True
    test_crop: str = "center"
    area_range: tuple[float, float] = (0.08, 1.0)
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)
    # training: crop the decoded frames and resize once (the box mapped to source pixels) rather than the seed's
    # short-side resize, crop, resize; see docs/deviations.md. Test views always take the seed's two steps.
    fused_train_resize: bool = True
    # training, opt-in: this many clips per video from one decoding pass (starts as the seed's segment sampling of
    # num_clips * clips_per_decode clips, each group of num_clips with its own crop and flip), as extra views
    clips_per_decode: int = 1


@dataclass
class VideoDataset(Dataset):
    """Clips of the videos of an annotation list.

    Training (``test_mode=False``): ``(clips (num_clips * clips_per_decode, 3, T, S, S), label, skipped)`` with
    random sampling and augmentation; a video that fails to decode is replaced by another one. Testing:
    ``(views (V, 3, T, S, S), label, skipped)`` with ``V = num_clips x crops`` in crop-major order (the seed's),
    each video's views from one decode. Clips are normalised float32, or with ``normalize=False`` the same pixels
    as uint8 (a quarter of the bytes to copy between processes and to the device), for :func:`normalize_clips` to
    normalise on the device, as the fine-tuning engine does.
    """
    records: list[VideoRecord]
    settings: ClipSettings
    test_mode: bool = False
    decoder: str = "decord"
    seed: int = 0
    normalize: bool = True
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        """``(tensor, label, skipped)``: ``skipped`` counts the unreadable videos met on the way, so a training
        loop can total them across loader workers. In test mode an unreadable video is not replaced (scores are
        kept in dataset order): it comes back as an empty tensor with ``skipped == 1``."""
        rng = np.random.default_rng([self.seed, index, torch.randint(2 ** 31, ()).item()])
        skipped = 0
        replacements = None
        while True:
            record = self.records[index]
            try:
                return self.load(record, rng), record.label, skipped
            except CropSizeError:  # the pipeline's settings, not the video: stop, as mmaction's assertion did
                raise
            except Exception as error:  # decoders raise many kinds: any unreadable video is skipped
                self._skip(record, error)
                skipped += 1
                if self.test_mode:
                    return torch.empty(0), record.label, skipped
            if replacements is None:  # drawn only on a failure, so a readable video's augmentation is unchanged
                # every other video in random order, each at most once: a readable one is always found if any is
                replacements = iter([int(i) for i in rng.permutation(len(self.records)) if i != index])
            index = next(replacements, None)
            if index is None:
                raise RuntimeError("no video of the dataset could be decoded")

    @property
    def _dtype(self) -> torch.dtype:
        return torch.float32 if self.normalize else torch.uint8

    def _skip(self, record: VideoRecord, error: Exception) -> None:
        self.skipped.append(str(record.path))
        message = f"skipping unreadable video {record.path} ({record.source}): {error}"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        logger.warning(message)

    def load(self, record: VideoRecord, rng: np.random.Generator) -> torch.Tensor:
        s = self.settings
        reader = open_video(record.path, self.decoder)
        groups = 1 if self.test_mode else s.clips_per_decode
        indices = sample_frame_indices(len(reader), s.clip_len, s.frame_interval, s.num_clips * groups,
                                       test_mode=self.test_mode, rng=rng)
        if not self.test_mode and s.fused_train_resize and groups == 1 and isinstance(reader, PyAVReader):
            clips = self._decode_into_clips(reader, indices, rng)
            if clips is not None:
                return clips
        frames = read_frames(reader, indices)
        resized_shape = short_side_size(*frames.shape[1:3], s.short_side)
        if self.test_mode:
            frames = resize_frames(frames, resized_shape)
            boxes = (three_crop_boxes(resized_shape, s.crop_size) if s.test_crop == "three"
                     else [center_crop_box(resized_shape, s.crop_size)])
            views = torch.empty((len(boxes) * s.num_clips, 3, s.clip_len, s.crop_size, s.crop_size),
                                dtype=self._dtype)
            for box, out in zip(boxes, views.split(s.num_clips)):
                to_tensor(crop_frames(frames, box), s.clip_len, out)
            return views
        if not s.fused_train_resize:
            frames = resize_frames(frames, resized_shape)
        clips = torch.empty((groups * s.num_clips, 3, s.clip_len, s.crop_size, s.crop_size), dtype=self._dtype)
        for group, out in zip(np.split(frames, groups), clips.split(s.num_clips)):
            box = random_resized_crop_box(resized_shape, rng, s.area_range, s.aspect_ratio_range)
            flip = s.flip and rng.random() < 0.5
            if s.fused_train_resize:
                write = TrainClipWriter(source_box(box, resized_shape, frames.shape[1:3]), flip, out, s.clip_len)
                for slot, frame in enumerate(group):
                    write(frame, [slot])
            else:  # the seed's steps exactly
                group = resize_frames(crop_frames(group, box), (s.crop_size, s.crop_size))
                to_tensor(np.ascontiguousarray(group[:, :, ::-1]) if flip else group, s.clip_len, out)
        return clips

    def _decode_into_clips(self, reader: PyAVReader, indices: np.ndarray, rng: np.random.Generator
                           ) -> Optional[torch.Tensor]:
        """The fused training path on a streaming reader: the box and flip are drawn from the frame size the reader
        announces (the same draws, in the same order, as after decoding), and each frame is cropped, resized,
        mirrored and normalised into the clip as it is decoded. ``None`` (with ``rng`` put back) if the decoder
        disagrees with the container about the frame size, for the caller's general path."""
        s = self.settings
        state = rng.bit_generator.state
        shape = reader.frame_shape
        resized_shape = short_side_size(*shape, s.short_side)
        box = random_resized_crop_box(resized_shape, rng, s.area_range, s.aspect_ratio_range)
        flip = s.flip and rng.random() < 0.5
        clips = torch.empty((s.num_clips, 3, s.clip_len, s.crop_size, s.crop_size), dtype=self._dtype)
        try:
            reader.read(indices, TrainClipWriter(source_box(box, resized_shape, shape), flip, clips, s.clip_len))
        except FrameSizeChanged:
            rng.bit_generator.state = state
            return None
        return clips
