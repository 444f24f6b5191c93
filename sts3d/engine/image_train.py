"""Stage 1: train and evaluate the ``v3d_*`` image models on image classification data.

timm supplies the pieces: transforms (RandAugment included), Mixup/CutMix, the repeated-augmentation sampler,
optimizers (LAMB, ...), schedulers, BCE / soft-target losses and top-k accuracy. This module is the loop around
them: data, model and optimizer built from the command-line ``args`` (see :mod:`sts3d.engine.image_cli`), one
epoch of training, a validation pass, BN statistics reduced across processes, checkpoints, logs.

Each epoch's random draws depend only on ``(--seed, epoch, rank)`` (see :func:`seed_epoch`), so ``--resume``
continues a run exactly as if it had not stopped.
"""
from __future__ import annotations

import argparse
import functools
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import timm
import torch
import yaml
from timm.data import Mixup, create_transform, resolve_data_config
from timm.data.distributed_sampler import RepeatAugSampler
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.plateau_lr import PlateauLRScheduler
from timm.scheduler.scheduler import Scheduler
from timm.utils import accuracy, random_seed
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoint import CheckpointError, extract_state_dict, load_state, read_checkpoint
from ..data.images import ImageDataset, check_num_classes, image_folder_dataset, image_list_dataset
from ..models.image import IMAGE_MODELS
from .checkpoints import CheckpointKeeper, LAST
from .distributed import DistContext, ShardSampler, all_reduce_sum, sync_batch_norm_stats
from .logs import EpochLog, WandbRun, format_duration, logger, progress_bar, start_wandb

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class UsageError(ValueError):
    """A command line that cannot run; the message names the flag."""


class TrainingError(RuntimeError):
    """Training that cannot go on (a non-finite loss)."""


# ----------------------------------------------------------------------------------------------- set-up helpers

