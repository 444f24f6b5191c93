"""The seed's data pipelines (lists of ``dict(type=...)`` steps) read into :class:`ClipSettings`, and datasets built
from a config's ``data.{train,val,test}`` entries.

Configs keep the seed's pipeline lists so that a user of the original reads them as before; this module is the
one place that interprets them. Each step the seed used maps onto a field: ``SampleFrames`` -> clip length,
interval and clips; ``Resize`` with ``scale=(-1, S)`` -> short side ``S``; ``RandomResizedCrop`` -> area and
aspect ranges; ``Resize`` with ``keep_ratio=False`` after it -> output size; ``Flip`` -> flip; ``CenterCrop`` /
``ThreeCrop`` -> test views. Decord's decoding steps, formatting and collecting are accepted as they are;
anything else is an error naming the step, so a pipeline is never silently read differently from what it says.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from .video import DECODERS, MEAN, STD, ClipSettings, VideoDataset, read_annotations

# steps whose work this project's loader always does the same way (decode online, NCTHW float tensors)
_PASSIVE = {"DecordInit", "DecordDecode", "FormatShape", "Collect", "ToTensor"}
# mmaction's other decoders count a video's frames their own way (PyAVInit: the container's frame count;
# OpenCVInit: OpenCV's) and fall back to other frames past the last decodable one, so SampleFrames would spread the
# clips differently from decord's numbering, which every decoder here follows
_OTHER_DECODERS = {"PyAVInit", "PyAVDecode", "OpenCVInit", "OpenCVDecode", "PIMSInit", "PIMSDecode"}


# mmaction 0.20's arguments of each step this module reads: the ones it implements, and the ones it accepts only at
# mmaction's default value (anything else would change the clips). A key outside both is a typo: mmaction raised a
# TypeError for it, and so does this module, rather than reading the pipeline differently from what it says.
_STEP_KEYS: dict[str, set[str]] = {
    "SampleFrames": {"clip_len", "frame_interval", "num_clips", "test_mode", "out_of_bound_opt"},
    "Resize": {"scale", "keep_ratio"},
    "RandomResizedCrop": {"area_range", "aspect_ratio_range"},
    "CenterCrop": {"crop_size"},
    "ThreeCrop": {"crop_size"},
    "Flip": {"flip_ratio"},
    "Normalize": {"mean", "std", "to_bgr"},
    "FormatShape": {"input_format"},
    "DecordDecode": set(),
}
_DEFAULT_ONLY: dict[str, dict[str, tuple]] = {
    "DecordDecode": {"mode": ("accurate",)},  # 'efficient' seeks to keyframes only
    "SampleFrames": {"temporal_jitter": (False,), "twice_sample": (False,), "start_index": (None, 0),
                     "keep_tail_frames": (False,)},
    "Resize": {"interpolation": ("bilinear",), "lazy": (False,)},
    "RandomResizedCrop": {"lazy": (False,)},
    "CenterCrop": {"lazy": (False,)},
    "Flip": {"direction": ("horizontal",), "flip_label_map": (None,), "left_kp": (None,), "right_kp": (None,),
             "lazy": (False,)},
    "Normalize": {"adjust_magnitude": (False,)},
    "FormatShape": {"collapse": (False,)},
}


# arguments without a default in mmaction's constructors (leaving one out was a TypeError there)
_REQUIRED: dict[str, tuple[str, ...]] = {
    "SampleFrames": ("clip_len",), "Resize": ("scale",), "CenterCrop": ("crop_size",), "ThreeCrop": ("crop_size",),
    "Normalize": ("mean", "std"), "FormatShape": ("input_format",)}


class PipelineError(ValueError):
    """A pipeline step this project cannot honour; the message names the split and the step."""


def _check_keys(step: Mapping[str, Any], kind: str, where: str) -> None:
    for key in _REQUIRED.get(kind, ()):
        if key not in step:
            raise PipelineError(f"{where}: missing argument {key!r}")
    if kind not in _STEP_KEYS:
        return
    defaults = _DEFAULT_ONLY.get(kind, {})
    for key, value in step.items():
        if key == "type" or key in _STEP_KEYS[kind]:
            continue
        if key not in defaults:
            known = sorted(_STEP_KEYS[kind] | set(defaults))
            raise PipelineError(f"{where}: unknown argument {key!r} (known: {', '.join(known)})")
        if value not in defaults[key]:
            raise PipelineError(f"{where}: only {key}={defaults[key][0]!r} (mmaction's default) is supported, "
                                f"got {value!r}")


def _square(size: Any, where: str) -> int:
    """A crop size given as ``S`` or ``(S, S)`` (mmaction takes ``(w, h)``; only square crops are supported)."""
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or size[0] != size[1]:
            raise PipelineError(f"{where}: only square crops are supported, got crop_size={tuple(size)}")
        size = size[0]
    return int(size)


def _check_normalize(step: Mapping[str, Any], where: str) -> None:
    mean, std = tuple(step.get("mean", MEAN)), tuple(step.get("std", STD))
    if any(abs(a - b) > 1e-6 for a, b in zip(mean + std, MEAN + STD)) or step.get("to_bgr", False):
        raise PipelineError(f"{where}: only the seed's RGB normalisation (mean {MEAN}, std {STD}) is supported")


# mmaction runs the steps in list order; the loader here runs them in this one order (a step given twice, or out of
# it, would give other pixels than the list says, so it is refused). The ranks that matter: the short-side Resize
# before the crop, the fixed-size Resize after it, Flip after every resize, Normalize after every geometric step.
_ORDER = {"SampleFrames": 0, "short-side Resize": 1, "crop": 2, "fixed-size Resize": 3, "Flip": 4, "Normalize": 5,
          "FormatShape": 6}


def _short_side(scale: Any, where: str) -> int:
    """The short side of a keep-ratio ``Resize``: mmaction turns a scale whose smaller entry is -1 into ``(inf,
    larger)``, and mmcv's ``rescale_size`` then scales the short side to the finite entry; so ``(-1, S)``, ``(S,
    -1)``, ``(inf, S)`` and ``(S, inf)`` all mean short side ``S``."""
    if isinstance(scale, (tuple, list)) and len(scale) == 2:
        unbounded = [s for s in scale if s == -1 or s == float("inf")]
        bounded = [s for s in scale if not (s == -1 or s == float("inf"))]
        if len(unbounded) == 1 and bounded[0] > 0:
            return int(bounded[0])
    raise PipelineError(f"{where}: keep-ratio resizing takes scale=(-1, short_side), got {scale}")


def clip_settings(pipeline: Sequence[Mapping[str, Any]], where: str = "pipeline") -> tuple[ClipSettings, bool]:
    """``(settings, test_mode)`` of a seed pipeline list; ``test_mode`` is ``SampleFrames``'s. Without a short-side
    ``Resize`` the crop takes the decoded frames as they are (``short_side=None``), as in mmaction."""
    fields: dict[str, Any] = {"flip": False, "short_side": None}
    test_mode = None
    seen: dict[int, str] = {}  # rank -> the step that took it
    latest = (-1, "")
    crop = None
    for number, step in enumerate(pipeline):
        kind = step.get("type")
        here = f"{where}[{number}] {kind}"
        _check_keys(step, kind, here)
        if kind == "FormatShape" and step.get("input_format", "NCTHW") != "NCTHW":
            raise PipelineError(f"{here}: only input_format='NCTHW' is supported")
        if kind == "Resize":
            stage = "short-side Resize" if step.get("keep_ratio", True) else "fixed-size Resize"
        elif kind in ("RandomResizedCrop", "CenterCrop", "ThreeCrop"):
            stage = "crop"
        else:
            stage = kind if kind in _ORDER else None
        if stage is not None:
            rank = _ORDER[stage]
            if rank in seen:
                raise PipelineError(f"{here}: a second {stage} step (the first is {seen[rank]}); mmaction would apply "
                                    f"both")
            if rank < latest[0]:
                raise PipelineError(f"{here}: must come before {latest[1]} (mmaction applies the steps in list order; "
                                    f"this order is not supported)")
            seen[rank] = here
            latest = (rank, here)
        if kind in _PASSIVE:
            continue
        if kind in _OTHER_DECODERS:
            raise PipelineError(f"{here}: mmaction's {kind} numbers frames otherwise than decord; use DecordInit / "
                                f"DecordDecode (data.decoder chooses the decoder, with decord's frames)")
        if kind == "SampleFrames":
            fields.update(clip_len=int(step["clip_len"]), frame_interval=int(step.get("frame_interval", 1)),
                          num_clips=int(step.get("num_clips", 1)))
            test_mode = bool(step.get("test_mode", False))
            if step.get("out_of_bound_opt", "loop") != "loop":
                raise PipelineError(f"{here}: only out_of_bound_opt='loop' (the seed's) is supported")
        elif kind == "Resize":
            scale = tuple(step["scale"])
            if step.get("keep_ratio", True):
                fields["short_side"] = _short_side(scale, here)
            elif crop == "RandomResizedCrop" and len(scale) == 2 and scale[0] == scale[1]:
                fields["crop_size"] = int(scale[0])
            else:
                raise PipelineError(f"{here}: a fixed-size resize is supported only after RandomResizedCrop, "
                                    f"to a square")
        elif kind == "RandomResizedCrop":
            crop = kind
            fields["area_range"] = tuple(step.get("area_range", (0.08, 1.0)))
            fields["aspect_ratio_range"] = tuple(step.get("aspect_ratio_range", (3 / 4, 4 / 3)))
        elif kind in ("CenterCrop", "ThreeCrop"):
            crop = kind
            fields.update(crop_size=_square(step["crop_size"], here),
                          test_crop="center" if kind == "CenterCrop" else "three")
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
    # mmaction's test_mode changes SampleFrames only; the loader's test path takes fixed crops and no flip, its
    # training path a random-resized crop resized to a square, so each pipeline must say exactly that
    if test_mode:
        if crop not in ("CenterCrop", "ThreeCrop"):
            raise PipelineError(f"{where}: a test pipeline (SampleFrames test_mode=True) needs CenterCrop or ThreeCrop"
                                + (f", not {crop} (mmaction's would still be random)" if crop else ""))
        if fields["flip"]:
            raise PipelineError(f"{where}: a test pipeline cannot have a random Flip (mmaction's would still be "
                                f"random); use flip_ratio=0 or leave it out")
    else:
        if crop is None:
            raise PipelineError(f"{where}: a training pipeline needs RandomResizedCrop")
        if crop != "RandomResizedCrop":
            raise PipelineError(f"{where}: a training pipeline takes RandomResizedCrop, not {crop}")
        if _ORDER["fixed-size Resize"] not in seen:
            raise PipelineError(f"{where}: RandomResizedCrop needs a fixed-size Resize after it (scale=(S, S), "
                                f"keep_ratio=False); without one mmaction's crops keep their own sizes")
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


# the keys of ``data`` this project reads; mmaction ignored others too, so an unknown one is a warning
DATA_KEYS = {"videos_per_gpu", "workers_per_gpu", "train_dataloader", "val_dataloader", "test_dataloader", "decoder",
             "normalize_on_device", "train", "val", "test"}
# mmaction's VideoDataset arguments: the ones read here, and the ones accepted only at its default
_SPLIT_KEYS = {"type", "ann_file", "data_prefix", "pipeline", "test_mode"}
_SPLIT_DEFAULT_ONLY = {"start_index": (0,), "modality": ("RGB",), "multi_class": (False,)}


def unknown_data_keys(data_cfg: Mapping[str, Any]) -> list[str]:
    """Keys of ``data`` that nothing reads (a typo such as ``vidoes_per_gpu``)."""
    return sorted(set(data_cfg) - DATA_KEYS)


def build_dataset(split_cfg: Mapping[str, Any], split: str, num_classes: Optional[int],
                  decoder: str = "decord", seed: int = 0, normalize: bool = True) -> VideoDataset:
    """The dataset of ``data.<split>`` (``ann_file``, ``data_prefix``, ``pipeline``); labels are checked against
    ``num_classes`` before anything trains. ``normalize=False``: uint8 clips, the pipeline's ``Normalize`` left
    to the device (:func:`~sts3d.data.video.normalize_clips`)."""
    for key, value in split_cfg.items():
        if key in _SPLIT_DEFAULT_ONLY and value not in _SPLIT_DEFAULT_ONLY[key]:
            raise PipelineError(f"data.{split}: only {key}={_SPLIT_DEFAULT_ONLY[key][0]!r} is supported, got {value!r}")
        if key not in _SPLIT_KEYS and key not in _SPLIT_DEFAULT_ONLY:
            raise PipelineError(f"data.{split}: unknown key {key!r} (known: "
                                f"{', '.join(sorted(_SPLIT_KEYS | set(_SPLIT_DEFAULT_ONLY)))})")
    if split_cfg.get("type", "VideoDataset") != "VideoDataset":
        raise PipelineError(f"data.{split}.type must be 'VideoDataset', got {split_cfg.get('type')!r}")
    if decoder not in DECODERS:
        raise PipelineError(f"data.decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
    settings, test_mode = clip_settings(split_cfg["pipeline"], f"data.{split}.pipeline")
    records = read_annotations(split_cfg["ann_file"], split_cfg.get("data_prefix") or "", num_classes)
    return VideoDataset(records, settings, test_mode=test_mode, decoder=decoder, seed=seed, normalize=normalize)
