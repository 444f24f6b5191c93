"""Input checks shared by the backbones."""
from __future__ import annotations

import torch


def check_clip_input(x: torch.Tensor, name: str, channels: int = 3) -> None:
    """Raise a clear ``ValueError`` unless ``x`` is a clip batch ``(N, channels, T, H, W)``.

    Without it a wrong input (an image batch ``(N, C, H, W)``, a clip without its batch axis, or frames-first
    ``(N, T, C, H, W)``) fails deep inside a conv with a message about weights; ``name`` is the model named in the
    error.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (N, {channels}, T, H, W), got {type(x).__name__}")
    if x.dim() != 5 or x.shape[1] != channels:
        raise ValueError(f"{name}: expected input of shape (N, {channels}, T, H, W), got {tuple(x.shape)}")
