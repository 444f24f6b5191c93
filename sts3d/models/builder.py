"""Build a recognizer from the ``model`` dict of a seed-style config.

``model.backbone.type`` names the seed's class (``ResNet3dCSN``, ``ResNet2Plus1d``, ``ResNet3dSlowFast``,
``ResNet3dSlowOnly``, ``X3D``); the backbone starts from the matching entry of the factory table and the config's
keys override it, so ``depth``, ``reshape_t`` / ``reshape_st``, ``slow_pathway`` / ``fast_pathway`` and
``conv_cfg`` mean what they meant in the seed. ``model.cls_head`` (``I3DHead``, ``SlowFastHead``, ``X3DHead``)
takes ``num_classes``, ``in_channels``, ``dropout_ratio`` and ``init_std``.
"""
from __future__ import annotations

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


def build_recognizer(model_cfg: Mapping[str, Any]) -> Recognizer3D:
    """``model = dict(type='Recognizer3D', backbone=dict(...), cls_head=dict(...), test_cfg=dict(...))`` ->
    :class:`Recognizer3D`. ``test_cfg`` is read by the tester, not here."""
    if model_cfg.get("type", "Recognizer3D") != "Recognizer3D":
        raise ValueError(f"model.type must be 'Recognizer3D', got {model_cfg.get('type')!r}")
    backbone_cfg, head_cfg = dict(model_cfg["backbone"]), dict(model_cfg["cls_head"])
    backbone_type = backbone_cfg.get("type")
    if backbone_type not in BACKBONE_TYPES:
        raise ValueError(f"model.backbone.type {backbone_type!r} is not one of {sorted(BACKBONE_TYPES)}")
    head_type = head_cfg.get("type")
    if head_type not in HEAD_TYPES:
        raise ValueError(f"model.cls_head.type {head_type!r} is not one of {sorted(HEAD_TYPES)}")
    head_kwargs = _without_inert(head_cfg, "model.cls_head")
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
