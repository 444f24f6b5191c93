"""Stage 2's training engine against the rules of mmcv 1.x / mmaction2 0.20 that the seed's configs rely on: the
optimizer constructor, gradient clipping, the LR updater hooks, the evaluation and checkpoint hooks, resume and the
TextLoggerHook's json log. Each test names the behaviour it checks."""
from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from torch import nn

from sts3d.config import ConfigError
from sts3d.engine import video_train
from sts3d.engine.distributed import DistContext
from sts3d.engine.run_log import RunLog
from sts3d.engine.schedule import CosineWarmup
from sts3d.engine.video_train import (CheckpointSettings, EvalSettings, Precision, Trainer, build_optimizer,
                                      check_workflow, checkpoints_to_test, prepare_model, resume_position,
                                      TrainOptions, val_log_iters)


def _cos(base: float, floor: float, factor: float) -> float:
    """mmcv's annealing_cos: from ``base`` at factor 0 to ``floor`` at factor 1."""
    return floor + 0.5 * (base - floor) * (math.cos(math.pi * factor) + 1)


# --- optimizer: mmcv's DefaultOptimizerConstructor + torch.optim.SGD ---------------------------------------------

def test_sgd_keys_left_out_take_torch_defaults():
    """mmcv built torch.optim.SGD(**optimizer): an unset momentum is torch's 0, not 0.9."""
    opt = build_optimizer({"optimizer": dict(type="SGD", lr=0.1)}, nn.Linear(2, 2))
    group = opt.param_groups[0]
    assert group["momentum"] == 0 and group["weight_decay"] == 0 and group["nesterov"] is False


def test_paramwise_decay_follows_mmcv_norm_types_and_keeps_frozen_parameters():
    """DefaultOptimizerConstructor: norm layers are _BatchNorm, _InstanceNorm, GroupNorm and LayerNorm (their bias
    too takes norm_decay_mult); bias_decay_mult is for other layers' biases; a parameter with requires_grad=False is
    still handed to the optimizer (at the base decay), and without paramwise_cfg every parameter is."""
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.InstanceNorm3d(4, affine=True), nn.GroupNorm(2, 4),
                          nn.BatchNorm3d(4), nn.Linear(4, 2))
    model[4].bias.requires_grad_(False)
    cfg = {"optimizer": dict(lr=0.1, momentum=0.9, weight_decay=1e-4,
                             paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.5))}
    decay = {id(p): g["weight_decay"] for g in build_optimizer(cfg, model).param_groups for p in g["params"]}
    assert len(decay) == len(list(model.parameters()))  # the frozen bias included
    expected = {model[0].weight: 1e-4, model[0].bias: 0.5e-4, model[4].weight: 1e-4, model[4].bias: 1e-4}
    for norm in model[1:4]:
        expected.update({norm.weight: 0.0, norm.bias: 0.0})
    assert {id(p): wd for p, wd in expected.items()} == pytest.approx(decay)
    plain = build_optimizer({"optimizer": dict(lr=0.1, weight_decay=1e-4)}, model)
    assert sum(len(g["params"]) for g in plain.param_groups) == len(list(model.parameters()))


# --- gradient clipping: mmcv's OptimizerHook.clip_grads ----------------------------------------------------------

