"""The backbone names, their default settings, and how ``sts=True`` maps onto each model's seed switches.

This table is the one place where a backbone's defaults live (the fine-tuning settings of the seed's STS
configs); configs and call sites override it with keyword arguments of the backbone class.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .depthwise import DepthwiseImpl, check_depthwise_impl
from .sts import STS_MODES, STSMode


@dataclass(frozen=True)
class BackboneEntry:
    """How to build one named backbone: its class, default keyword arguments and the STS switches."""
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any]
    sts_switches: dict[str, Any]  # the seed's switches that sts=True turns on, merged over the defaults
    clip_shape: tuple[int, int, int]  # (T, H, W) of the seed's training clips, for FLOP tables
    family: str = field(default="")
    head: str = "i3d"  # the fine-tuning head: "i3d", "slowfast" or "x3d" (sts3d.models.heads)
    feat_channels: int = 2048  # channels the head receives (slow + fast for SlowFast)
    depthwise: bool = False  # has depthwise 3x3x3 convs; its builder then takes ``depthwise_impl``


_BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(name: str, entry: BackboneEntry) -> None:
    if name in _BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered")
    _BACKBONES[name] = entry


def list_backbones() -> list[str]:
    """The registered backbone names, sorted."""
    return sorted(_BACKBONES)


def backbone_entry(name: str) -> BackboneEntry:
    if name not in _BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; valid names: {', '.join(list_backbones())}")
    return _BACKBONES[name]


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, merging nested dicts (a pathway's settings) key by key."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def backbone_kwargs(name: str, sts: bool = False, sts_mode: STSMode = "faithful",
                    depthwise_impl: DepthwiseImpl = "auto", **overrides) -> dict:
    """The keyword arguments ``create_backbone`` passes to the backbone class (defaults, STS switches, overrides)."""
    entry = backbone_entry(name)
    if sts_mode not in STS_MODES:
        raise ValueError(f"sts_mode must be one of {STS_MODES}, got {sts_mode!r}")
    check_depthwise_impl(depthwise_impl)
    kwargs = entry.defaults
    if sts:
        kwargs = deep_merge(kwargs, entry.sts_switches)
    kwargs = deep_merge(kwargs, overrides)
    kwargs["sts_mode"] = sts_mode
    if entry.depthwise:
        kwargs["depthwise_impl"] = depthwise_impl
    return kwargs


def create_backbone(name: str, sts: bool = False, sts_mode: STSMode = "faithful",
                    depthwise_impl: DepthwiseImpl = "auto", with_cp: bool = False, **overrides) -> nn.Module:
    """Build a backbone by name.

    ``sts=True`` turns on the seed's STS switches for that model (``reshape_st`` for ir-CSN and X3D, ``reshape_t``
    for SlowOnly and both SlowFast pathways, ``conv_cfg=dict(type='Conv2plus1d_reshape')`` for R(2+1)D);
    ``sts_mode`` is ``'faithful'`` (the original's behaviour) or ``'aligned'``; ``depthwise_impl`` is how the
    depthwise 3x3x3 convs of ir-CSN and X3D are computed (``'auto'``, ``'frames'`` or the stock ``'conv3d'``, see
    :mod:`sts3d.models.depthwise`; the other backbones have none); ``overrides`` are keyword arguments of the
    backbone class, the seed's names (``reshape_t``, ``temporal_strides``, ``slow_pathway=dict(...)``);
    ``with_cp`` checkpoints the activations of every residual block (:mod:`sts3d.models.checkpointing`).
    None of these settings changes a ``state_dict`` key or shape.
    Input ``(N, 3, T, H, W)``; output ``(N, C, T', H', W')``, or ``(slow, fast)`` for SlowFast.
    """
    backbone = backbone_entry(name).builder(**backbone_kwargs(name, sts, sts_mode, depthwise_impl, **overrides))
    if with_cp:
        from .checkpointing import checkpoint_blocks  # the model files import this module

        checkpoint_blocks(backbone)
    return backbone