def resolve_amp_dtype(enabled: bool, name: Optional[str], device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype, or ``None`` without AMP: ``name`` or, by default, float16 on CUDA and bfloat16 on CPU
    (CPU float16 would need loss scaling, which only CUDA's GradScaler provides here)."""
    if not enabled:
        return None
    name = name or ("float16" if device.type == "cuda" else "bfloat16")
    if name == "float16" and device.type != "cuda":
        raise UsageError("--amp-dtype float16 needs a CUDA device; use bfloat16 on CPU")
    return AMP_DTYPES[name]


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _float32_forward(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", enabled=False):
        return forward(x.float())


def keep_rgb_stems_float32(model: nn.Module) -> None:
    """Run the 3D convs on RGB input with a temporal kernel deeper than 1 in float32 under CPU autocast.

    PyTorch's CPU (oneDNN) bfloat16 conv3d returns garbage or NaN for a 3-channel input shallower than the
    kernel, which is exactly the stem of ir-CSN (3x7x7) and of SlowFast's fast path (5x7x7) on one-frame clips.
    The rest of the network still runs in bfloat16; weights and state-dict keys are untouched.
    """
    for conv in model.modules():
        if isinstance(conv, nn.Conv3d) and conv.in_channels == 3 and conv.kernel_size[0] > 1:
            conv.forward = functools.partial(_float32_forward, conv.forward)


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed Python, NumPy and torch from ``(seed, epoch, rank)``.

    Called before each epoch: augmentation (in the loop and in freshly started loader workers), Mixup/CutMix and
    drop-path then depend only on these three numbers, so a resumed run draws what the uninterrupted one drew.
    """
    value = int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def prepare_model(model: nn.Module, device: torch.device, amp_dtype: Optional[torch.dtype],
                  channels_last: bool) -> None:
    """Move ``model`` to ``device``; ``channels_last``: 3D conv weights NDHWC (the NHWC images become NDHWC
    one-frame clips); CPU bfloat16 autocast: RGB stems in float32 (:func:`keep_rgb_stems_float32`)."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    if device.type == "cpu" and amp_dtype == torch.bfloat16:
        keep_rgb_stems_float32(model)


def check_model_name(name: str) -> None:
    if name not in IMAGE_MODELS:
        raise UsageError(f"unknown model {name!r}; registered: {', '.join(sorted(IMAGE_MODELS))}")


def open_split(root: str, split: str, list_file: Optional[str], class_to_idx: Optional[dict[str, int]],
               warn: bool) -> ImageDataset:
    """A list-file dataset when ``list_file`` is given, else the ImageFolder split ``root/split``."""
    if list_file:
        return image_list_dataset(root, list_file, warn=warn)
    return image_folder_dataset(root, split, class_to_idx, warn=warn)


def class_index(classes: Optional[list[str]]) -> Optional[dict[str, int]]:
    return {name: i for i, name in enumerate(classes)} if classes is not None else None


# The seed's validation crop without --crop-pct. Its v3d models set ``default_cfg`` to the whole table of configs
# (keyed by model name), so timm 0.5's resolve_data_config found no ``crop_pct`` there and fell back to
# DEFAULT_CROP_PCT: resize 256, crop 224 (the models' pretrained_cfg here says the same; the scripts pass 0.95).
SEED_DEFAULT_CROP_PCT = 0.875


def data_config(args: argparse.Namespace, model: nn.Module) -> dict[str, Any]:
    """Input size, interpolation and mean/std of ``model`` (its ``pretrained_cfg``), overridden by ``--img-size``
    and ``--interpolation``; the validation crop is ``--crop-pct``, else the seed's default 0.875."""
    crop_pct = args.crop_pct if args.crop_pct is not None else SEED_DEFAULT_CROP_PCT
    return resolve_data_config(dict(img_size=args.img_size, interpolation=args.interpolation, crop_pct=crop_pct),
                               model=model)


def eval_transform(cfg: Mapping[str, Any]) -> Callable:
    """Resize the short side to ``size / crop_pct``, centre-crop ``size``, normalise: PIL -> ``(3, size, size)``."""
    return create_transform(cfg["input_size"], is_training=False, interpolation=cfg["interpolation"],
                            mean=cfg["mean"], std=cfg["std"], crop_pct=cfg["crop_pct"])


def train_transform(args: argparse.Namespace, cfg: Mapping[str, Any]) -> Callable:
    """RandomResizedCrop, flip, RandAugment / colour jitter, normalise, random erasing: PIL -> ``(3, S, S)``."""
    try:
        return create_transform(cfg["input_size"], is_training=True, scale=tuple(args.scale),
                                ratio=tuple(args.ratio), hflip=args.hflip, color_jitter=args.color_jitter,
                                auto_augment=args.aa, interpolation=args.train_interpolation, mean=cfg["mean"],
                                std=cfg["std"], re_prob=args.reprob, re_mode=args.remode)
    except (AssertionError, ValueError, KeyError) as error:  # timm's parser of --aa strings asserts
        raise UsageError(f"--aa {args.aa}: cannot be parsed ({error})") from None


def eval_loader(dataset: ImageDataset, batch_size: int, workers: int, pin_memory: bool,
                ctx: DistContext) -> DataLoader:
    """Each process evaluates its shard; no sample is repeated, so summed metrics are exact."""
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(dataset, ctx), num_workers=workers,
                      pin_memory=pin_memory and ctx.device.type == "cuda")


def train_loader(dataset: ImageDataset, args: argparse.Namespace, ctx: DistContext, even: bool) -> DataLoader:
    """Shuffled batches for this process, ``--aug-repeats`` repeated augmentations of each image spread over the
    processes (timm's ``RepeatAugSampler``, with world size 1 too).

    An epoch is ``ceil(len(dataset) / world_size)`` samples per process (timm's sampler would round large datasets
    down to a multiple of 256 before dividing). The last incomplete batch is dropped; on a dataset smaller than one
    batch the batch shrinks to what there is (even, when ``even``: Mixup/CutMix pair images within a batch).
    """
    if args.aug_repeats:
        sampler = RepeatAugSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                   num_repeats=args.aug_repeats, selected_round=0)
    else:
        # seed 0, torch's default, as timm 0.5's loader built it: the order depends on the epoch, not on --seed
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=0)
    batch_size = min(args.batch_size, len(sampler))
    batch_size -= batch_size % 2 if even else 0
    if batch_size < 1:
        raise UsageError(f"{dataset.source}: {len(sampler)} image(s) per process is too few for a batch"
                         + (" of 2 (Mixup/CutMix pair images)" if even else ""))
    if batch_size < args.batch_size:
        logger.info("batch size %d per process: the data has %d images per process", batch_size, len(sampler))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=args.workers,
                      pin_memory=args.pin_mem and ctx.device.type == "cuda", drop_last=True)