class _Views(nn.Module):
    """(N, V, C, T, H, W) -> (N, V, K) logits, a stand-in recognizer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.frozen = nn.Linear(3, 4)
        self.frozen.requires_grad_(False)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.fc(clips.mean((3, 4, 5)))


def _trainer(model: nn.Module, cfg: dict, loader=None) -> Trainer:
    opt = build_optimizer(cfg, model)
    schedule = CosineWarmup.from_config(cfg.get("lr_config", {}), cfg["optimizer"]["lr"], 2, 3)
    return Trainer(cfg, DistContext(), model, model, opt, schedule, Precision(None, None), None,
                   video_train._grad_clip(cfg), loader, False)


def test_grad_clip_passes_max_norm_and_norm_type_and_returns_the_norm_before_clipping():
    """grad_clip=dict(max_norm, norm_type) is clip_grad_norm_'s keyword arguments over the parameters that train and
    have a gradient, before the step; the hook logs the norm it returns (grad_norm)."""
    torch.manual_seed(0)
    model = _Views()
    cfg = {"optimizer": dict(lr=0.0, momentum=0.9), "optimizer_config": dict(grad_clip=dict(max_norm=1e-3,
                                                                                            norm_type=1))}
    trainer = _trainer(model, cfg)
    clips, labels = torch.randn(2, 1, 3, 2, 4, 4) * 10, torch.tensor([0, 3])
    loss, logits, norm = trainer.step(clips, labels)
    # after the step the stored gradients are the clipped ones: 1-norm max_norm
    clipped = sum(p.grad.abs().sum() for p in trainer.optimizer.param_groups[0]["params"] if p.grad is not None)
    assert clipped.item() == pytest.approx(1e-3, rel=1e-4)
    model.zero_grad()  # lr 0: the same weights give the same gradients again
    video_train._flat_loss(model(clips), labels).backward()
    raw = sum(p.grad.abs().sum() for p in model.fc.parameters())  # the 1-norm, before clipping
    torch.testing.assert_close(norm, raw)
    with pytest.raises(ConfigError, match="grad_clip: unknown key 'max_nrom'"):
        video_train._grad_clip({"optimizer_config": dict(grad_clip=dict(max_nrom=40))})


# --- LR: mmcv's CosineAnnealingLrUpdaterHook + LrUpdaterHook warm-up ---------------------------------------------

def test_warmup_iters_count_iterations_unless_warmup_by_epoch():
    """LrUpdaterHook(warmup_by_epoch=False) is mmcv's default: warmup_iters=5 means 5 iterations."""
    schedule = CosineWarmup.from_config(dict(policy="CosineAnnealing", min_lr=0, warmup="linear", warmup_iters=5),
                                        0.1, 50, 10)
    assert schedule.lr(0) == pytest.approx(0.01)
    assert schedule.lr(2) == pytest.approx(0.1 * (1 - (1 - 2 / 5) * 0.9))
    assert schedule.lr(5) == pytest.approx(0.1) and schedule.lr(10) == pytest.approx(_cos(0.1, 0, 1 / 50))
    by_epoch = CosineWarmup.from_config(dict(min_lr=0, warmup="linear", warmup_iters=5, warmup_by_epoch=True),
                                        0.1, 50, 10)
    assert by_epoch.lr(49) < by_epoch.epoch_lr(4) and by_epoch.lr(50) == pytest.approx(_cos(0.1, 0, 5 / 50))


def test_cosine_by_iteration_when_by_epoch_is_false():
    """by_epoch=False: progress is runner.iter out of runner.max_iters (epochs x iterations per epoch), and the
    warm-up scales the current iteration's cosine rate."""
    schedule = CosineWarmup.from_config(dict(policy="CosineAnnealing", min_lr_ratio=0.01, by_epoch=False,
                                             warmup="linear", warmup_iters=4, warmup_ratio=0.2), 0.1, 5, 10)
    for i in (0, 3, 4, 17, 49):
        regular = _cos(0.1, 0.001, i / 50)
        expected = regular if i >= 4 else regular * (1 - (1 - i / 4) * 0.8)
        assert schedule.lr(i) == pytest.approx(expected)


def test_the_cosine_rate_follows_the_runner_epoch():
    """With by_epoch=True the rate is set from runner.epoch; the global iteration decides only the warm-up (a
    resumed run on another number of processes has another number of iterations per epoch)."""
    schedule = CosineWarmup.from_config(dict(min_lr=0, warmup="linear", warmup_iters=1, warmup_by_epoch=True),
                                        0.1, 10, 10)
    assert schedule.lr(100, epoch=3) == pytest.approx(_cos(0.1, 0, 3 / 10))
    assert schedule.lr(5, epoch=3) == pytest.approx(_cos(0.1, 0, 3 / 10) * (1 - 0.5 * 0.9))


def test_warmup_arguments_are_checked_as_mmcv_checked_them():
    """LrUpdaterHook asserted warmup_iters > 0 and 0 < warmup_ratio <= 1 when a warm-up is asked for."""
    with pytest.raises(ValueError, match="warmup_ratio"):
        CosineWarmup.from_config(dict(min_lr=0, warmup="linear", warmup_iters=2, warmup_ratio=0), 0.1, 5, 10)
    with pytest.raises(ValueError, match="warmup_iters"):
        CosineWarmup.from_config(dict(min_lr=0, warmup="linear", warmup_iters=0), 0.1, 5, 10)


