"""Backbone + head, with the original fine-tuned checkpoints' keys (``backbone.*``, ``cls_head.*``)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .factory import backbone_entry, create_backbone
from .heads import I3DHead, SlowFastHead, X3DHead
from .sts import STSMode

HEADS = {"i3d": I3DHead, "slowfast": SlowFastHead, "x3d": X3DHead}
AVERAGE_CLIPS = ("prob", "score", None)


def average_clips(scores: torch.Tensor, mode: Optional[str] = "prob") -> torch.Tensor:
    """Average per-view scores ``(N, V, K)`` into ``(N, K)``: of softmax probabilities (``'prob'``), of raw scores
    (``'score'``), or keep the views (``None``)."""
    if mode not in AVERAGE_CLIPS:
        raise ValueError(f"average_clips must be one of {AVERAGE_CLIPS}, got {mode!r}")
    if mode is None:
        return scores
    if mode == "prob":
        scores = scores.softmax(dim=-1)
    return scores.mean(dim=1)


class Recognizer3D(nn.Module):
    """A video classifier: ``backbone`` features -> ``cls_head`` logits.

    ``forward`` takes a clip batch ``(N, C, T, H, W)`` and returns logits ``(N, K)``, or a batch of views
    ``(N, V, C, T, H, W)`` (clips x crops of each video) and returns per-view logits ``(N, V, K)``.

    With ``num_segments`` set (the seed's Something-Something V2 form, ``clip_len=1``), a video arrives as ``M``
    one-frame segments ``(N, M, C, 1, H, W)``; every ``num_segments`` consecutive segments are folded into the time
    axis of one clip, so ``M = V * num_segments`` gives ``V`` views of ``(C, num_segments, H, W)``.
    """

    def __init__(self, backbone: nn.Module, cls_head: nn.Module, num_segments: Optional[int] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head
        self.num_segments = num_segments

    def fold_segments(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, M, C, 1, H, W)`` one-frame segments -> ``(N, M / num_segments, C, num_segments, H, W)`` views."""
        n, m, c, t, h, w = x.shape
        if t != 1 or m % self.num_segments:
            raise ValueError(f"expected (N, V * {self.num_segments}, C, 1, H, W) one-frame segments, "
                             f"got {tuple(x.shape)}")
        return x.view(n, m // self.num_segments, self.num_segments, c, h, w).permute(0, 1, 3, 2, 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            return self.cls_head(self.backbone(x))
        if x.dim() != 6:
            raise ValueError(f"expected clips (N, C, T, H, W) or views (N, V, C, T, H, W), got {tuple(x.shape)}")
        if self.num_segments is not None:
            x = self.fold_segments(x)
        n, v = x.shape[:2]
        logits = self.cls_head(self.backbone(x.reshape(n * v, *x.shape[2:])))
        return logits.view(n, v, -1)


def create_head(name: str, num_classes: int, dropout: float = 0.5, init_std: float = 0.01) -> nn.Module:
    """The fine-tuning head of backbone ``name`` (I3D, SlowFast or X3D style) for ``num_classes``."""
    entry = backbone_entry(name)
    return HEADS[entry.head](num_classes, entry.feat_channels, dropout=dropout, init_std=init_std)


def create_recognizer(name: str, num_classes: int, sts: bool = False, dropout: float = 0.5,
                      sts_mode: STSMode = "faithful", num_segments: Optional[int] = None,
                      init_std: float = 0.01, **overrides) -> Recognizer3D:
    """Backbone ``name`` (see ``create_backbone``) with its head; ``num_segments`` selects the SSv2 folding."""
    backbone = create_backbone(name, sts=sts, sts_mode=sts_mode, **overrides)
    return Recognizer3D(backbone, create_head(name, num_classes, dropout, init_std), num_segments)