def seed_cutmix_box(height: int, width: int, lam: float) -> tuple[tuple[int, int, int, int], float]:
    """A CutMix box as timm 0.5 drew it, and the mixing weight it implies: ``((top, bottom, left, right), lam)``.

    The box has sides ``int(size * sqrt(1 - lam))`` around a centre drawn uniformly over the pixels (NumPy's global
    generator: row, then column), reaching ``side // 2`` to either side, so an odd side loses one row or column
    (timm >= 0.9 reaches ``(side + 1) // 2`` below and right of the centre); it is clipped to the image and ``lam``
    becomes the share of the image left unpasted.
    """
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    centre_y = int(np.random.randint(0, height))
    centre_x = int(np.random.randint(0, width))
    top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h // 2, height)
    left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w // 2, width)
    return (top, bottom, left, right), 1.0 - (bottom - top) * (right - left) / float(height * width)


class SeedMixup(Mixup):
    """timm's ``Mixup`` (parameters, pairing with the reversed batch, targets) with timm 0.5's CutMix boxes
    (:func:`seed_cutmix_box`) in all three modes. Images ``(N, C, H, W)``: boxes cover H and W."""

    def _box(self, shape: torch.Size, lam: float) -> tuple[tuple[int, int, int, int], float]:
        return seed_cutmix_box(shape[-2], shape[-1], lam)

    def _mix_batch(self, x: torch.Tensor) -> float:
        lam, use_cutmix = self._params_per_batch()
        if lam == 1.0:
            return 1.0
        if use_cutmix:
            (top, bottom, left, right), lam = self._box(x.shape, lam)
            x[:, :, top:bottom, left:right] = x.flip(0)[:, :, top:bottom, left:right]
        else:
            partner = x.flip(0).mul_(1.0 - lam)
            x.mul_(lam).add_(partner)
        return lam

    def _mix_each(self, x: torch.Tensor, pairs: bool) -> torch.Tensor:
        """Per-image (``pairs=False``) or per-pair parameters; image ``i`` mixes with image ``N - 1 - i``."""
        count = len(x) // 2 if pairs else len(x)
        lams, use_cutmix = self._params_per_elem(count)
        source = x.clone()
        for i in range(count):
            j = len(x) - 1 - i
            if lams[i] == 1.0:
                continue
            if use_cutmix[i]:
                (top, bottom, left, right), lams[i] = self._box(x.shape, lams[i])
                x[i, :, top:bottom, left:right] = source[j, :, top:bottom, left:right]
                if pairs:
                    x[j, :, top:bottom, left:right] = source[i, :, top:bottom, left:right]
            else:
                x[i] = source[i] * lams[i] + source[j] * (1 - lams[i])
                if pairs:
                    x[j] = source[j] * lams[i] + source[i] * (1 - lams[i])
        if pairs:
            lams = np.concatenate((lams, lams[::-1]))
        return torch.tensor(lams, device=x.device, dtype=x.dtype).unsqueeze(1)

    def _mix_elem(self, x: torch.Tensor) -> torch.Tensor:
        return self._mix_each(x, pairs=False)

    def _mix_pair(self, x: torch.Tensor) -> torch.Tensor:
        return self._mix_each(x, pairs=True)


def build_mixup(args: argparse.Namespace, num_classes: int) -> Optional[Mixup]:
    if args.mixup <= 0 and args.cutmix <= 0:
        return None
    return SeedMixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                     switch_prob=args.mixup_switch_prob, mode=args.mixup_mode, label_smoothing=args.smoothing,
                     num_classes=num_classes)