# --- evaluation: mmaction 0.20's EvalHook (mmcv's, save_best='auto') ---------------------------------------------

def test_save_best_is_auto_by_default_and_names_the_first_result():
    """mmaction's EvalHook defaults save_best='auto': the first key of evaluate()'s results, which follow the order
    of `metrics` and of topk; save_best=None keeps no best checkpoint; the rule comes from the key."""
    assert EvalSettings.from_config(dict(interval=5)).best_key() == ("top1_acc", "greater")
    order = EvalSettings.from_config(dict(metrics=["mean_class_accuracy", "top_k_accuracy"]))
    assert order.best_key() == ("mean_class_accuracy", "greater")
    topk = EvalSettings.from_config(dict(metrics=["top_k_accuracy"],
                                         metric_options=dict(top_k_accuracy=dict(topk=(5, 1)))))
    assert topk.best_key() == ("top5_acc", "greater") and topk.topk == (5, 1)
    assert EvalSettings.from_config(dict(save_best=None)).best_key() is None
    assert EvalSettings.from_config(dict(save_best="top5_acc", rule="less")).best_key() == ("top5_acc", "less")
    with pytest.raises(ConfigError, match="save_best='top3_acc' is not one of the results"):
        EvalSettings.from_config(dict(save_best="top3_acc"))
    with pytest.raises(ValueError, match="unknown evaluation setting 'intervall'"):
        EvalSettings.from_config(dict(intervall=5))


def test_evaluation_epochs_follow_interval_and_start():
    """EvalHook._should_evaluate: every `interval` epochs; with `start`, epochs start, start + interval, ..."""
    assert [e for e in range(1, 13) if EvalSettings.from_config(dict(interval=5)).due(e)] == [5, 10]
    assert [e for e in range(1, 13) if EvalSettings.from_config(dict(interval=2, start=3)).due(e)] == [3, 5, 7, 9,
                                                                                                      11]


def test_val_rows_count_the_val_loaders_batches():
    """TextLoggerHook writes a val row's iter as len(val dataloader) (eval_iter_num) on rank 0: the val set
    padded over the processes, in batches of videos_per_gpu (or data.val_dataloader's)."""
    assert val_log_iters(19796, {"videos_per_gpu": 16}, DistContext(world_size=8)) == 155
    assert val_log_iters(10, {"videos_per_gpu": 4, "val_dataloader": {"videos_per_gpu": 1}}, DistContext()) == 10


# --- checkpoints: mmcv's CheckpointHook, resume -------------------------------------------------------------------

def test_checkpoint_hook_keeps_and_removes_as_mmcv():
    """CheckpointHook: epoch files every `interval` epochs and, with save_last (default True), at the last;
    max_keep_ckpts removes the files max_keep_ckpts * interval epochs back and further."""
    ckpt = CheckpointSettings.from_config(dict(interval=4, max_keep_ckpts=2))
    assert [e for e in range(1, 51) if ckpt.saves(e, 50)] == list(range(4, 49, 4)) + [50]
    assert list(ckpt.redundant(16)) == [8, 4] and list(ckpt.redundant(50)) == list(range(42, 0, -4))
    assert list(CheckpointSettings.from_config(dict(interval=5)).redundant(50)) == []
    no_last = CheckpointSettings.from_config(dict(interval=4, save_last=False))
    assert not no_last.saves(50, 50)
    last = checkpoints_to_test(TrainOptions(test_last=True), video_train.Path("w"), 50, None, no_last)
    assert [p.name for p in last] == ["latest.pth"]
    with pytest.raises(ConfigError, match="checkpoint_config: unknown key 'max_keep_ckpt'"):
        CheckpointSettings.from_config(dict(interval=5, max_keep_ckpt=3))


def test_resume_scales_the_iteration_count_to_the_number_of_processes():
    """mmcv's BaseRunner.resume: iter * previous GPUs / current GPUs when the process count changed."""
    assert resume_position({"epoch": 10, "iter": 10000, "world_size": 4}, 8) == (10, 5000)
    assert resume_position({"epoch": 10, "iter": 10000}, 8) == (10, 10000)  # a file without the count


def test_workflow_other_than_train_is_refused():
    """mmaction ran a val epoch (val losses) for workflow [('train', 1), ('val', 1)]; this trainer does not."""
    check_workflow({"workflow": [("train", 1)]})
    with pytest.raises(ConfigError, match="workflow"):
        check_workflow({"workflow": [("train", 1), ("val", 1)]})


