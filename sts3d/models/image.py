"""The stage-1 image models ``v3d_*_224``: 3D backbones that classify images as one-frame clips.

Registered in timm on ``import sts3d``, so ``timm.create_model('v3d_x3d_s_224', num_classes=1000,
drop_path_rate=0.05)`` works. Keys are the original pre-training checkpoints': ``get_feature.*`` (the backbone, the
same keys as the fine-tuning backbone), ``classifier.*`` and, for X3D, ``fc1.*``.
"""
from __future__ import annotations

import math
from typing import Any, Union

import torch
from timm.models import register_model
from torch import nn

from .factory import backbone_entry, create_backbone
from .init import init_conv_bn_

# backbone name and the pre-training variant's overrides of the fine-tuning defaults (spec section 2)
IMAGE_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "v3d_csn50_ir_224": ("csn50_ir", {}),
    "v3d_r2plus1d34_224": ("r2plus1d34", {}),
    # one frame: the slow path is not subsampled and the laterals have temporal stride 1
    "v3d_slowfast50_4x16_224": ("slowfast50_4x16", {"temporal_resampling": False}),
    "v3d_slowfast50_8x8_224": ("slowfast50_8x8", {"temporal_resampling": False}),
    "v3d_slowonly50_224": ("slowonly50", {}),
    "v3d_x3d_s_224": ("x3d_s", {}),
}

X3D_FC1_CHANNELS = 2048


# the convs that read the RGB image: both pathways' stems for SlowFast, the spatial half of the (2+1)D / X3D stems
FIRST_CONVS: dict[str, Union[str, tuple[str, ...]]] = {
    "v3d_csn50_ir_224": "get_feature.conv1.conv",
    "v3d_r2plus1d34_224": "get_feature.conv1.conv.conv_s",
    "v3d_slowfast50_4x16_224": ("get_feature.slow_path.conv1.conv", "get_feature.fast_path.conv1.conv"),
    "v3d_slowfast50_8x8_224": ("get_feature.slow_path.conv1.conv", "get_feature.fast_path.conv1.conv"),
    "v3d_slowonly50_224": "get_feature.conv1.conv",
    "v3d_x3d_s_224": "get_feature.conv1_s.conv",
}


def _pretrained_cfg(name: str) -> dict[str, Any]:
    # What the seed's timm 0.5 resolved for these models (their default_cfg was the fork's whole table of configs, so
    # resolve_data_config fell back to its defaults): 224, bicubic, ImageNet mean/std, crop 0.875. The training
    # scripts pass --crop-pct 0.95 themselves.
    return dict(architecture=name, num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                classifier="classifier", first_conv=FIRST_CONVS[name])


def _check_global_pool(name: str, global_pool: Any) -> None:
    if global_pool not in (None, "avg"):
        raise ValueError(f"{name}: global_pool={global_pool!r} is not supported; the pool is always a 3D global "
                         f"average ('avg')")


def _init_image_model_(module: nn.Module) -> None:
    """The original's ``V3D.init_weights``: Kaiming-normal (fan_out, ReLU) weights for every 3D conv, weight 1 / bias 0
    for every BN; a conv's bias (X3D's SE fcs) keeps nn.Conv3d's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    init_conv_bn_(module)  # zeroes conv biases: put the default back
    for m in module.modules():
        if isinstance(m, nn.Conv3d) and m.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(m.bias, -bound, bound)


class V3DImageModel(nn.Module):
    """A 3D backbone with an image classifier. Input images ``(N, 3, H, W)``, output logits ``(N, num_classes)``.

    Each image is a clip of one frame ``(N, 3, 1, H, W)`` (frames are not repeated), so only the centre temporal tap
    of every 3D kernel sees data. Head, in the original's order: global average pool (per pathway for SlowFast,
    concatenated ``[slow, fast]``), dropout (``drop_rate``), then for X3D ``fc1`` (432 -> 2048, bias) and ReLU, then
    ``classifier``. ``global_pool`` can only be ``'avg'``.
    """

    def __init__(self, backbone_name: str, num_classes: int = 1000, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, in_chans: int = 3, global_pool: Any = "avg",
                 **backbone_overrides) -> None:
        super().__init__()
        if in_chans != 3:
            raise ValueError(f"{backbone_name}: only 3 input channels are supported, got in_chans={in_chans}")
        _check_global_pool(backbone_name, global_pool)
        entry = backbone_entry(backbone_name)
        self.get_feature = create_backbone(backbone_name, drop_path_rate=drop_path_rate, **backbone_overrides)
        _init_image_model_(self.get_feature)  # the original re-initialises: no zero-init of any BN (spec section 2)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.num_features = entry.feat_channels
        if entry.head == "x3d":
            self.fc1 = nn.Linear(entry.feat_channels, X3D_FC1_CHANNELS)
            self.fc1_act = nn.ReLU(inplace=True)
            self.num_features = X3D_FC1_CHANNELS
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, H, W)`` -> the backbone's globally pooled features ``(N, C)`` (X3D: 432, before fc1)."""
        if x.dim() != 4:
            raise ValueError(f"expected images (N, 3, H, W), got {tuple(x.shape)}")
        features = self.get_feature(x.unsqueeze(2))
        features = features if isinstance(features, tuple) else (features,)
        return torch.cat([self.pool(f).flatten(1) for f in features], dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features -> logits; ``pre_logits`` stops before the classifier (``num_features`` wide)."""
        x = self.dropout(x)
        if hasattr(self, "fc1"):
            x = self.fc1_act(self.fc1(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Any = None) -> None:
        _check_global_pool(type(self).__name__, global_pool)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def _create(name: str, pretrained: bool = False, **kwargs) -> V3DImageModel:
    if pretrained:
        raise ValueError(f"{name}: no hosted weights; load a checkpoint with --initial-checkpoint or --resume")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm passes these to every model
        kwargs.pop(key, None)
    backbone_name, overrides = IMAGE_MODELS[name]
    model = V3DImageModel(backbone_name, **kwargs, **overrides)
    model.pretrained_cfg = model.default_cfg = _pretrained_cfg(name)
    return model


@register_model
def v3d_csn50_ir_224(pretrained: bool = False, **kwargs) -> V3DImageModel:
    return _create("v3d_csn50_ir_224", pretrained, **kwargs)


@register_model
def v3d_r2plus1d34_224(pretrained: bool = False, **kwargs) -> V3DImageModel:
    return _create("v3d_r2plus1d34_224", pretrained, **kwargs)


@register_model
def v3d_slowfast50_4x16_224(pretrained: bool = False, **kwargs) -> V3DImageModel:
    return _create("v3d_slowfast50_4x16_224", pretrained, **kwargs)


@register_model
def v3d_slowfast50_8x8_224(pretrained: bool = False, **kwargs) -> V3DImageModel:
    return _create("v3d_slowfast50_8x8_224", pretrained, **kwargs)


@register_model
def v3d_slowonly50_224(pretrained: bool = False, **kwargs) -> V3DImageModel:
    return _create("v3d_slowonly50_224", pretrained, **kwargs)


@register_model
def v3d_x3d_s_224(pretrained: bool = False, **kwargs) -> V3DImageModel:
    return _create("v3d_x3d_s_224", pretrained, **kwargs)
