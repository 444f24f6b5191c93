"""Reading checkpoints (the original's and ours), mapping their keys onto a model, and reporting what loaded.

Key mapping (the seed's ``load_from``, in this order): ``get_feature`` -> ``backbone``, a leading ``fc1.`` ->
``cls_head.fc1.``, ``classifier.0.`` -> ``cls_head.fc1.``, ``classifier`` -> ``cls_head.fc_cls``. A leading
``module.`` (DDP) is dropped. Loading is non-strict: keys whose shape differs are skipped and reported (the image
classifier's 1000 classes never fit a video head), and a load where no backbone weight fits is an error; ``load_from``
(:func:`load_pretrained`) also fails when any backbone weight is missing or of another shape.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import torch
from torch import nn

SEED_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"get_feature", "backbone"),
    (r"^fc1\.", "cls_head.fc1."),
    (r"classifier\.0\.", "cls_head.fc1."),
    (r"classifier", "cls_head.fc_cls"),
)


def _numpy_globals() -> list:
    """What a pickled NumPy scalar or array needs. mmcv's EvalHook keeps ``meta['hook_msgs']['best_score']`` as
    the ``numpy.float64`` mmaction's metrics return, so the original's ``best_*.pth`` files hold one. NumPy 1.x
    pickled these under ``numpy.core``, NumPy 2 under ``numpy._core``; both names are allowed."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    found = [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # the per-dtype classes, NumPy >= 1.25 (before, every dtype is np.dtype)
    found += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")] if dtypes else []
    found += [(multiarray.scalar, "numpy.core.multiarray.scalar"),
              (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
    return found


# Classes the original's checkpoints pickle besides tensors: timm stores its argparse Namespace under 'args', and
# mmcv stores NumPy scalars in 'meta'. None of these can run code when unpickled.
SAFE_GLOBALS = [argparse.Namespace, *_numpy_globals()]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot serve the model it is loaded into."""


@dataclass
class LoadReport:
    """What a non-strict load did, key by key (model keys, after mapping)."""
    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.source}: loaded {len(self.loaded)}, missing {len(self.missing)}, "
                 f"unexpected {len(self.unexpected)}, shape-mismatched {len(self.mismatched)}"]
        lines += [f"  mismatched {key}: checkpoint {list(src)} vs model {list(dst)}"
                  for key, src, dst in self.mismatched]
        lines += [f"  missing {key}" for key in self.missing]
        lines += [f"  unexpected {key}" for key in self.unexpected]
        return "\n".join(lines)


def read_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True``; the original's pickled ``args`` Namespace is allowed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # a truncated file, or a pickle of something we do not trust
            refused = re.search(r"Unsupported global: GLOBAL (\S+)|but got (<class '[^']+'>)", str(error))
            reason = (f"it pickles {next(g for g in refused.groups() if g)}, which is not allowed with "
                      f"weights_only=True" if refused else f"{type(error).__name__}: {error}")
            raise CheckpointError(f"{path}: cannot be read as a checkpoint ({reason})") from error
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path}: expected a dict, got {type(checkpoint).__name__}")
    return dict(checkpoint)


def extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint dict: under ``state_dict`` (timm, mmaction), ``model``, or the dict itself."""
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in checkpoint.items()}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def map_keys(state: Mapping[str, torch.Tensor], model_keys: set[str],
             key_map: tuple[tuple[str, str], ...] = SEED_KEY_MAP) -> dict[str, torch.Tensor]:
    """Rename ``state``'s keys with ``key_map`` (each rule once, in order); into a bare backbone (whose keys have
    no ``backbone.`` prefix), the ``backbone.`` prefix is then dropped and head keys are left unmatched."""
    mapped = {}
    for key, value in state.items():
        new = key
        for pattern, replacement in key_map:
            new = re.sub(pattern, replacement, new)
        mapped[new] = value
    if not any(k.startswith("backbone.") for k in model_keys):
        mapped = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in mapped.items()}
    return mapped


