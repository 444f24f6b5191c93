"""Spatiotemporal fine-tuning (``tools/train.py``): the seed's recipe on a seed-style config.

SGD with momentum and weight decay, gradient clipping, cosine schedule with per-iteration linear warm-up, mixed
precision (fp16 with the config's static loss scale on CUDA, bf16 autocast on request; float32 on a CPU
otherwise), precise-BN, validation every ``evaluation.interval`` epochs, and checkpoints with the seed's names at
the top of the work dir (``epoch_<n>.pth`` every ``checkpoint_config.interval`` epochs and at the last,
``latest.pth`` after every epoch, ``best_top1_acc_epoch_<n>.pth``), each written atomically. ``resume_from``
restores weights, optimizer, loss scaler, epoch, iteration and the best score.
"""
from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from ..checkpoint import load_pretrained, read_checkpoint, save_checkpoint
from ..config import ConfigError, dump_config, to_plain
from ..data.pipeline import build_dataset, normalizes_on_device, num_segments, unknown_data_keys
from ..data.video import normalize_clips
from ..models.builder import build_recognizer
from ..models.recognizer import Recognizer3D
from .checkpoints import _link_atomic
from .distributed import DistContext, all_reduce_sum
from .image_train import TrainingError, keep_rgb_stems_float32, seed_epoch
from .logs import format_duration, logger, progress_bar
from .precise_bn import update_bn_stats
from .run_log import RunLog, timestamp
from .schedule import CosineWarmup
from .video_test import TestOptions, evaluate_scores, evaluation_settings, metric_columns, predict, run_test

LATEST = "latest.pth"


def epoch_file(epoch: int) -> str:
    return f"epoch_{epoch}.pth"


def best_file(metric: str, epoch: int) -> str:
    return f"best_{metric}_epoch_{epoch}.pth"


@dataclass
class TrainOptions:
    """The command line's part (``tools/train.py``); everything else comes from the config."""
    work_dir: Optional[str] = None
    validate: bool = False
    resume_from: Optional[str] = None
    seed: Optional[int] = None
    deterministic: bool = False
    test_last: bool = False
    test_best: bool = False


@dataclass
class Precision:
    """Autocast dtype (``None``: float32) and the fp16 loss scale (``None``: no scaling)."""
    dtype: Optional[torch.dtype]
    loss_scale: Optional[float]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], device: torch.device) -> "Precision":
        """``bf16=True``: bf16 autocast. ``fp16=dict(loss_scale=512.)`` (the seed's): fp16 autocast with that
        static scale (``'dynamic'`` for a dynamic one) on CUDA; on a CPU float32 (CPU fp16 conv kernels are slow
        and have no loss scaler, and PyTorch's CPU bf16 conv3d can crash the process for some shapes, so CPU bf16
        is only what ``bf16=True`` asks for)."""
        if cfg.get("bf16"):
            return cls(torch.bfloat16, None)
        fp16 = cfg.get("fp16")
        if not fp16 or device.type != "cuda":
            return cls(None, None)
        scale = fp16.get("loss_scale", 512.0)
        return cls(torch.float16, None if scale == "dynamic" else float(scale))

    def scaler(self, device: torch.device) -> Optional[torch.amp.GradScaler]:
        if self.dtype != torch.float16:
            return None
        if self.loss_scale is None:
            return torch.amp.GradScaler(device.type)
        return torch.amp.GradScaler(device.type, init_scale=self.loss_scale)

    def describe(self) -> str:
        if self.dtype is None:
            return "float32"
        name = str(self.dtype).replace("torch.", "")
        if self.dtype == torch.float16:
            return f"{name} (loss scale {self.loss_scale or 'dynamic'})"
        return name


def environment_info(ctx: DistContext) -> str:
    """A short form of mmaction's ``collect_env`` text: Python, PyTorch, the device."""
    lines = [f"sys.platform: {sys.platform}", f"Python: {sys.version.split()[0]}", f"PyTorch: {torch.__version__}"]
    if ctx.device.type == "cuda":
        lines += [f"GPU: {torch.cuda.get_device_name(ctx.device)}", f"CUDA: {torch.version.cuda}"]
    return "\n".join(lines)


def resolve_seed(seed: Optional[int], ctx: DistContext) -> int:
    """``seed``, or a random one drawn on the primary process and shared with the others."""
    if seed is not None:
        return seed
    # on the process's device: an NCCL group has no CPU collectives
    value = torch.tensor([random.SystemRandom().randrange(2 ** 31)], dtype=torch.int64, device=ctx.device)
    if ctx.distributed:
        dist.broadcast(value, 0)
    return int(value.item())


