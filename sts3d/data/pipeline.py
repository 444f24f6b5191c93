"""The seed's data pipelines (lists of ``dict(type=...)`` steps) read into :class:`ClipSettings`, and datasets built
from a config's ``data.{train,val,test}`` entries.

Configs keep the seed's pipeline lists so that a user of the original reads them as before; this module is the
one place that interprets them. Each step the seed used maps onto a field: ``SampleFrames`` -> clip length,
interval and clips; ``Resize`` with ``scale=(-1, S)`` -> short side ``S``; ``RandomResizedCrop`` -> area and
aspect ranges; ``Resize`` with ``keep_ratio=False`` after it -> output size; ``Flip`` -> flip; ``CenterCrop`` /
``ThreeCrop`` -> test views. Decoding, formatting and collecting steps are accepted as they are; anything else
is an error naming the step, so a pipeline is never silently read differently from what it says.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from .video import DECODERS, MEAN, STD, ClipSettings, VideoDataset, read_annotations

# steps whose work this project's loader always does the same way (decode online, NCTHW float tensors)
_PASSIVE = {"DecordInit", "DecordDecode", "PyAVInit", "PyAVDecode", "OpenCVInit", "OpenCVDecode", "FormatShape",
            "Collect", "ToTensor"}


class PipelineError(ValueError):
    """A pipeline step this project cannot honour; the message names the split and the step."""


def _check_normalize(step: Mapping[str, Any], where: str) -> None:
    mean, std = tuple(step.get("mean", MEAN)), tuple(step.get("std", STD))
    if any(abs(a - b) > 1e-6 for a, b in zip(mean + std, MEAN + STD)) or step.get("to_bgr", False):
        raise PipelineError(f"{where}: only the seed's RGB normalisation (mean {MEAN}, std {STD}) is supported")


def clip_settings(pipeline: Sequence[Mapping[str, Any]], where: str = "pipeline") -> tuple[ClipSettings, bool]:
    """``(settings, test_mode)`` of a seed pipeline list; ``test_mode`` is ``SampleFrames``'s."""
    fields: dict[str, Any] = {"flip": False}
    test_mode = None
    cropped = False
    for number, step in enumerate(pipeline):
        kind = step.get("type")
        here = f"{where}[{number}] {kind}"
        if kind in _PASSIVE:
            continue
        if kind == "SampleFrames":
            fields.update(clip_len=int(step["clip_len"]), frame_interval=int(step.get("frame_interval", 1)),
                          num_clips=int(step.get("num_clips", 1)))
            test_mode = bool(step.get("test_mode", False))
            if step.get("out_of_bound_opt", "loop") != "loop":
                raise PipelineError(f"{here}: only out_of_bound_opt='loop' (the seed's) is supported")
        elif kind == "Resize":
            scale = tuple(step["scale"])
            if step.get("keep_ratio", True):
                if len(scale) != 2 or scale[0] not in (-1, float("inf")):
                    raise PipelineError(f"{here}: keep-ratio resizing takes scale=(-1, short_side), got {scale}")
                fields["short_side"] = int(scale[1])
            elif cropped and scale[0] == scale[1]:
                fields["crop_size"] = int(scale[0])
            else:
                raise PipelineError(f"{here}: a fixed-size resize is supported only after RandomResizedCrop, "
                                    f"to a square")
        elif kind == "RandomResizedCrop":
            cropped = True
            fields["area_range"] = tuple(step.get("area_range", (0.08, 1.0)))
            fields["aspect_ratio_range"] = tuple(step.get("aspect_ratio_range", (3 / 4, 4 / 3)))
        elif kind in ("CenterCrop", "ThreeCrop"):
            fields.update(crop_size=int(step["crop_size"]), test_crop="center" if kind == "CenterCrop" else "three")
        elif kind == "Flip":
            ratio = float(step.get("flip_ratio", 0.5))
            if ratio not in (0.0, 0.5):
                raise PipelineError(f"{here}: flip_ratio must be 0 or 0.5, got {ratio}")
            fields["flip"] = ratio > 0
        elif kind == "Normalize":
            _check_normalize(step, here)
        else:
            raise PipelineError(f"{here}: unsupported pipeline step")
    if test_mode is None:
        raise PipelineError(f"{where}: no SampleFrames step")
    if not test_mode and not cropped:
        raise PipelineError(f"{where}: a training pipeline needs RandomResizedCrop")
    return ClipSettings(**fields), test_mode


def num_segments(pipeline: Sequence[Mapping[str, Any]]) -> Optional[int]:
    """The SSv2 form (``clip_len=1``: one-frame segments folded into time) gives its segment count, else ``None``."""
    settings, _ = clip_settings(pipeline)
    return settings.num_clips if settings.clip_len == 1 else None


def normalizes_on_device(data_cfg: Mapping[str, Any]) -> bool:
    """``data.normalize_on_device`` (default ``True``): loaders hand over uint8 clips and the engine normalises them
    on the device, with the same values as the pipeline's ``Normalize`` step in the loader (a quarter of the bytes
    through worker queues and host-to-device copies, and no float work in the workers)."""
    return bool(data_cfg.get("normalize_on_device", True))


def build_dataset(split_cfg: Mapping[str, Any], split: str, num_classes: Optional[int],
                  decoder: str = "decord", seed: int = 0, normalize: bool = True) -> VideoDataset:
    """The dataset of ``data.<split>`` (``ann_file``, ``data_prefix``, ``pipeline``); labels are checked against
    ``num_classes`` before anything trains. ``normalize=False``: uint8 clips, the pipeline's ``Normalize`` left
    to the device (:func:`~sts3d.data.video.normalize_clips`)."""
    if split_cfg.get("type", "VideoDataset") != "VideoDataset":
        raise PipelineError(f"data.{split}.type must be 'VideoDataset', got {split_cfg.get('type')!r}")
    if decoder not in DECODERS:
        raise PipelineError(f"data.decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
    settings, test_mode = clip_settings(split_cfg["pipeline"], f"data.{split}.pipeline")
    records = read_annotations(split_cfg["ann_file"], split_cfg.get("data_prefix") or "", num_classes)
    return VideoDataset(records, settings, test_mode=test_mode, decoder=decoder, seed=seed, normalize=normalize)