def _is_backbone(key: str) -> bool:
    # BN step counters are scalars that fit any network: they do not show the checkpoint is this network's
    return not key.startswith("cls_head.") and not key.endswith("num_batches_tracked")


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "state dict",
               key_map: tuple[tuple[str, str], ...] = SEED_KEY_MAP, whole_backbone: bool = False,
               arch: str = "") -> LoadReport:
    """Load ``state`` into ``model`` non-strictly after mapping its keys; return the report.

    Raises ``CheckpointError`` when not a single backbone weight loaded (a checkpoint of another network), and with
    ``whole_backbone`` when any backbone weight is missing or of another shape (only the head may differ);
    ``arch``, the checkpoint's network where it says, is named in that error. Nothing is loaded when it raises.
    """
    own = model.state_dict()
    mapped = map_keys(state, set(own), key_map)
    report = LoadReport(source)
    usable = {}
    for key, value in mapped.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            usable[key] = value
            report.loaded.append(key)
    report.missing = [key for key in own if key not in mapped]
    if not any(_is_backbone(k) for k in report.loaded):
        raise CheckpointError(f"{source}: no backbone weight fits this model\n{report.summary()}")
    missing = [k for k in report.missing if _is_backbone(k)]
    mismatched = [k for k, _, _ in report.mismatched if _is_backbone(k)]
    if whole_backbone and (missing or mismatched):
        raise CheckpointError(
            f"{source}{f' ({arch})' if arch else ''} looks like another network: {len(missing)} backbone weights "
            f"missing, {len(mismatched)} of another shape (first: {(missing + mismatched)[0]})\n{report.summary()}")
    model.load_state_dict(usable, strict=False)
    return report


def load_checkpoint(model: nn.Module, path: Union[str, Path],
                    key_map: tuple[tuple[str, str], ...] = SEED_KEY_MAP) -> LoadReport:
    """Read ``path`` (a ``.pth`` / ``.pth.tar`` of the original or ours) and load it into ``model`` (see
    :func:`load_state`)."""
    return load_state(model, extract_state_dict(read_checkpoint(path)), str(path), key_map)


# The seed's ``inflate=True`` path renames the backbone and X3D's ``fc1`` (as the plain path does) but not the
# classifier, which is therefore never carried over.
INFLATE_KEY_MAP: tuple[tuple[str, str], ...] = SEED_KEY_MAP[:2]


def inflate_centre(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The seed's ``inflate=True``: every 5-D weight with 3 temporal taps is rebuilt from its centre slice ``c``
    as ``[c/9, c/3, c/9]`` (the centre divided by 3, then scaled by ``(1/3, 1, 1/3)``)."""
    inflated = {}
    for key, value in state.items():
        if value.dim() == 5 and value.shape[2] == 3 and value.is_floating_point():
            centre = value[:, :, 1:2] / 3
            value = torch.cat((centre / 3, centre, centre / 3), dim=2)
        inflated[key] = value
    return inflated


def load_pretrained(model: nn.Module, path: Union[str, Path], inflate: bool = False) -> LoadReport:
    """The seed's ``load_from``: a stage-1 checkpoint (``get_feature.*``, ``fc1.*``, ``classifier.*``), one of
    ours, or an original released fine-tuned one (``backbone.*``, ``cls_head.*``), loaded with the seed's key
    mapping; ``inflate`` takes the seed's ``inflate=True`` path (:func:`inflate_centre`). The head loads where its
    shapes fit; every backbone weight must load, since a partly loaded backbone is another network's."""
    checkpoint = read_checkpoint(path)
    state, arch = extract_state_dict(checkpoint), str(checkpoint.get("arch") or "")
    if inflate:
        return load_state(model, inflate_centre(state), str(path), INFLATE_KEY_MAP, whole_backbone=True, arch=arch)
    return load_state(model, state, str(path), whole_backbone=True, arch=arch)


def save_checkpoint(checkpoint: Mapping[str, Any], path: Union[str, Path]) -> None:
    """Write ``checkpoint`` atomically: to a temporary file beside ``path``, then renamed over it, so a run killed
    mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(dict(checkpoint), tmp)
    tmp.replace(path)


def publish_checkpoint(in_file: Union[str, Path], out_file: Union[str, Path]) -> Path:
    """mmaction's ``publish_model.py``: ``in_file`` without its ``optimizer`` state (only resuming needs it, and it
    is most of a training checkpoint's size), written as ``<out_file without .pth>-<sha256[:8]>.pth``, the hash
    being the written file's, so ``sha256sum`` checks a download against its name. Returns that path."""
    checkpoint = read_checkpoint(in_file)
    if not extract_state_dict(checkpoint):
        raise CheckpointError(f"{in_file}: holds no weights to publish")
    checkpoint.pop("optimizer", None)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getvalue()
    out = str(out_file)
    final = Path(f"{out[:-len('.pth')] if out.endswith('.pth') else out}-{hashlib.sha256(data).hexdigest()[:8]}.pth")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(final)  # as save_checkpoint: an interrupted run leaves no half-written file under the final name
    return final
