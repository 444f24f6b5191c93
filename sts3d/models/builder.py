"""Build a recognizer from the ``model`` dict of a seed-style config.

``model.backbone.type`` names the seed's class (``ResNet3dCSN``, ``ResNet2Plus1d``, ``ResNet3dSlowFast``,
``ResNet3dSlowOnly``, ``X3D``); the backbone starts from the matching entry of the factory table and the config's
keys override it, so ``depth``, ``reshape_t`` / ``reshape_st``, ``slow_pathway`` / ``fast_pathway`` and
``conv_cfg`` mean what they meant in the seed. ``model.cls_head`` (``I3DHead``, ``SlowFastHead``, ``X3DHead``)
takes ``num_classes``, ``in_channels``, ``dropout_ratio`` and ``init_std``.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from .factory import create_backbone
from .heads import I3DHead, SlowFastHead, X3DHead
from .recognizer import Recognizer3D

# the seed's backbone class -> the factory entry whose defaults it starts from
BACKBONE_TYPES = {"ResNet3dCSN": "csn50_ir", "ResNet2Plus1d": "r2plus1d34", "ResNet3dSlowFast": "slowfast50_4x16",
                  "ResNet3dSlowOnly": "slowonly50", "X3D": "x3d_s"}
HEAD_TYPES = {"I3DHead": I3DHead, "SlowFastHead": SlowFastHead, "X3DHead": X3DHead}
# seed keys that only select behaviour this project does not have, accepted at the value that means "off"
_INERT = {"pretrained": None, "pretrained2d": False, "bn_frozen": False, "spatial_type": "avg", "multi_class": False,
          "zero_init_residual": False}


def _without_inert(cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    kwargs = {}
    for key, value in cfg.items():
        if key == "type":
            continue
        if key in _INERT:
            if value != _INERT[key]:
                raise ValueError(f"{where}.{key}={value!r} is not supported (only {_INERT[key]!r})")
            continue
        kwargs[key] = value
    return kwargs


# what mmaction's Recognizer3D took (anything else was a TypeError); ``num_segments`` is this project's, set by the
# engine from the pipeline
MODEL_KEYS = ("type", "backbone", "cls_head", "neck", "train_cfg", "test_cfg", "num_segments")
# the test_cfg keys mmaction's recognizer read; it ignored others
TEST_CFG_KEYS = ("average_clips", "max_testing_views", "feature_extraction")


def _check_loss(loss_cfg: Any) -> None:
    """mmaction's head loss ``loss_cls``: only its default, ``CrossEntropyLoss`` with ``loss_weight=1.0`` (the
    training loss is computed by the engine)."""
    loss = dict(loss_cfg) if isinstance(loss_cfg, Mapping) else {"type": loss_cfg}
    if (loss.pop("type", None) != "CrossEntropyLoss" or loss.pop("loss_weight", 1.0) != 1.0
            or loss.pop("class_weight", None) is not None or loss):
        raise ValueError(f"model.cls_head.loss_cls={loss_cfg!r} is not supported (only "
                         "dict(type='CrossEntropyLoss', loss_weight=1.0))")


def check_model_settings(model_cfg: Mapping[str, Any]) -> None:
    """Refuse the recognizer settings mmaction acted on that this project does not have (a neck, batch blending,
    feature extraction) and the values mmaction refused; warn about ``train_cfg`` / ``test_cfg`` keys nothing
    reads, which mmaction ignored."""
    unknown = [key for key in model_cfg if key not in MODEL_KEYS]
    if unknown:
        raise ValueError(f"model: unknown key {unknown[0]!r} (mmaction's Recognizer3D takes "
                         f"{', '.join(MODEL_KEYS[:-1])})")
    if model_cfg.get("neck") is not None:
        raise ValueError("model.neck is not supported (only None)")
    train_cfg = dict(model_cfg.get("train_cfg") or {})
    if train_cfg.pop("blending", None) is not None:
        raise ValueError("model.train_cfg.blending (mixup / cutmix of batches) is not supported")
    if train_cfg.pop("aux_info", None):
        raise ValueError("model.train_cfg.aux_info is not supported (only an empty list)")
    test_cfg = dict(model_cfg.get("test_cfg") or {})
    if test_cfg.get("average_clips", "prob") not in ("prob", "score", None):
        raise ValueError(f"model.test_cfg.average_clips must be 'prob', 'score' or None, got "
                         f"{test_cfg['average_clips']!r}")
    views = test_cfg.get("max_testing_views")
    if views is not None and (not isinstance(views, int) or isinstance(views, bool) or views < 1):
        raise ValueError(f"model.test_cfg.max_testing_views must be a positive int, got {views!r}")
    if test_cfg.get("feature_extraction"):
        raise ValueError("model.test_cfg.feature_extraction=True (pooled features instead of scores) is not "
                         "supported")
    ignored = [f"model.train_cfg.{key}" for key in train_cfg]
    ignored += [f"model.test_cfg.{key}" for key in test_cfg if key not in TEST_CFG_KEYS]
    if ignored:
        warnings.warn(f"{', '.join(ignored)}: not read by anything (mmaction ignored them too)", UserWarning)


def build_recognizer(model_cfg: Mapping[str, Any]) -> Recognizer3D:
    """``model = dict(type='Recognizer3D', backbone=dict(...), cls_head=dict(...), test_cfg=dict(...))`` ->
    :class:`Recognizer3D`. ``test_cfg`` is checked here and read by the tester."""
    if model_cfg.get("type", "Recognizer3D") != "Recognizer3D":
        raise ValueError(f"model.type must be 'Recognizer3D', got {model_cfg.get('type')!r}")
    check_model_settings(model_cfg)
    backbone_cfg, head_cfg = dict(model_cfg["backbone"]), dict(model_cfg["cls_head"])
    backbone_type = backbone_cfg.get("type")
    if backbone_type not in BACKBONE_TYPES:
        raise ValueError(f"model.backbone.type {backbone_type!r} is not one of {sorted(BACKBONE_TYPES)}")
    head_type = head_cfg.get("type")
    if head_type not in HEAD_TYPES:
        raise ValueError(f"model.cls_head.type {head_type!r} is not one of {sorted(HEAD_TYPES)}")
    head_kwargs = _without_inert(head_cfg, "model.cls_head")
    if "loss_cls" in head_kwargs:
        _check_loss(head_kwargs.pop("loss_cls"))
    if "dropout_ratio" in head_kwargs:
        head_kwargs["dropout"] = head_kwargs.pop("dropout_ratio")
    with _named_settings("model.backbone"):
        backbone = create_backbone(BACKBONE_TYPES[backbone_type], **_without_inert(backbone_cfg, "model.backbone"))
    with _named_settings("model.cls_head"):
        head = HEAD_TYPES[head_type](**head_kwargs)
    return Recognizer3D(backbone, head, num_segments=model_cfg.get("num_segments"))


@contextmanager
def _named_settings(section: str) -> Iterator[None]:
    """A misspelt setting (``reshape_stt``) as a one-line config error naming its section, not a traceback."""
    try:
        yield
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        raise ValueError(f"{section}: {str(error).split('got ', 1)[-1]}") from error
