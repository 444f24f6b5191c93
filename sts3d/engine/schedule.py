"""The fine-tuning learning-rate schedule: mmcv's ``CosineAnnealing`` policy with an optional linear warm-up.

Read from an mmcv-style ``lr_config``, e.g. the seed's ``dict(policy='CosineAnnealing', min_lr=0, warmup='linear',
warmup_by_epoch=True, warmup_iters=5)``, with mmcv 1.x's rules:

* the cosine rate is ``min + (base - min) * (1 + cos(pi * progress / max_progress)) / 2``, where progress is the
  0-based epoch out of ``total_epochs`` (``by_epoch=True``, the default) or the 0-based global iteration out of
  ``total_epochs * iters_per_epoch`` (``by_epoch=False``);
* ``min_lr`` or ``min_lr_ratio`` (a fraction of the base rate) sets the floor, exactly one of them;
* the warm-up always runs per iteration, over ``warmup_iters`` iterations, or over ``warmup_iters`` epochs of
  iterations with ``warmup_by_epoch=True`` (mmcv's default is False); at global iteration ``i`` it scales the
  rate the schedule would otherwise have by ``1 - (1 - i / warmup_iters) * (1 - warmup_ratio)`` (``warmup_ratio``
  defaults to 0.1). With ``by_epoch=True`` the rate it scales is the current epoch's cosine rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch


# mmcv's CosineAnnealingLrUpdaterHook arguments that this schedule reads
_KEYS = {"policy", "min_lr", "min_lr_ratio", "by_epoch", "warmup", "warmup_iters", "warmup_ratio", "warmup_by_epoch"}


@dataclass(frozen=True)
class CosineWarmup:
    base_lr: float
    total_epochs: int
    iters_per_epoch: int
    min_lr: float = 0.0
    warmup_epochs: float = 0.0  # the warm-up's length in epochs (warmup_iters / iters_per_epoch without by-epoch)
    warmup_ratio: float = 0.1
    by_epoch: bool = True

    @classmethod
    def from_config(cls, lr_config: Mapping[str, Any], base_lr: float, total_epochs: int,
                    iters_per_epoch: int) -> "CosineWarmup":
        # mmcv's hooks raised a TypeError for any other key; a typo must not pass unnoticed
        unknown = sorted(set(lr_config) - _KEYS)
        if unknown:
            raise ValueError(f"lr_config: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
        if lr_config.get("min_lr") is not None and lr_config.get("min_lr_ratio") is not None:
            raise ValueError("lr_config: give min_lr or min_lr_ratio, not both")
        min_lr = (base_lr * float(lr_config["min_lr_ratio"]) if lr_config.get("min_lr_ratio") is not None
                  else float(lr_config.get("min_lr") or 0.0))
        policy = lr_config.get("policy", "CosineAnnealing")
        if policy != "CosineAnnealing":
            raise ValueError(f"lr_config.policy {policy!r} is not supported (only 'CosineAnnealing')")
        by_epoch = lr_config.get("by_epoch", True)
        if not isinstance(by_epoch, bool):
            raise ValueError(f"lr_config.by_epoch must be True or False, got {by_epoch!r}")
        warmup = lr_config.get("warmup")
        if warmup not in (None, "linear"):
            raise ValueError(f"lr_config.warmup {warmup!r} is not supported (only 'linear' or None)")
        warmup_epochs, ratio = 0.0, float(lr_config.get("warmup_ratio", 0.1))
        if warmup:
            # mmcv's LrUpdaterHook checks: a positive length and a ratio in (0, 1]
            warmup_iters = lr_config.get("warmup_iters", 0)
            if not warmup_iters or warmup_iters <= 0:
                raise ValueError(f"lr_config.warmup_iters must be positive, got {warmup_iters!r}")
            if not 0 < ratio <= 1:
                raise ValueError(f"lr_config.warmup_ratio must be in (0, 1], got {ratio!r}")
            # mmcv counts warmup_iters in iterations unless warmup_by_epoch=True
            warmup_epochs = (float(warmup_iters) if lr_config.get("warmup_by_epoch", False)
                             else warmup_iters / iters_per_epoch)
        return cls(base_lr, total_epochs, iters_per_epoch, min_lr, warmup_epochs, ratio, by_epoch)

    @property
    def warmup_iters(self) -> float:
        """The warm-up's length in iterations (mmcv: ``warmup_epochs * len(data_loader)``)."""
        if self.warmup_epochs == 0:
            return 0
        whole = round(self.warmup_epochs * self.iters_per_epoch)
        exact = self.warmup_epochs * self.iters_per_epoch
        return whole if math.isclose(whole, exact) else exact

    def _cosine(self, progress: float, max_progress: float) -> float:
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress / max_progress)) / 2

    def epoch_lr(self, epoch: int) -> float:
        """The cosine rate of 0-based ``epoch`` (the by-epoch rate)."""
        return self._cosine(epoch, self.total_epochs)

    def regular_lr(self, iteration: int, epoch: Optional[int] = None) -> float:
        """The rate without warm-up at global 0-based ``iteration`` of 0-based ``epoch``."""
        if not self.by_epoch:
            return self._cosine(iteration, self.total_epochs * self.iters_per_epoch)
        return self.epoch_lr(iteration // self.iters_per_epoch if epoch is None else epoch)

    def lr(self, iteration: int, epoch: Optional[int] = None) -> float:
        """The rate of global 0-based ``iteration``, which falls in 0-based ``epoch`` (by default
        ``iteration // iters_per_epoch``; a resumed run passes its own count, as mmcv's runner does)."""
        regular = self.regular_lr(iteration, epoch)
        warmup_iters = self.warmup_iters
        if iteration >= warmup_iters:
            return regular
        k = (1 - iteration / warmup_iters) * (1 - self.warmup_ratio)
        return regular * (1 - k)

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int, epoch: Optional[int] = None) -> float:
        value = self.lr(iteration, epoch)
        for group in optimizer.param_groups:
            group["lr"] = value
        return value