def build_optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.SGD:
    """The seed's ``optimizer=dict(type='SGD', lr, momentum, weight_decay, paramwise_cfg=...)``, as mmcv's
    ``DefaultOptimizerConstructor`` builds it: torch's defaults for unset keys (momentum 0, no decay, no
    Nesterov), every parameter of the model (frozen ones too; SGD skips a parameter without a gradient), and
    ``paramwise_cfg.norm_decay_mult`` for the weight and bias of BatchNorm, GroupNorm, LayerNorm and InstanceNorm
    layers, ``bias_decay_mult`` for the bias of any other layer. mmcv gave each parameter its own group; here the
    parameters are grouped by weight decay, which updates them the same way."""
    opt = dict(cfg["optimizer"])
    if opt.pop("type", "SGD") != "SGD":
        raise ValueError("optimizer.type must be 'SGD' (the seed's fine-tuning optimizer)")
    # torch.optim.SGD raised a TypeError for any other key in the original; a typo must not pass unnoticed
    unknown = sorted(set(opt) - {"lr", "momentum", "weight_decay", "nesterov", "paramwise_cfg"})
    if unknown:
        raise ConfigError(f"optimizer: unknown key {unknown[0]!r} (known: lr, momentum, weight_decay, nesterov, "
                          "paramwise_cfg)")
    paramwise = opt.pop("paramwise_cfg", None) or {}
    unknown = sorted(set(paramwise) - {"norm_decay_mult", "bias_decay_mult"})
    if unknown:
        raise ConfigError(f"optimizer.paramwise_cfg: {unknown[0]!r} is not supported (only norm_decay_mult, "
                          "bias_decay_mult)")
    decay = float(opt.get("weight_decay", 0.0))
    norm_mult, bias_mult = paramwise.get("norm_decay_mult", 1.0), paramwise.get("bias_decay_mult", 1.0)
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm,
                  nn.LayerNorm)
    groups: dict[float, list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, norm_types)
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            # mmcv keeps a frozen parameter at the base decay; its multipliers apply to trained ones only
            if not param.requires_grad or not paramwise:
                mult = 1.0
            else:
                mult = norm_mult if is_norm else bias_mult if name == "bias" else 1.0
            groups.setdefault(decay * mult, []).append(param)
    param_groups = [{"params": params, "weight_decay": wd} for wd, params in groups.items()]
    return torch.optim.SGD(param_groups, lr=float(opt.pop("lr")), momentum=float(opt.pop("momentum", 0.0)),
                           weight_decay=decay, nesterov=bool(opt.pop("nesterov", False)))


def _grad_clip(cfg: Mapping[str, Any]) -> Optional[dict[str, float]]:
    """``optimizer_config.grad_clip``: the keyword arguments of ``clip_grad_norm_`` (mmcv passed them on), or
    ``None`` for no clipping."""
    unknown = sorted(set(cfg.get("optimizer_config") or {}) - {"grad_clip"})
    if unknown:
        raise ConfigError(f"optimizer_config: unknown key {unknown[0]!r} (known: grad_clip)")
    clip = (cfg.get("optimizer_config") or {}).get("grad_clip")
    if not clip:
        return None
    unknown = sorted(set(clip) - {"max_norm", "norm_type"})
    if unknown:
        raise ConfigError(f"optimizer_config.grad_clip: unknown key {unknown[0]!r} (known: max_norm, norm_type)")
    return {"max_norm": float(clip["max_norm"]), "norm_type": float(clip.get("norm_type", 2))}


def positive_setting(cfg: Mapping[str, Any], key: str, default: Optional[int] = None) -> int:
    """The positive integer at dotted ``key`` (``'evaluation.interval'``), ``default`` where it is unset; checked
    before training, so that a 0 fails at once and not after the first epoch."""
    node: Any = cfg
    for part in key.split("."):
        node = (node or {}).get(part)
    value = default if node is None else node
    if value is None:
        raise ConfigError(f"{key} is not set")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise ConfigError(f"{key} must be a positive whole number, got {value!r}")
    return int(value)


def work_dir_of(cfg: Mapping[str, Any], opts: TrainOptions) -> Path:
    """``--work-dir``, else the config's ``work_dir``, else ``./work_dirs/<config name>`` (the seed's rule)."""
    if opts.work_dir:
        return Path(opts.work_dir)
    if cfg.get("work_dir"):
        return Path(cfg["work_dir"])
    return Path("work_dirs") / Path(cfg.get("filename", "run")).stem


def _loader(dataset, cfg: Mapping[str, Any], ctx: DistContext, seed: int) -> DataLoader:
    data = cfg["data"]
    if ctx.distributed:
        sampler = DistributedSampler(dataset, ctx.world_size, ctx.rank, shuffle=True, seed=seed)
    else:
        sampler = RandomSampler(dataset)
    return DataLoader(dataset, batch_size=int(data["videos_per_gpu"]), sampler=sampler,
                      num_workers=int(data.get("workers_per_gpu", 2)), pin_memory=ctx.device.type == "cuda",
                      drop_last=False)


def _flat_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of per-view logits ``(N, V, K)`` against ``(N,)`` labels (every view scored)."""
    n, v, k = logits.shape
    return nn.functional.cross_entropy(logits.reshape(n * v, k).float(), labels.repeat_interleave(v))


def _top_k_hits(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Videos whose label is among the ``k`` best of the view-averaged logits, for each ``k`` (a ``k`` above the
    number of classes counts every video, as mmaction's ``top_k_accuracy``)."""
    scores = logits.detach().float().mean(1)
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    return [int(hit[:, :k].any(1).sum()) for k in ks]