def build_criterion(args: argparse.Namespace, mixup: bool) -> nn.Module:
    """The training loss as timm 0.5's ``train.py`` chose it. Under Mixup/CutMix (whose targets are dense and
    already smoothed): BCE with logits without a target threshold (``--bce-loss``), else soft-target CE. Without:
    with ``--smoothing``, BCE on smoothed one-hot targets (``--bce-loss``) or label-smoothing CE; without smoothing,
    plain CE, ``--bce-loss`` or not."""
    if mixup:
        return BinaryCrossEntropy(smoothing=0.0) if args.bce_loss else SoftTargetCrossEntropy()
    if args.smoothing:
        if args.bce_loss:
            return BinaryCrossEntropy(smoothing=args.smoothing)
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return nn.CrossEntropyLoss()


def build_optimizer(args: argparse.Namespace, model: nn.Module) -> torch.optim.Optimizer:
    """timm's optimizer ``--opt`` with ``--lr`` as given (no scaling by batch size); no weight decay on biases and
    1-D parameters."""
    extra = {}
    if args.opt_eps is not None:
        extra["eps"] = args.opt_eps
    if args.opt_betas is not None:
        extra["betas"] = tuple(args.opt_betas)
    try:
        return create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                   momentum=args.momentum, **extra)
    except ValueError as error:
        raise UsageError(f"--opt {args.opt}: {error}") from None


def build_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer,
                    updates_per_epoch: int) -> tuple[Scheduler, int]:
    """timm's scheduler and the number of epochs to run (``--epochs`` + ``--cooldown-epochs``). The LR changes
    once per epoch, or once per update with ``--step-by-iteration``."""
    return create_scheduler_v2(optimizer, sched=args.sched, num_epochs=args.epochs, decay_epochs=args.decay_epochs,
                               decay_rate=args.decay_rate, min_lr=args.min_lr, warmup_lr=args.warmup_lr,
                               warmup_epochs=args.warmup_epochs, cooldown_epochs=args.cooldown_epochs,
                               cycle_decay=args.lr_cycle_decay, step_on_epochs=not args.step_by_iteration,
                               updates_per_epoch=updates_per_epoch)


def output_dir(args: argparse.Namespace) -> Path:
    """``OUTPUT/EXPERIMENT``. Without ``--experiment``: the folder of the ``--resume`` file (the run goes on in
    place), else a new ``<date-time>-<model>-<img size>``."""
    if not args.experiment and args.resume:
        directory = Path(args.resume).parent
        args.experiment = directory.name
        return directory
    if not args.experiment:
        size = args.img_size or "default"
        args.experiment = f"{time.strftime('%Y%m%d-%H%M%S')}-{args.model}-{size}"
    return Path(args.output) / args.experiment


def check_output_dir(directory: Path, resume: Optional[str]) -> None:
    """Refuse to write over another run's checkpoints: a folder that holds some takes only a run resumed from one
    of its own files."""
    existing = sorted(p.name for p in directory.glob("*.pth.tar")) if directory.is_dir() else []
    if existing and (not resume or Path(resume).resolve().parent != directory.resolve()):
        raise UsageError(f"{directory} already holds checkpoints ({', '.join(existing[:3])}"
                         f"{', ...' if len(existing) > 3 else ''}); continue it with --resume {directory / LAST} "
                         "or pick another --experiment / --output")


def write_args_yaml(directory: Path, args: Mapping[str, Any]) -> None:
    path = directory / "args.yaml"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(dict(args), sort_keys=False))
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------- checkpoints

def checkpoint_args(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``args`` as a dict (ours are dicts; the original's are ``argparse.Namespace``)."""
    args = checkpoint.get("args") or {}
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)


def read_training_checkpoint(path: str, model_name: str) -> dict[str, Any]:
    """A checkpoint to resume ``model_name`` from; an error names the file when it is none (or another model's)."""
    checkpoint = read_checkpoint(path)
    missing = [key for key in ("epoch", "state_dict", "optimizer") if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(missing)}); "
                              "--initial-checkpoint starts from its weights alone")
    arch = checkpoint.get("arch")
    if arch and arch != model_name:
        raise CheckpointError(f"{path}: a checkpoint of {arch}, not of --model {model_name}")
    return checkpoint