def test_ddp_keeps_each_process_bn_statistics(monkeypatch):
    """mmaction wrapped the model in MMDistributedDataParallel(broadcast_buffers=False)."""
    seen = {}

    def fake_ddp(module, **kwargs):
        seen.update(kwargs)
        return module

    monkeypatch.setattr(video_train, "DistributedDataParallel", fake_ddp)
    prepare_model(nn.Linear(2, 2), {}, DistContext(world_size=2), Precision(None, None))
    assert seen["broadcast_buffers"] is False and seen["find_unused_parameters"] is False


# --- the json log: mmcv's TextLoggerHook, read by mmaction's analyze_logs.py --------------------------------------

def test_training_rows_carry_the_text_logger_fields(tmp_path):
    """A train row has mode, epoch, iter (1-based in the epoch), lr, data_time, time and mmaction's log_vars
    (top1_acc, top5_acc, loss_cls, loss) plus grad_norm with clipping; floats rounded to 5 decimals; the file
    begins with the run's meta, which has no epoch."""
    torch.manual_seed(0)
    batches = [(torch.randn(2, 1, 3, 2, 4, 4), torch.tensor([0, 1]), torch.zeros(2)) for _ in range(5)]
    cfg = {"optimizer": dict(lr=0.1, momentum=0.9), "optimizer_config": dict(grad_clip=dict(max_norm=40))}
    trainer = _trainer(_Views(), cfg, batches)
    trainer.loader = type("Loader", (), {"__iter__": lambda self: iter(batches), "__len__": lambda self: 5,
                                         "sampler": range(10)})()
    log = RunLog(tmp_path, [dict(type="TextLoggerHook")], {})
    log.write_meta({"seed": 3, "config_name": "x.py"})
    trainer.train_epoch(0, 0, log, 2)
    log.close()
    lines = [json.loads(line) for line in log.json_path.read_text().splitlines()]
    assert lines[0] == {"seed": 3, "config_name": "x.py"}
    rows = lines[1:]
    assert [r["iter"] for r in rows] == [2, 4, 5] and {r["mode"] for r in rows} == {"train"}
    for row in rows:
        assert {"epoch", "lr", "data_time", "time", "top1_acc", "top5_acc", "loss_cls", "loss", "grad_norm"} <= set(row)
        assert row["loss"] == row["loss_cls"] and row["top5_acc"] == 1.0  # 4 classes: top-5 counts every clip
        assert all(v == round(v, 5) for v in row.values() if isinstance(v, float))


def test_a_hook_that_is_not_a_dict_is_an_input_error_and_leaves_no_log(tmp_path):
    """``--cfg-options log_config.hooks=[dict(type=...)]`` hands over strings: one ValueError naming the hook (the
    CLI's one-line error), not an AttributeError, and neither a log file nor a logging handler is left behind."""
    handlers = list(logging.getLogger().handlers)
    for hooks, match in (("[dict(type='TensorboardLoggerHook')]", "must be a list of dict"),
                         (["dict(type='TensorboardLoggerHook')"], "must be a list of dict"),
                         ([dict(type="TextLoggerHook"), dict(type="MlflowLoggerHook")], "unknown hook 'Mlflow")):
        with pytest.raises(ValueError, match=match):
            RunLog(tmp_path, hooks, {})
    assert list(tmp_path.iterdir()) == [] and logging.getLogger().handlers == handlers


def test_curves_plot_the_metrics_the_evaluation_asked_for(tmp_path):
    """evaluation.metrics=['mean_class_accuracy'] (no top-k rows) or a topk of (1, 3): the curves draw those."""
    for name, val in (("mean", {"mean_class_accuracy": 0.5}), ("top3", {"top1_acc": 0.2, "top3_acc": 0.6})):
        (tmp_path / name).mkdir()
        log = RunLog(tmp_path / name, [dict(type="TextLoggerHook")], {})
        log.add({"mode": "train", "epoch": 1, "iter": 1, "epoch_float": 1.0, "lr": 0.1, "loss": 1.0})
        log.add({"mode": "val", "epoch": 1, "iter": 4, **val})
        log.close()
        assert (tmp_path / name / "curves.png").stat().st_size > 0