# the training row of the json log: the sums over a log window (clip-weighted over all processes), in this order
_WINDOW = ("loss", "top1", "top5", "clips", "grad_norm")


@dataclass
class Trainer:
    cfg: Mapping[str, Any]
    ctx: DistContext
    model: Recognizer3D
    step_model: nn.Module  # DDP-wrapped / compiled: what the training step calls
    optimizer: torch.optim.Optimizer
    schedule: CosineWarmup
    precision: Precision
    scaler: Optional[torch.amp.GradScaler]
    grad_clip: Optional[dict[str, float]]  # clip_grad_norm_'s max_norm and norm_type
    loader: DataLoader
    channels_last: bool

    def to_device(self, clips: torch.Tensor) -> torch.Tensor:
        clips = clips.to(self.ctx.device, non_blocking=True)
        if self.channels_last:  # (N, V, C, T, H, W): each view's clip NDHWC, relaid while still uint8
            n, v = clips.shape[:2]
            clips = clips.flatten(0, 1).contiguous(memory_format=torch.channels_last_3d).unflatten(0, (n, v))
        return normalize_clips(clips)  # keeps the memory format

    def _clip(self) -> Optional[torch.Tensor]:
        # mmcv's OptimizerHook.clip_grads: the parameters that train and have a gradient
        params = [p for p in self.model.parameters() if p.requires_grad and p.grad is not None]
        if self.grad_clip is None or not params:
            return None
        return nn.utils.clip_grad_norm_(params, **self.grad_clip)

    def step(self, clips: torch.Tensor, labels: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """One optimisation step on device clips ``(N, V, C, T, H, W)``; returns the loss, logits ``(N, V, K)`` and
        the gradient norm before clipping (``None`` without ``grad_clip``), as mmcv's optimizer hooks do: zero the
        gradients, backward, clip, step."""
        with torch.autocast(self.ctx.device.type, dtype=self.precision.dtype,
                            enabled=self.precision.dtype is not None):
            logits = self.step_model(clips)
        loss = _flat_loss(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            grad_norm = self._clip()
            self.scaler.step(self.optimizer)
            # a static scale is set back to its value every step (mmcv's fp16 hook with a number)
            self.scaler.update(self.precision.loss_scale)
        else:
            loss.backward()
            grad_norm = self._clip()
            self.optimizer.step()
        return loss, logits, grad_norm

    def _window_row(self, window: torch.Tensor, times: list[float], data_times: list[float]) -> dict[str, Any]:
        """The json log's training fields over one log window, as mmcv's TextLoggerHook wrote them: ``lr`` of the
        first group, ``memory`` (peak MB, the most of any process, CUDA only), ``data_time`` and ``time`` (seconds
        per iteration on this process), mmaction's ``top1_acc``, ``top5_acc``, ``loss_cls`` and ``loss``
        (averaged over processes and over the window's clips) and, with clipping, ``grad_norm``."""
        ctx = self.ctx
        all_reduce_sum(window)  # every process reaches this at the same iterations
        loss, top1, top5, clips, grad_norm = window.tolist()
        row: dict[str, Any] = {"lr": self.optimizer.param_groups[0]["lr"]}
        if ctx.device.type == "cuda":
            memory = torch.tensor([torch.cuda.max_memory_allocated(ctx.device) // (1024 * 1024)], device=ctx.device)
            if ctx.distributed:
                dist.all_reduce(memory, op=dist.ReduceOp.MAX)
            row["memory"] = int(memory.item())
        row.update({"data_time": sum(data_times) / len(data_times), "time": sum(times) / len(times),
                    "top1_acc": top1 / clips, "top5_acc": top5 / clips, "loss_cls": loss / clips,
                    "loss": loss / clips})
        if self.grad_clip is not None:
            row["grad_norm"] = grad_norm / clips
        return row

    def train_epoch(self, epoch: int, iteration: int, log: Optional[RunLog], interval: int
                    ) -> tuple[dict[str, float], int]:
        """One pass (0-based ``epoch``); returns the mean loss, clips/s and skipped videos over all processes, and
        the global iteration count after it. Every ``interval`` iterations (and at the epoch's last) the json log
        gets a training row."""
        self.step_model.train()
        ctx, n_iters = self.ctx, len(self.loader)
        totals = torch.zeros(4, dtype=torch.float64, device=ctx.device)  # loss sum, clips, skipped, top-1 hits
        window = torch.zeros(len(_WINDOW), dtype=torch.float64, device=ctx.device)  # see _WINDOW
        times: list[float] = []
        data_times: list[float] = []
        bar = progress_bar(len(self.loader.sampler) * ctx.world_size,
                           f"epoch {epoch + 1}/{self.schedule.total_epochs}", ctx.primary, unit="clip")
        start = window_start = tick = time.perf_counter()
        for step, (clips, labels, skipped) in enumerate(self.loader):
            data_times.append(time.perf_counter() - tick)
            lr = self.schedule.apply(self.optimizer, iteration, epoch)
            labels = labels.to(ctx.device, non_blocking=True)
            loss, logits, grad_norm = self.step(self.to_device(clips), labels)
            iteration += 1
            n = len(labels)
            top1, top5 = _top_k_hits(logits, labels)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingError(f"epoch {epoch + 1}: the loss is {value} at iteration {step + 1}; stopping "
                                    "(latest.pth holds the previous epoch)")
            norm = float(grad_norm) * n if grad_norm is not None else 0.0
            window += torch.tensor([value * n, top1, top5, n, norm], dtype=torch.float64, device=ctx.device)
            totals += torch.tensor([value * n, n, int(skipped.sum()), top1], dtype=torch.float64,
                                   device=ctx.device)
            bar.update(n * ctx.world_size)
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
            now = time.perf_counter()
            times.append(now - tick)
            tick = now
            if (step + 1) % interval == 0 or step + 1 == n_iters:
                row = self._window_row(window, times, data_times)
                if log is not None:
                    clips_seen = window[_WINDOW.index("clips")].item()
                    log.add({"mode": "train", "epoch": epoch + 1, "iter": step + 1, **row, "global_iter": iteration,
                             "epoch_float": epoch + (step + 1) / n_iters,
                             "clips_per_s": clips_seen / (now - window_start)})
                window.zero_()
                times, data_times = [], []
                window_start = tick = time.perf_counter()
        bar.close()
        elapsed = time.perf_counter() - start
        all_reduce_sum(totals)
        loss_sum, clips, skipped_total, hits = totals.tolist()
        return {"loss": loss_sum / clips, "top1_acc": hits / clips, "clips_per_s": clips / elapsed,
                "skipped": int(skipped_total), "seconds": elapsed}, iteration

    def precise_bn(self, num_iters: int) -> int:
        def forward(batch) -> None:
            clips = self.to_device(batch[0])
            with torch.autocast(self.ctx.device.type, dtype=self.precision.dtype,
                                enabled=self.precision.dtype is not None):
                self.model(clips)

        self.model.train()
        return update_bn_stats(self.model, iter(self.loader), num_iters, len(self.loader), forward)


def _metrics_text(results: Mapping[str, float]) -> str:
    """``top-1 71.20  top-5 90.10  mean class accuracy 70.90``: the metrics in ``results``, in percent."""
    return "  ".join(f"{title} {100 * results[key]:.2f}" for title, key in metric_columns(results))


def _checkpoint(trainer: Trainer, cfg: Mapping[str, Any], epoch: int, iteration: int,
                best: Optional[tuple[str, float, int]], seed: int) -> dict[str, Any]:
    meta = {"epoch": epoch, "iter": iteration, "seed": seed, "world_size": trainer.ctx.world_size,
            "config": to_plain(dict(cfg)),
            "best": list(best) if best else None}
    state = {"meta": meta, "state_dict": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict()}
    if trainer.scaler is not None:
        state["amp_scaler"] = trainer.scaler.state_dict()
    return state


def prepare_model(model: Recognizer3D, cfg: Mapping[str, Any], ctx: DistContext, precision: Precision
                   ) -> tuple[nn.Module, bool]:
    model.to(ctx.device)
    channels_last = bool(cfg.get("channels_last", False))
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    if ctx.device.type == "cpu" and precision.dtype == torch.bfloat16:
        keep_rgb_stems_float32(model)
    step_model: nn.Module = model
    if ctx.distributed:
        # broadcast_buffers=False as mmaction's MMDistributedDataParallel: each process keeps its BN statistics
        step_model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                             else None, broadcast_buffers=False,
                                             find_unused_parameters=bool(cfg.get("find_unused_parameters")))
    mode = cfg.get("compile")
    if mode:
        # True: torch.compile's default mode; a mode by name, e.g. 'reduce-overhead' (CUDA graphs: each step replays
        # its launches, for a network whose eager step waits on the host, as X3D-S's does on a GPU)
        modes = tuple(torch._inductor.list_mode_options())
        if mode is not True and mode not in modes:
            raise ValueError(f"compile must be True, False or one of {modes}, got {mode!r}")
        step_model = torch.compile(step_model, mode=None if mode is True else mode)
    return step_model, channels_last


# mmcv's EvalHook / DistEvalHook arguments; the rest of ``evaluation`` went to the dataset's evaluate()
EVAL_HOOK_KEYS = {"interval", "start", "by_epoch", "save_best", "rule", "broadcast_bn_buffer", "tmpdir",
                   "gpu_collect", "greater_keys", "less_keys"}
# mmaction 0.20's EvalHook: the keys whose best is the greatest / the least when no rule is given
_GREATER_KEYS = ("acc", "top", "AR@", "auc", "precision", "mAP@", "Recall@")
_LESS_KEYS = ("loss",)


def _infer_rule(key: str) -> str:
    """mmcv's rule for a key without ``rule``: an exact match first, then a part of the key (case-blind)."""
    lower, greater, less = key.lower(), [k.lower() for k in _GREATER_KEYS], [k.lower() for k in _LESS_KEYS]
    for keys, rule in ((greater, "greater"), (less, "less")):
        if lower in keys:
            return rule
    for keys, rule in ((greater, "greater"), (less, "less")):
        if any(k in lower for k in keys):
            return rule
    raise ConfigError(f"evaluation.save_best={key!r}: cannot infer whether greater or less is better; set "
                      "evaluation.rule")


@dataclass(frozen=True)
class EvalSettings:
    """``evaluation = dict(interval, metrics, ...)`` as mmaction 0.20's EvalHook (mmcv's, with ``save_best='auto'``)
    read it: evaluate after epoch ``e`` (1-based) when ``e % interval == 0``, or, with ``start``, when ``e >= start``
    and ``(e - start) % interval == 0``; keep the best checkpoint by ``save_best`` (``'auto'``: the first result,
    e.g. ``top1_acc``; ``None``: no best checkpoint) under ``rule`` (inferred from the key when unset)."""
    interval: int = 1
    start: Optional[int] = None
    save_best: Optional[str] = "auto"
    rule: Optional[str] = None
    metrics: tuple[str, ...] = ("top_k_accuracy", "mean_class_accuracy")
    topk: tuple[int, ...] = (1, 5)
    broadcast_bn: bool = True  # DistEvalHook's broadcast_bn_buffer: rank 0's BN statistics to all before validating

    @classmethod
    def from_config(cls, evaluation: Optional[Mapping[str, Any]]) -> "EvalSettings":
        evaluation = dict(evaluation or {})
        hook = {k: evaluation.pop(k) for k in list(evaluation) if k in EVAL_HOOK_KEYS}
        metrics, topk = evaluation_settings(evaluation, "evaluation")
        if not hook.pop("by_epoch", True):
            raise ConfigError("evaluation.by_epoch=False is not supported (this trainer evaluates after epochs)")
        for key in ("tmpdir", "gpu_collect"):  # how mmcv gathered the scores; the results are the same
            hook.pop(key, None)
        broadcast_bn = bool(hook.pop("broadcast_bn_buffer", True))
        for key in ("greater_keys", "less_keys"):
            if hook.get(key) is not None:
                raise ConfigError(f"evaluation.{key} is not supported (mmaction's defaults are used)")
            hook.pop(key, None)
        start = hook.get("start")
        if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < 0):
            raise ConfigError(f"evaluation.start must be a whole number >= 0, got {start!r}")
        rule = hook.get("rule")
        if rule not in (None, "greater", "less"):
            raise ConfigError(f"evaluation.rule must be 'greater', 'less' or None, got {rule!r}")
        save_best = hook.get("save_best", "auto")
        if save_best is not None and not isinstance(save_best, str):
            raise ConfigError(f"evaluation.save_best must be a metric name, 'auto' or None, got {save_best!r}")
        settings = cls(positive_setting({"evaluation": hook}, "evaluation.interval", 1), start, save_best, rule,
                       metrics, topk, broadcast_bn)
        if save_best not in (None, "auto"):
            if save_best not in settings.result_keys():
                raise ConfigError(f"evaluation.save_best={save_best!r} is not one of the results "
                                  f"({', '.join(settings.result_keys())})")
            if rule is None:
                _infer_rule(save_best)
        return settings

    def result_keys(self) -> list[str]:
        """The names of the results, in evaluate()'s order (the first is what ``save_best='auto'`` keeps)."""
        keys = []
        for metric in self.metrics:
            keys += [f"top{k}_acc" for k in self.topk] if metric == "top_k_accuracy" else [metric]
        return keys

    def due(self, epoch: int) -> bool:
        """Whether validation follows 1-based ``epoch`` (mmcv's ``_should_evaluate``)."""
        if self.start is None:
            return epoch % self.interval == 0
        return epoch >= self.start and (epoch - self.start) % self.interval == 0

    def best_key(self) -> Optional[tuple[str, str]]:
        """``(key, rule)`` that ranks the best checkpoint, or ``None`` without ``save_best``."""
        if self.save_best is None:
            return None
        key = self.result_keys()[0] if self.save_best == "auto" else self.save_best
        return key, self.rule or _infer_rule(key)


@dataclass(frozen=True)
class CheckpointSettings:
    """``checkpoint_config = dict(interval, max_keep_ckpts=-1, save_last=True)`` as mmcv's CheckpointHook read it:
    ``epoch_<e>.pth`` when ``e % interval == 0`` or, with ``save_last``, at the last epoch; after each save, with
    ``max_keep_ckpts > 0``, the files ``max_keep_ckpts * interval`` epochs back and further (every ``interval``
    epochs, down to the first that is missing) are removed."""
    interval: int = 1
    max_keep_ckpts: int = -1
    save_last: bool = True

    @classmethod
    def from_config(cls, checkpoint_config: Optional[Mapping[str, Any]]) -> "CheckpointSettings":
        config = dict(checkpoint_config or {})
        if config.get("type", "CheckpointHook") != "CheckpointHook":
            raise ConfigError(f"checkpoint_config.type must be 'CheckpointHook', got {config['type']!r}")
        config.pop("type", None)
        for key, default in (("by_epoch", True), ("save_optimizer", True), ("out_dir", None)):
            if key in config and config.pop(key) != default:
                raise ConfigError(f"checkpoint_config.{key} is not supported (only {default!r})")
        unknown = sorted(set(config) - {"interval", "max_keep_ckpts", "save_last"})
        if unknown:
            raise ConfigError(f"checkpoint_config: unknown key {unknown[0]!r} (known: interval, max_keep_ckpts, "
                              "save_last)")
        keep = config.get("max_keep_ckpts", -1)
        if isinstance(keep, bool) or not isinstance(keep, int):
            raise ConfigError(f"checkpoint_config.max_keep_ckpts must be a whole number, got {keep!r}")
        return cls(positive_setting({"checkpoint_config": config}, "checkpoint_config.interval", 1), keep,
                   bool(config.get("save_last", True)))

    def saves(self, epoch: int, total_epochs: int) -> bool:
        return epoch % self.interval == 0 or (self.save_last and epoch == total_epochs)

    def redundant(self, epoch: int) -> range:
        """The epochs whose files mmcv tried to remove after saving ``epoch``, newest first (it stopped at the first
        missing file)."""
        if self.max_keep_ckpts <= 0:
            return range(0)
        return range(epoch - self.max_keep_ckpts * self.interval, 0, -self.interval)


def broadcast_bn_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's BN running statistics to every process (mmcv's DistEvalHook before each validation: DDP
    leaves each process its own)."""
    if not ctx.distributed:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            dist.broadcast(module.running_var, 0)
            dist.broadcast(module.running_mean, 0)


def val_log_iters(num_videos: int, data: Mapping[str, Any], ctx: DistContext) -> int:
    """The ``iter`` of a validation row in mmcv's json log: the number of batches of rank 0's val loader
    (``data.val_dataloader.videos_per_gpu`` or ``data.videos_per_gpu`` videos each, the set padded to a multiple of
    the process count)."""
    per_gpu = int((data.get("val_dataloader") or {}).get("videos_per_gpu", data.get("videos_per_gpu", 1)))
    return math.ceil(math.ceil(num_videos / ctx.world_size) / per_gpu)


def resume_position(meta: Mapping[str, Any], world_size: int) -> tuple[int, int]:
    """The epoch and global iteration a resumed run continues from. As mmcv's ``resume``, an iteration count saved
    by a run with another number of processes is scaled to this one's (``iter * saved / now``), so that the
    per-iteration warm-up continues where it was."""
    epoch, iteration = int(meta.get("epoch", 0)), int(meta.get("iter", 0))
    saved_world = int(meta.get("world_size") or world_size)
    if saved_world != world_size:
        iteration = int(iteration * saved_world / world_size)
    return epoch, iteration


def check_workflow(cfg: Mapping[str, Any]) -> None:
    """Only the seed's ``workflow = [('train', 1)]``: a val workflow (mmaction's val-loss epochs) is not done."""
    workflow = cfg.get("workflow", [("train", 1)])
    if [tuple(step) for step in workflow] != [("train", 1)]:
        raise ConfigError(f"workflow must be [('train', 1)], got {workflow!r} (validation is --validate)")


def train(cfg: Mapping[str, Any], opts: TrainOptions, ctx: DistContext) -> dict[str, Any]:
    """Fine-tune as ``cfg`` says. Everything that can be wrong with the input (config, annotation lists, the
    resume file) is checked before the first file is written. Returns the last validation metrics (if any), the
    best score and the work dir."""
    data = cfg["data"]
    num_classes = int(cfg["model"]["cls_head"]["num_classes"])
    decoder = data.get("decoder", "decord")
    resume_from = opts.resume_from or cfg.get("resume_from")
    resume = read_checkpoint(resume_from) if resume_from else None
    # a resumed run keeps its seed unless one is given: the rest of the run draws what it would have drawn
    saved_seed = (resume or {}).get("meta", {}).get("seed")
    seed = resolve_seed(next((s for s in (opts.seed, cfg.get("seed"), saved_seed) if s is not None), None), ctx)
    normalize = not normalizes_on_device(data)
    train_set = build_dataset(data["train"], "train", num_classes, decoder, seed, normalize)
    val_set = build_dataset(data["val"], "val", num_classes, decoder, normalize=normalize) if opts.validate else None
    if opts.test_last or opts.test_best:
        build_dataset(data["test"], "test", num_classes, decoder)  # fail now, not after training
    if opts.test_best and not opts.validate:
        raise ValueError("--test-best needs --validate (the best checkpoint is chosen by validation)")
    work_dir = work_dir_of(cfg, opts)
    total_epochs = positive_setting(cfg, "total_epochs")
    interval = positive_setting(cfg, "log_config.interval", 20)
    ckpt = CheckpointSettings.from_config(cfg.get("checkpoint_config"))
    evaluation = EvalSettings.from_config(cfg.get("evaluation"))
    check_workflow(cfg)
    test_cfg = cfg["model"].get("test_cfg") or {}
    # validation views averaged as the config's test_cfg says (mmaction's recognizer read it in validation too)
    average = test_cfg.get("average_clips", "prob")
    if opts.validate and average not in ("prob", "score"):
        raise ConfigError(f"model.test_cfg.average_clips must be 'prob' or 'score' to validate, got {average!r}")
    precise = cfg.get("precise_bn")
    if precise:
        positive_setting(cfg, "precise_bn.interval", 1)
        positive_setting(cfg, "precise_bn.num_iters", 200)
    if opts.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    elif ctx.device.type == "cuda":
        # mmaction turned cuDNN's autotuner on only for cudnn_benchmark=True; here it is on unless the config says
        # cudnn_benchmark=False (docs/deviations.md)
        torch.backends.cudnn.benchmark = bool(cfg.get("cudnn_benchmark", True))

    torch.manual_seed(seed)  # the same initial head in every process
    model = build_recognizer({**cfg["model"], "num_segments": num_segments(data["train"]["pipeline"])})
    report = None
    if resume is None and cfg.get("load_from"):
        report = load_pretrained(model, cfg["load_from"], inflate=bool(cfg.get("inflate", False)))
    precision = Precision.from_config(cfg, ctx.device)
    step_model, channels_last = prepare_model(model, cfg, ctx, precision)
    optimizer = build_optimizer(cfg, model)
    loader = _loader(train_set, cfg, ctx, seed)
    schedule = CosineWarmup.from_config(cfg.get("lr_config") or {}, float(cfg["optimizer"]["lr"]), total_epochs,
                                        len(loader))
    trainer = Trainer(cfg, ctx, model, step_model, optimizer, schedule, precision, precision.scaler(ctx.device),
                      _grad_clip(cfg), loader, channels_last)

    start_epoch, iteration, best = 0, 0, None
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        optimizer.load_state_dict(resume["optimizer"])
        if trainer.scaler is not None and "amp_scaler" in resume:
            trainer.scaler.load_state_dict(resume["amp_scaler"])
        meta = resume.get("meta", {})
        start_epoch, iteration = resume_position(meta, ctx.world_size)
        best = tuple(meta["best"]) if meta.get("best") else None

    log: Optional[RunLog] = None
    if ctx.primary:
        work_dir.mkdir(parents=True, exist_ok=True)
        stamp = timestamp()
        dump_config({**cfg, "seed": seed}, work_dir / f"{Path(cfg.get('filename', 'config')).stem}.py")
        log = RunLog(work_dir, (cfg.get("log_config") or {}).get("hooks", [dict(type="TextLoggerHook")]),
                     to_plain(dict(cfg)), stamp)
        # mmaction's meta, the json log's first line
        log.write_meta({"env_info": environment_info(ctx), "seed": seed,
                        "config_name": Path(cfg.get("filename", "config")).name, "work_dir": work_dir.resolve().name})
        logger.info("%s: %.2fM params, %d classes; %d train videos%s; %d process(es) on %s, %d videos per process, "
                    "precision %s; epochs %d-%d of %d; seed %d; work dir %s",
                    Path(cfg.get("filename", "config")).name, sum(p.numel() for p in model.parameters()) / 1e6,
                    num_classes, len(train_set), f", {len(val_set)} val" if val_set else "", ctx.world_size,
                    ctx.device.type, loader.batch_size, precision.describe(), start_epoch + 1, total_epochs,
                    total_epochs, seed, work_dir)
        for key in unknown_data_keys(data):
            logger.warning("data.%s is not a setting this project reads; ignored", key)
        if report is not None:  # every key that did not load, in the run's log too
            for number, line in enumerate(report.summary().splitlines()):
                logger.info("load_from %s" if number == 0 else "%s", line)
        if resume is not None:
            logger.info("resumed from %s at epoch %d, iteration %d", resume_from, start_epoch, iteration)
        if start_epoch >= total_epochs:
            logger.warning("nothing to train: the run already has %d of total_epochs=%d epochs", start_epoch,
                           total_epochs)
    val_metrics: dict[str, float] = {}
    run_start = time.perf_counter()
    best_key = evaluation.best_key()
    labels = [r.label for r in val_set.records] if val_set is not None else []

    def validate(done: int) -> bool:
        """Validate after 1-based epoch ``done``, log it, keep the best checkpoint (mmcv's EvalHook); ``False``
        when no validation video could be decoded."""
        nonlocal best, val_metrics
        if evaluation.broadcast_bn:
            broadcast_bn_buffers(model, ctx)
        scores = predict(model, val_set, ctx, test_cfg.get("max_testing_views"), average,
                         int(data.get("workers_per_gpu", 2)), precision.dtype, f"val {done}")
        if all(s is None for s in scores):  # stopping here would lose the epoch: it is saved, unvalidated
            if ctx.primary:
                logger.warning("epoch %d not validated: no video of the validation set could be decoded", done)
            val_metrics = {}
            return False
        val_metrics = evaluate_scores(scores, labels, evaluation.metrics, evaluation.topk)
        # every process holds the gathered scores, so all agree on the best (--test-best tests it everywhere)
        previous = best
        if best_key is not None:
            key, rule = best_key
            score = val_metrics[key]
            if best is None or (score > best[1] if rule == "greater" else score < best[1]):
                best = (key, score, done)
        if ctx.primary:
            log.add({"mode": "val", "epoch": done, "iter": val_log_iters(len(val_set), data, ctx),
                     "lr": optimizer.param_groups[0]["lr"], "global_iter": iteration,
                     **{k: v for k, v in val_metrics.items() if k != "num_videos"}})
            if best is not previous:
                if previous is not None:
                    (work_dir / best_file(previous[0], int(previous[2]))).unlink(missing_ok=True)
                save_checkpoint(_checkpoint(trainer, cfg, done, iteration, best, seed),
                                work_dir / best_file(best[0], done))
        return True

    # mmcv's EvalHook with `start`: a run that begins at or after `start` first validates the weights it starts from
    if val_set is not None and evaluation.start is not None and start_epoch >= evaluation.start \
            and evaluation.due(start_epoch + 1):
        validate(start_epoch + 1)

    for epoch in range(start_epoch, total_epochs):
        seed_epoch(seed, epoch, ctx.rank)
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        stats, iteration = trainer.train_epoch(epoch, iteration, log, interval)
        done = epoch + 1
        if precise and done % int(precise.get("interval", 1)) == 0:
            used = trainer.precise_bn(int(precise.get("num_iters", 200)))
            if ctx.primary:
                logger.info("precise-BN: statistics averaged over %d batches", used)
        validated = val_set is not None and evaluation.due(done)
        if validated:
            validated = validate(done)
        if ctx.primary:
            state = _checkpoint(trainer, cfg, done, iteration, best, seed)
            save_checkpoint(state, work_dir / LATEST)
            if ckpt.saves(done, total_epochs):
                _link_atomic(work_dir / LATEST, work_dir / epoch_file(done))
                for old in ckpt.redundant(done):  # mmcv's max_keep_ckpts
                    path = work_dir / epoch_file(old)
                    if not path.is_file():
                        break
                    path.unlink()
            remaining = (time.perf_counter() - run_start) / (done - start_epoch) * (total_epochs - done)
            message = (f"epoch {done}/{total_epochs}  loss {stats['loss']:.4f}  train top-1 "
                       f"{100 * stats['top1_acc']:.2f}  lr {optimizer.param_groups[0]['lr']:.3g}  "
                       f"{stats['clips_per_s']:.1f} clips/s  {format_duration(stats['seconds'])}  "
                       f"ETA {format_duration(remaining)}")
            if validated:
                message += "  | val " + _metrics_text(val_metrics)
            if stats["skipped"]:
                message += f"  ({stats['skipped']} unreadable videos skipped and replaced)"
            logger.info(message)
    if ctx.distributed:  # the last checkpoints exist before any process goes on to test them
        dist.barrier()
    tests = {}
    for checkpoint in checkpoints_to_test(opts, work_dir, total_epochs, best, ckpt):
        if ctx.primary:
            logger.info("testing %s", checkpoint)
        # mmaction's train.py tested with the evaluation dict's metrics and options
        results = run_test(cfg, TestOptions(str(checkpoint), evaluation.metrics, str(test_output(checkpoint)),
                                            topk=evaluation.topk), ctx)
        tests[checkpoint.name] = {k: v for k, v in results.items() if k not in ("scores", "skipped")}
        if log is not None:
            logger.info("test of %s: %s", checkpoint.name, _metrics_text(tests[checkpoint.name]))
            log.add({"mode": "test", "checkpoint": checkpoint.name, "global_iter": iteration,
                     **tests[checkpoint.name]})
    if log is not None:
        log.close()
    return {"work_dir": str(work_dir), "val": val_metrics, "best": best, "seed": seed,
            "last_checkpoint": str(work_dir / (epoch_file(total_epochs) if ckpt.saves(total_epochs, total_epochs)
                                               else LATEST)), "tests": tests}


def checkpoints_to_test(opts: TrainOptions, work_dir: Path, total_epochs: int,
                        best: Optional[tuple[str, float, int]],
                        ckpt: Optional[CheckpointSettings] = None) -> list[Path]:
    """``--test-last``: the last epoch's checkpoint (``latest.pth`` where ``save_last=False`` left no
    ``epoch_<n>.pth``); ``--test-best``: the best validation checkpoint."""
    ckpt = ckpt or CheckpointSettings()
    last = epoch_file(total_epochs) if ckpt.saves(total_epochs, total_epochs) else LATEST
    checkpoints = [work_dir / last] if opts.test_last else []
    if opts.test_best and best is not None:
        checkpoints.append(work_dir / best_file(best[0], int(best[2])))
    return checkpoints


def test_output(checkpoint: Path) -> Path:
    """Where ``--test-last`` / ``--test-best`` write a checkpoint's per-video scores: ``<name>_test.json``."""
    return checkpoint.with_name(f"{checkpoint.stem}_test.json")

