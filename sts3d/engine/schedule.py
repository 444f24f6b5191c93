"""The fine-tuning learning-rate schedule of the seed: cosine annealing stepped per epoch, with a linear warm-up
stepped per iteration over the first ``warmup_epochs`` epochs, starting from ``warmup_ratio`` times the rate.

Read from the seed's ``lr_config = dict(policy='CosineAnnealing', min_lr=0, warmup='linear', warmup_by_epoch=True,
warmup_iters=5)`` (``warmup_ratio`` defaults to 0.1, as in mmcv; ``min_lr_ratio`` sets the floor relative to the
rate instead of ``min_lr``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch


# mmcv's CosineAnnealingLrUpdaterHook arguments that this schedule reads
_KEYS = {"policy", "min_lr", "min_lr_ratio", "by_epoch", "warmup", "warmup_iters", "warmup_ratio", "warmup_by_epoch"}


@dataclass(frozen=True)
class CosineWarmup:
    base_lr: float
    total_epochs: int
    iters_per_epoch: int
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    warmup_ratio: float = 0.1

    @classmethod
    def from_config(cls, lr_config: Mapping[str, Any], base_lr: float, total_epochs: int,
                    iters_per_epoch: int) -> "CosineWarmup":
        # mmcv's hooks raised a TypeError for any other key; a typo must not pass unnoticed
        unknown = sorted(set(lr_config) - _KEYS)
        if unknown:
            raise ValueError(f"lr_config: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
        if not lr_config.get("by_epoch", True):
            raise ValueError("lr_config.by_epoch=False is not supported (the cosine rate is stepped per epoch)")
        if lr_config.get("min_lr") is not None and lr_config.get("min_lr_ratio") is not None:
            raise ValueError("lr_config: give min_lr or min_lr_ratio, not both")
        min_lr = (base_lr * float(lr_config["min_lr_ratio"]) if lr_config.get("min_lr_ratio") is not None
                  else float(lr_config.get("min_lr") or 0.0))
        policy = lr_config.get("policy", "CosineAnnealing")
        if policy != "CosineAnnealing":
            raise ValueError(f"lr_config.policy {policy!r} is not supported (only 'CosineAnnealing')")
        warmup = lr_config.get("warmup")
        if warmup not in (None, "linear"):
            raise ValueError(f"lr_config.warmup {warmup!r} is not supported (only 'linear' or None)")
        warmup_iters = lr_config.get("warmup_iters", 0) if warmup else 0
        warmup_epochs = warmup_iters if lr_config.get("warmup_by_epoch", True) else warmup_iters / iters_per_epoch
        return cls(base_lr, total_epochs, iters_per_epoch, min_lr, float(warmup_epochs),
                   float(lr_config.get("warmup_ratio", 0.1)))

    def epoch_lr(self, epoch: int) -> float:
        """The cosine rate of 0-based ``epoch``."""
        progress = epoch / self.total_epochs
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2

    def lr(self, iteration: int) -> float:
        """The rate of global 0-based ``iteration`` (``epoch * iters_per_epoch + step``)."""
        regular = self.epoch_lr(iteration // self.iters_per_epoch)
        warmup_iters = self.warmup_epochs * self.iters_per_epoch
        if iteration >= warmup_iters:
            return regular
        k = (1 - iteration / warmup_iters) * (1 - self.warmup_ratio)
        return regular * (1 - k)

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> float:
        value = self.lr(iteration)
        for group in optimizer.param_groups:
            group["lr"] = value
        return value