def load_weights_strict(model: nn.Module, checkpoint: Mapping[str, Any], source: str) -> None:
    """Every key of ``model`` from the checkpoint, of the same shape; otherwise a ``CheckpointError``."""
    try:
        model.load_state_dict(extract_state_dict(checkpoint), strict=True)
    except RuntimeError as error:
        detail = str(error).splitlines()
        raise CheckpointError(f"{source}: does not fit the model ({detail[1].strip() if len(detail) > 1 else error})"
                              ) from None


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Scheduler,
                     scaler: Optional[torch.amp.GradScaler], epoch: int, metric: float, args: Mapping[str, Any],
                     classes: Optional[list[str]]) -> dict[str, Any]:
    """The checkpoint dict: timm's keys (``epoch`` of the finished epoch, ``arch``, ``state_dict``, ``optimizer``,
    ``amp_scaler``, ``metric``, ``version``, ``args`` as a plain dict) plus ``scheduler`` and the class names."""
    return {"epoch": epoch, "arch": args["model"], "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "amp_scaler": scaler.state_dict() if scaler is not None else None, "metric": metric, "version": 2,
            "args": dict(args), "classes": classes}


# Flags that describe one invocation, not the run: they differ on every resume (``data_dir`` is folded into
# ``data``, and ``wandb_id`` is read from the checkpoint after this comparison).
PER_INVOCATION_FLAGS = frozenset({"resume", "local_rank", "data_dir", "wandb_id"})


def changed_flags(saved: Mapping[str, Any], args: argparse.Namespace) -> list[str]:
    """``--flag new (was old)`` for each flag of ``args`` whose value differs from the checkpoint's saved args."""
    return [f"--{flag.replace('_', '-')} {value} (was {saved[flag]})" for flag, value in vars(args).items()
            if flag in saved and flag not in PER_INVOCATION_FLAGS and saved[flag] != value]


def restore_training_state(checkpoint: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Scheduler, scaler: Optional[torch.amp.GradScaler], source: str,
                           args: argparse.Namespace, updates_per_epoch: int) -> int:
    """Load weights, optimizer and scaler state and move the schedule to the resumed epoch; return that epoch.

    The schedule follows this run's flags, as in timm's ``train.py``: ``scheduler`` was built from ``args`` and is
    only stepped to where the run stopped (epoch and update count), never given the checkpoint's scheduler state,
    which holds the old run's epochs, rate and warm-up. Only the plateau scheduler's saved state is loaded: it is the
    run's progress (best metric, epoch), not settings. Flags that differ from the checkpoint's run are logged.
    """
    load_weights_strict(model, checkpoint, source)
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except ValueError as error:  # parameter groups of another optimizer setting
        raise CheckpointError(f"{source}: its optimizer state does not fit this run ({error})") from None
    start_epoch = int(checkpoint["epoch"]) + 1
    changed = changed_flags(checkpoint_args(checkpoint), args)
    if changed:
        logger.info("--resume %s: flags differ from the checkpoint's run, this run's are used (the LR schedule "
                    "included): %s", source, ", ".join(changed))
    if isinstance(scheduler, PlateauLRScheduler):
        if checkpoint.get("scheduler"):
            scheduler.load_state_dict(checkpoint["scheduler"])
    else:
        # what the loop did after the last update and at the end of the epoch (with its top-1); a scheduler
        # stepped per epoch ignores step_update, one stepped per update ignores step
        scheduler.step_update(start_epoch * updates_per_epoch)
        scheduler.step(start_epoch, checkpoint.get("metric"))
    if scaler is not None and checkpoint.get("amp_scaler"):
        scaler.load_state_dict(checkpoint["amp_scaler"])
    return start_epoch


# --------------------------------------------------------------------------------------------------- the loop

@dataclass
class TrainParts:
    """What one training step uses. ``model`` is the DDP wrapper when distributed."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    criterion: nn.Module
    mixup: Optional[Mixup]
    scaler: Optional[torch.amp.GradScaler]
    amp_dtype: Optional[torch.dtype]
    channels_last: bool


def train_one_epoch(parts: TrainParts, loader: DataLoader, ctx: DistContext, epoch: int, num_updates: int,
                    description: str, log_interval: int,
                    on_first_batch: Optional[Callable[[torch.Tensor, int], None]] = None
                    ) -> tuple[dict[str, float], int]:
    """One pass over ``loader``; returns the mean loss over all processes, the epoch's LR and its throughput, and
    the updated count of optimizer steps (the per-iteration schedule's clock).

    ``on_first_batch(images, epoch)`` sees the first batch ``(N, 3, H, W)`` after Mixup/CutMix (``--log-image``).
    """
    parts.model.train()
    lr = parts.optimizer.param_groups[0]["lr"]
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    seen = 0
    start = time.perf_counter()
    bar = progress_bar(len(loader) * loader.batch_size * ctx.world_size, description, ctx.primary)
    for step, (images, target) in enumerate(loader):
        images = images.to(ctx.device, non_blocking=True)
        target = target.to(ctx.device, non_blocking=True)
        if parts.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if parts.mixup is not None:
            images, target = parts.mixup(images, target)
        if step == 0 and on_first_batch is not None:
            on_first_batch(images, epoch)
        with autocast(ctx.device, parts.amp_dtype):
            loss = parts.criterion(parts.model(images), target)
        parts.optimizer.zero_grad(set_to_none=True)
        if parts.scaler is not None:
            parts.scaler.scale(loss).backward()
            parts.scaler.step(parts.optimizer)
            parts.scaler.update()
        else:
            loss.backward()
            parts.optimizer.step()
        num_updates += 1
        parts.scheduler.step_update(num_updates)
        loss_sum += loss.detach().double() * len(images)
        seen += len(images)
        bar.update(len(images) * ctx.world_size)
        if (step + 1) % log_interval == 0 or step + 1 == len(loader):
            mean = loss_sum.item() / seen  # synchronises with the device only every log_interval steps
            if not math.isfinite(mean):
                raise TrainingError(f"{description}: the loss is {mean} at step {step + 1}; stopping (the last "
                                    "checkpoint is the previous epoch's)")
            bar.set_postfix(loss=f"{mean:.4f}", lr=f"{parts.optimizer.param_groups[0]['lr']:.2e}")
    bar.close()
    totals = all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(seen), dtype=torch.float64,
                                                                 device=ctx.device)]))
    elapsed = time.perf_counter() - start
    return {"loss": (totals[0] / totals[1]).item(), "lr": lr, "images_per_s": totals[1].item() / elapsed,
            "seconds": elapsed}, num_updates


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, ctx: DistContext, amp_dtype: Optional[torch.dtype],
             channels_last: bool, description: str = "val") -> dict[str, float]:
    """Cross-entropy loss, top-1 and top-5 accuracy (%) over the whole dataset, summed over all processes.

    Top-5 of a model with fewer than 5 classes counts every sample as a hit (timm's ``accuracy`` clamps k).
    """
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    totals = torch.zeros(4, dtype=torch.float64, device=ctx.device)  # loss sum, top-1 hits, top-5 hits, images
    bar = progress_bar(len(loader.dataset), description, ctx.primary)
    for images, target in loader:
        images = images.to(ctx.device, non_blocking=True)
        target = target.to(ctx.device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(ctx.device, amp_dtype):
            output = model(images)
        output = output.float()
        top1, top5 = accuracy(output, target, topk=(1, 5))  # percentages of this batch
        n = len(target)
        totals += torch.stack([criterion(output, target), top1 * n / 100, top5 * n / 100,
                               torch.tensor(float(n), device=ctx.device)]).double()
        bar.update(n * ctx.world_size)
    bar.close()
    all_reduce_sum(totals)
    loss, hits1, hits5, count = totals.tolist()
    return {"loss": loss / count, "top1": 100 * hits1 / count, "top5": 100 * hits5 / count, "count": int(count)}


def train(args: argparse.Namespace, ctx: DistContext) -> dict[str, float]:
    """Train ``args.model`` as the command line says; return the last validation metrics and the best top-1.

    Everything that can be wrong with the input (data, resume file, output folder) is checked before the first
    file is written.
    """
    check_model_name(args.model)
    amp_dtype = resolve_amp_dtype(args.amp or args.native_amp, args.amp_dtype, ctx.device)
    if args.pretrained2d:
        logger.warning("--pretrained2d has no effect: there are no hosted 2D weights (see docs/deviations.md)")
    resume = read_training_checkpoint(args.resume, args.model) if args.resume else None
    train_set = open_split(args.data, args.train_split, args.train_list, None, ctx.primary)
    val_set = open_split(args.data, args.val_split, args.val_list, class_index(train_set.classes), ctx.primary)
    num_classes = check_num_classes(args.num_classes, [train_set, val_set])
    out_dir = output_dir(args)
    if ctx.primary:
        check_output_dir(out_dir, args.resume)

    random_seed(args.seed, 0)  # the same initial weights in every process
    model = timm.create_model(args.model, num_classes=num_classes, drop_rate=args.drop, drop_path_rate=args.drop_path)
    if args.initial_checkpoint:
        report = load_state(model, extract_state_dict(read_checkpoint(args.initial_checkpoint)),
                            args.initial_checkpoint, key_map=())
        logger.info(report.summary())
    prepare_model(model, ctx.device, amp_dtype, args.channels_last)
    cfg = data_config(args, model)
    train_set.transform = train_transform(args, cfg)
    val_set.transform = eval_transform(cfg)
    mixup = build_mixup(args, num_classes)
    loader = train_loader(train_set, args, ctx, even=mixup is not None)
    val_loader = eval_loader(val_set, args.validation_batch_size or args.batch_size, args.workers, args.pin_mem, ctx)
    optimizer = build_optimizer(args, model)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    scheduler, num_epochs = build_scheduler(args, optimizer, len(loader))
    start_epoch = 0
    keeper = CheckpointKeeper(out_dir, args.checkpoint_hist)
    if resume is not None:
        start_epoch = restore_training_state(resume, model, optimizer, scheduler, scaler, args.resume, args,
                                             len(loader))
        if Path(args.resume).resolve().parent == out_dir.resolve():
            keeper.load_state_dict(resume.get("saver") or {})
        args.wandb_id = args.wandb_id or checkpoint_args(resume).get("wandb_id")
    if ctx.distributed:
        ddp_model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    else:
        ddp_model = model
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels once
    parts = TrainParts(ddp_model, optimizer, scheduler, build_criterion(args, mixup is not None).to(ctx.device),
                       mixup, scaler, amp_dtype, args.channels_last)

    wandb_run: Optional[WandbRun] = None
    if ctx.primary:
        out_dir.mkdir(parents=True, exist_ok=True)
        if args.log_wandb:
            wandb_run = start_wandb(args, out_dir, args.wandb_id)
            if wandb_run is not None:
                args.wandb_id = wandb_run.id
        run_args = {**vars(args), "world_size": ctx.world_size}
        write_args_yaml(out_dir, run_args)
        epoch_log = EpochLog(out_dir, start_epoch, wandb_run)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    logger.info("%s: %.2fM params, %d classes; %d train / %d val images; %d process(es) on %s, batch %d per "
                "process, AMP %s; epochs %d-%d of %d; output %s", args.model, params, num_classes, len(train_set),
                len(val_set), ctx.world_size, ctx.device.type, loader.batch_size,
                str(amp_dtype).replace("torch.", "") if amp_dtype else "off", start_epoch, num_epochs - 1,
                num_epochs, out_dir)

    log_images = None
    if wandb_run is not None and args.log_image:
        def log_images(images: torch.Tensor, epoch: int) -> None:
            wandb_run.log_images(images, cfg["mean"], cfg["std"], step=epoch)

    metrics: dict[str, float] = {}
    num_updates = start_epoch * len(loader)
    for epoch in range(start_epoch, num_epochs):
        seed_epoch(args.seed, epoch, ctx.rank)
        loader.sampler.set_epoch(epoch)
        train_metrics, num_updates = train_one_epoch(
            parts, loader, ctx, epoch, num_updates, f"epoch {epoch}", args.log_interval, log_images)
        sync_batch_norm_stats(model, ctx, args.dist_bn)
        metrics = validate(model, val_loader, ctx, amp_dtype, args.channels_last, f"val {epoch}")
        scheduler.step(epoch + 1, metrics["top1"])
        if not ctx.primary:
            continue
        keeper.save(checkpoint_state(model, optimizer, scheduler, scaler, epoch, metrics["top1"], run_args,
                                     train_set.classes), epoch, metrics["top1"])
        epoch_log.add({"epoch": epoch, "train_loss": train_metrics["loss"], "eval_loss": metrics["loss"],
                       "eval_top1": metrics["top1"], "eval_top5": metrics["top5"], "lr": train_metrics["lr"]})
        unreadable = train_set.num_unreadable + val_set.num_unreadable
        logger.info("epoch %d (%d/%d)  train loss %.4f  val loss %.4f  top-1 %.3f  top-5 %.3f  lr %.3g  "
                    "%.1f img/s  %s  best top-1 %.3f (epoch %d)%s", epoch, epoch + 1, num_epochs,
                    train_metrics["loss"], metrics["loss"], metrics["top1"], metrics["top5"], train_metrics["lr"],
                    train_metrics["images_per_s"], format_duration(train_metrics["seconds"]), keeper.best[1],
                    keeper.best[0], f"  ({unreadable} unreadable images skipped)" if unreadable else "")
    if wandb_run is not None:
        wandb_run.finish()
    if ctx.primary and keeper.best is not None:
        metrics = {**metrics, "best_top1": keeper.best[1], "best_epoch": keeper.best[0]}
    return metrics


def evaluate(args: argparse.Namespace, ctx: DistContext) -> dict[str, float]:
    """One validation pass of ``args.checkpoint``; the primary process prints ``top-1 ... top-5 ... loss ...``, after
    the seed's ``Accuracy of the network on the N test images: T%`` for ``train.py --eval``.

    ``--model`` and ``--num-classes`` default to the checkpoint's; the class folders map to labels through the
    class names stored in our checkpoints (sorted folder names otherwise).
    """
    amp_dtype = resolve_amp_dtype(args.amp, args.amp_dtype, ctx.device)
    checkpoint = read_checkpoint(args.checkpoint)
    arch = checkpoint.get("arch")
    if args.model and arch and arch != args.model:
        raise CheckpointError(f"{args.checkpoint}: a checkpoint of {arch}, not of --model {args.model}")
    name = args.model or arch
    if not name:
        raise UsageError(f"{args.checkpoint} does not name its model: pass --model")
    check_model_name(name)
    val_set = open_split(args.data, args.val_split, args.val_list, class_index(checkpoint.get("classes")),
                         ctx.primary)
    classifier = extract_state_dict(checkpoint).get("classifier.weight")
    num_classes = check_num_classes(args.num_classes or (len(classifier) if classifier is not None else None),
                                    [val_set])
    model = timm.create_model(name, num_classes=num_classes)
    load_weights_strict(model, checkpoint, args.checkpoint)
    prepare_model(model, ctx.device, amp_dtype, args.channels_last)
    val_set.transform = eval_transform(data_config(args, model))
    loader = eval_loader(val_set, args.batch_size, args.workers, args.pin_mem, ctx)
    metrics = validate(model, loader, ctx, amp_dtype, args.channels_last)
    if ctx.primary:
        if getattr(args, "eval", False):  # train.py --eval: first the line the seed's train.py printed
            print(f"Accuracy of the network on the {metrics['count']} test images: {metrics['top1']:.1f}%")
        print(f"{name} on {val_set.source} ({metrics['count']} images): top-1 {metrics['top1']:.3f}  "
              f"top-5 {metrics['top5']:.3f}  loss {metrics['loss']:.4f}", flush=True)
    return metrics
