"""The pieces of stage 2 on their own: the eleven configs against spec 5.2, overrides, the schedule, metrics,
precise-BN and BN folding."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sts3d.config import ConfigError, load_config
from sts3d.data.pipeline import PipelineError, build_dataset, clip_settings, num_segments, unknown_data_keys
from sts3d.engine.metrics import mean_class_accuracy, top_k_accuracy
from sts3d.engine.video_test import METRICS, evaluate_scores, evaluation_settings, format_table
from sts3d.engine.precise_bn import update_bn_stats
from sts3d.engine.schedule import CosineWarmup
from sts3d.engine.distributed import DistContext
from sts3d.engine.video_train import Precision, build_optimizer, positive_setting, prepare_model
from sts3d.models import create_backbone
from sts3d.models.builder import build_recognizer
from sts3d.models.fuse import fuse_conv_bn

from finetune_helpers import CONFIGS

# spec 5.2: clip_len, interval, train clips; test clips, test crop, test short side; batch, lr, epochs, eval every,
# precise-BN, checkpoint interval, inflate, classes
SPEC = {
    "csn/ircsn50_32x2_STS_k400_video.py": (32, 2, 1, 10, 256, 256, 16, 0.01, 50, 5, False, 5, False, 400),
    "csn/ircsn50_1x8_STS_sthv2_video.py": (1, 1, 8, 8, 256, 256, 8, 0.1, 50, 1, False, 5, False, 174),
    "r2plus1d/r2plus1d_r34_8x8_STS_k400_video.py": (8, 8, 1, 10, 256, 256, 16, 0.01, 50, 5, True, 5, False, 400),
    "r2plus1d/r2plus1d_r34_1x8_STS_sthv2_video.py": (1, 1, 8, 8, 256, 256, 8, 0.1, 50, 1, False, 5, False, 174),
    "slowfast/slowfast50_4x16_32x2_STS_k400_video.py": (32, 2, 1, 10, 256, 256, 16, 0.01, 50, 5, True, 4, False, 400),
    "slowfast/slowfast50_8x8_32x2_STS_k400_video.py": (32, 2, 1, 10, 256, 256, 16, 0.01, 50, 5, True, 5, False, 400),
    "slowfast/slowfast50_4x16_1x32_STS_sthv2_video.py": (1, 1, 32, 32, 256, 256, 8, 0.1, 50, 1, False, 5, False,
                                                         174),
    "slowonly/slowonly50_8x8_STS_k400_video.py": (8, 8, 1, 10, 256, 256, 16, 0.02, 50, 5, True, 5, False, 400),
    "slowonly/slowonly50_1x8_STS_sthv2_video.py": (1, 1, 8, 8, 256, 256, 8, 0.1, 50, 1, False, 5, True, 174),
    "x3d/x3d_s_13x6_STS_k400_video.py": (13, 6, 1, 10, 192, 192, 32, 0.02, 100, 5, True, 5, False, 400),
    "x3d/x3d_s_1x8_STS_sthv2_video.py": (1, 1, 8, 8, 256, 256, 8, 0.1, 50, 1, False, 5, False, 174),
}


@pytest.mark.parametrize("name", sorted(SPEC))
def test_config_settings_follow_the_spec(name):
    (clip_len, interval, clips, test_clips, test_crop, test_short, batch, lr, epochs, eval_every, precise, ckpt,
     inflate, classes) = SPEC[name]
    cfg = load_config(CONFIGS / name)
    k400 = "k400" in name
    train, train_test_mode = clip_settings(cfg.data.train.pipeline)
    val, _ = clip_settings(cfg.data.val.pipeline)
    test, test_mode = clip_settings(cfg.data.test.pipeline)
    assert not train_test_mode and test_mode
    assert (train.clip_len, train.frame_interval, train.num_clips) == (clip_len, interval, clips)
    assert train.flip is k400  # no flip for SSv2, whose classes depend on left/right
    assert (train.short_side, train.crop_size) == ((192, 160) if "x3d_s_13x6" in name else (256, 224))
    assert (val.num_clips, val.test_crop) == (1 if k400 else clips, "center")
    assert (test.num_clips, test.test_crop, test.crop_size, test.short_side) == (test_clips, "three", test_crop,
                                                                                 test_short)
    assert train.area_range == (0.08, 1.0) and train.aspect_ratio_range == pytest.approx((3 / 4, 4 / 3))
    assert cfg.data.videos_per_gpu == batch and cfg.optimizer.lr == lr and cfg.total_epochs == epochs
    assert cfg.evaluation.interval == eval_every and cfg.checkpoint_config.interval == ckpt
    assert bool(cfg.get("precise_bn")) is precise and cfg.inflate is inflate
    assert cfg.model.cls_head.num_classes == classes and cfg.model.test_cfg.average_clips == "prob"
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 1e-4
    assert cfg.optimizer_config.grad_clip == {"max_norm": 40, "norm_type": 2}
    assert cfg.lr_config.warmup_iters == 5 and cfg.fp16.loss_scale == 512.0 and cfg.load_from is None
    # the seed's fp16 is a GPU setting: float32 on a CPU unless bf16 is asked for
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert Precision.from_config(cfg, cpu) == Precision(None, None)
    assert Precision.from_config({**cfg, "bf16": True}, cpu) == Precision(torch.bfloat16, None)
    assert Precision.from_config(cfg, cuda) == Precision(torch.float16, 512.0)
    assert num_segments(cfg.data.train.pipeline) == (None if k400 else clips)


def test_x3d_k400_does_not_decay_norms_and_biases():
    cfg = load_config(CONFIGS / "x3d/x3d_s_13x6_STS_k400_video.py")
    model = nn.Sequential(nn.Conv3d(3, 4, 1, bias=True), nn.BatchNorm3d(4))
    decays = sorted(g["weight_decay"] for g in build_optimizer(cfg, model).param_groups)
    assert decays == [0.0, 1e-4]
    groups = {g["weight_decay"]: len(g["params"]) for g in build_optimizer(cfg, model).param_groups}
    assert groups == {1e-4: 1, 0.0: 3}  # conv weight decays; conv bias, BN weight and bias do not


def test_cfg_options_reach_nested_keys_and_list_items():
    cfg = load_config(CONFIGS / "csn/ircsn50_32x2_STS_k400_video.py", [
        "model.cls_head.num_classes=10", "data.train.ann_file=my list.txt", "optimizer.lr=0.5", "optimizer.lr=0.2",
        "model.test_cfg.max_testing_views=5", "data.train.pipeline.1.clip_len=8", "load_from=ckpt/x.pth",
        "model.backbone.reshape_st=False"])
    assert cfg.model.cls_head.num_classes == 10 and cfg.data.train.ann_file == "my list.txt"
    assert cfg.optimizer.lr == 0.2 and cfg.model.test_cfg.max_testing_views == 5
    assert cfg.data.train.pipeline[1]["clip_len"] == 8 and cfg.load_from == "ckpt/x.pth"
    assert cfg.model.backbone.reshape_st is False
    with pytest.raises(ConfigError, match="not an index"):
        load_config(CONFIGS / "csn/ircsn50_32x2_STS_k400_video.py", ["data.train.pipeline.40.clip_len=8"])


def test_pipeline_steps_that_cannot_be_honoured_are_named():
    with pytest.raises(PipelineError, match=r"pipeline\[1\] ColorJitter: unsupported"):
        clip_settings([dict(type="SampleFrames", clip_len=2), dict(type="ColorJitter")])
    with pytest.raises(PipelineError, match="flip_ratio"):
        clip_settings([dict(type="SampleFrames", clip_len=2), dict(type="RandomResizedCrop"),
                       dict(type="Flip", flip_ratio=0.3)])
    with pytest.raises(PipelineError, match="normalisation"):
        clip_settings([dict(type="SampleFrames", clip_len=2, test_mode=True), dict(type="Normalize", mean=[0] * 3,
                                                                                    std=[1] * 3)])


def test_misspelt_or_unsupported_settings_are_errors_not_ignored(tmp_path):
    sample = dict(type="SampleFrames", clip_len=2)
    crop = dict(type="RandomResizedCrop")
    with pytest.raises(PipelineError, match=r"pipeline\[0\] SampleFrames: unknown argument 'clip_lenn'"):
        clip_settings([dict(sample, clip_lenn=3), crop])
    with pytest.raises(PipelineError, match="only twice_sample=False"):  # mmaction would double the views
        clip_settings([dict(sample, twice_sample=True, test_mode=True)])
    with pytest.raises(PipelineError, match="only interpolation='bilinear'"):
        clip_settings([sample, crop, dict(type="Resize", scale=(8, 8), keep_ratio=False, interpolation="bicubic")])
    with pytest.raises(PipelineError, match="area_rangee"):
        clip_settings([sample, dict(crop, area_rangee=(0.1, 1))])
    with pytest.raises(PipelineError, match="input_format='NCTHW'"):
        clip_settings([sample, crop, dict(type="FormatShape", input_format="NCHW")])
    # mmaction's defaults spelt out, and a crop size as (w, h), read as before
    settings, _ = clip_settings([dict(sample, start_index=0, temporal_jitter=False, test_mode=True),
                                 dict(type="ThreeCrop", crop_size=(48, 48))])
    assert settings.crop_size == 48 and settings.test_crop == "three"
    with pytest.raises(PipelineError, match="only square crops"):
        clip_settings([dict(sample, test_mode=True), dict(type="CenterCrop", crop_size=(48, 40))])
    with pytest.raises(PipelineError, match="data.train: unknown key 'ann_fille'"):
        build_dataset(dict(ann_fille="x.txt", pipeline=[sample, crop]), "train", 4)
    assert unknown_data_keys(dict(videos_per_gpu=2, vidoes_per_gpu=8, train={})) == ["vidoes_per_gpu"]
    model = nn.Conv3d(3, 4, 1)
    with pytest.raises(ConfigError, match="optimizer: unknown key 'lrr'"):
        build_optimizer({"optimizer": dict(type="SGD", lr=0.1, lrr=0.2)}, model)
    with pytest.raises(ConfigError, match="paramwise_cfg: 'dwconv_decay_mult'"):
        build_optimizer({"optimizer": dict(lr=0.1, paramwise_cfg=dict(dwconv_decay_mult=0.0))}, model)
    with pytest.raises(ValueError, match="lr_config: unknown key 'warmup_iter'"):
        CosineWarmup.from_config(dict(policy="CosineAnnealing", warmup="linear", warmup_iter=3), 0.1, 10, 5)
    cfg = load_config(CONFIGS / "x3d/x3d_s_13x6_STS_k400_video.py", ["model.backbone.reshape_stt=False"])
    with pytest.raises(ValueError, match="model.backbone: an unexpected keyword argument 'reshape_stt'"):
        build_recognizer(cfg.model)
    for key, value in (("evaluation.interval", 0), ("checkpoint_config.interval", 2.5), ("total_epochs", -1)):
        cfg = load_config(CONFIGS / "x3d/x3d_s_13x6_STS_k400_video.py", [f"{key}={value}"])
        with pytest.raises(ConfigError, match=f"{key} must be a positive whole number"):
            positive_setting(cfg, key)


def test_min_lr_ratio_sets_the_floor_relative_to_the_rate():
    schedule = CosineWarmup.from_config(dict(min_lr_ratio=0.01), 0.1, 10, 5)
    assert schedule.min_lr == pytest.approx(0.001) and schedule.lr(5 * 9) > schedule.min_lr


def test_cosine_schedule_with_linear_warmup():
    schedule = CosineWarmup.from_config(dict(policy="CosineAnnealing", min_lr=0, warmup="linear",
                                             warmup_by_epoch=True, warmup_iters=5), 0.1, 50, 10)
    assert schedule.lr(0) == pytest.approx(0.1 * 0.1)  # warm-up starts at 0.1x (mmcv's default ratio)
    # half-way through the first warm-up epoch: the ramp over 50 iterations, applied to epoch 0's cosine rate
    assert schedule.lr(25) == pytest.approx(0.1 * (1 - 0.5 * 0.9) * (1 + math.cos(math.pi * 2 / 50)) / 2)
    assert schedule.lr(50) == pytest.approx(0.1 * (1 + math.cos(math.pi * 5 / 50)) / 2)  # warm-up over
    assert schedule.lr(499) == pytest.approx(0.1 * (1 + math.cos(math.pi * 49 / 50)) / 2)
    assert all(schedule.lr(i) == schedule.lr(i - 1) for i in range(61, 70))  # stepped per epoch after warm-up


def test_top_k_and_mean_class_accuracy():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = [1, 1, 2, 2]
    assert top_k_accuracy(scores, labels, (1, 2, 5)) == [0.5, 0.75, 1.0]  # k above the classes: every video
    # mmaction's mean over the confusion matrix's rows: class 0 is predicted (video 2) but never the label, so it
    # counts as a class with recall 0
    assert mean_class_accuracy(scores, labels) == pytest.approx((0 + 1 / 2 + 1 / 2) / 3)
    assert mean_class_accuracy(scores, [1, 0, 2, 2]) == pytest.approx((1 + 1 + 0.5) / 3)
    # a class neither predicted nor a label does not count; the first of equal scores is the prediction
    assert mean_class_accuracy(np.array([[0.5, 0.5, 0.0], [0.2, 0.1, 0.7]]), [1, 2]) == pytest.approx(1 / 3)


def test_evaluation_settings_read_mmaction_eval_options():
    assert evaluation_settings({}) == (METRICS, (1, 5))
    assert evaluation_settings({"metrics": "mean_class_accuracy"}) == (("mean_class_accuracy",), (1, 5))
    options = {"metric_options": {"top_k_accuracy": {"topk": (1, 3)}}}
    assert evaluation_settings(options) == (METRICS, (1, 3))
    assert evaluation_settings({"metric_options": {"top_k_accuracy": {"topk": 2}}})[1] == (2,)
    with pytest.warns(FutureWarning, match="top-level topk is deprecated"):
        assert evaluation_settings({"topk": [1, 4]})[1] == (1, 4)
    for bad, message in (({"metrics": ["top1"]}, "unknown metric 'top1'"),
                         ({"metric_option": {}}, "unknown evaluation setting 'metric_option'"),
                         ({"metric_options": {"top_k_accuracy": {"k": 3}}}, "has no setting 'k'"),
                         ({"metric_options": {"top_k_accuracy": {"topk": (0, 5)}}}, "topk must be"),
                         ({"metric_options": {"top_k_accuracy": {"topk": "1,5"}}}, "topk must be")):
        with pytest.raises(ValueError, match=message):
            evaluation_settings(bad, "--eval-options")


def test_evaluate_scores_names_each_k_in_the_order_asked():
    scores = [[0.1, 0.7, 0.2], None, [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]
    results = evaluate_scores(scores, [1, 0, 2, 2], ("mean_class_accuracy", "top_k_accuracy"), (2, 1))
    assert list(results) == ["mean_class_accuracy", "top2_acc", "top1_acc", "num_videos"]
    assert results["top2_acc"] == pytest.approx(2 / 3) and results["num_videos"] == 3
    table = format_table(results).splitlines()
    assert [title.strip() for title in table[0].split("|")] == ["mean class accuracy", "top-2", "top-1"]
    assert table[2].split() == ["50.00", "|", "66.67", "|", "66.67"]


def test_precise_bn_averages_batch_statistics():
    torch.manual_seed(0)
    bn = nn.BatchNorm3d(3).train()
    batches = [torch.randn(2, 3, 2, 4, 4) * (i + 1) + i for i in range(4)]
    with pytest.warns(RuntimeWarning, match="only 4 batches"):
        used = update_bn_stats(bn, iter(batches), 10, len(batches), bn)
    assert used == 4
    means = torch.stack([b.mean((0, 2, 3, 4)) for b in batches]).mean(0)
    variances = torch.stack([b.transpose(0, 1).flatten(1).var(1) for b in batches]).mean(0)
    torch.testing.assert_close(bn.running_mean, means)
    torch.testing.assert_close(bn.running_var, variances)
    assert bn.momentum == 0.1  # restored


@pytest.mark.parametrize("name", ["x3d_s", "r2plus1d34"])
def test_fuse_conv_bn_keeps_outputs(name):
    torch.manual_seed(0)
    model = create_backbone(name, sts=True)
    for m in model.modules():  # non-trivial statistics
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        expected = model(x)
        fused = fuse_conv_bn(model)(x)
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())


def test_test_views_go_one_at_a_time_on_a_cpu_and_batched_on_a_gpu():
    from sts3d.engine.video_test import video_scores, views_per_forward
    from sts3d.models import create_recognizer

    assert views_per_forward(torch.device("cpu"), 10, 30) == 1
    assert views_per_forward(torch.device("cuda"), 10, 30) == 10
    assert views_per_forward(torch.device("cuda"), None, 30) == 30
    torch.manual_seed(0)
    model = create_recognizer("x3d_s", num_classes=3, sts=True).eval()
    calls = []
    model.backbone.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    views = torch.randint(0, 256, (4, 3, 4, 32, 32), dtype=torch.uint8)
    one_by_one = video_scores(model, views, None, "prob")
    assert calls == [1, 1, 1, 1]
    batched = video_scores(model, views, None, "prob", chunk=4)
    assert calls[4:] == [4]
    torch.testing.assert_close(one_by_one, batched, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_trainer_normalises_uint8_clips_on_the_device_in_the_asked_layout(channels_last):
    from sts3d.data.video import normalize_clips
    from sts3d.engine.distributed import DistContext
    from sts3d.engine.video_train import Trainer

    trainer = Trainer({}, DistContext(device=torch.device("cpu")), None, None, None, None, None, None, None, None,
                      channels_last)
    clips = torch.randint(0, 256, (2, 3, 3, 4, 5, 6), dtype=torch.uint8)  # (N, V, C, T, H, W)
    out = trainer.to_device(clips)
    assert out.dtype == torch.float32 and torch.equal(out, normalize_clips(clips))
    assert out.flatten(0, 1).is_contiguous(memory_format=torch.channels_last_3d) == channels_last


def test_compile_switch_takes_a_mode_and_names_the_valid_ones():
    ctx, model = DistContext(device=torch.device("cpu")), nn.Linear(2, 2)
    precision = Precision.from_config({}, ctx.device)
    compiled, _ = prepare_model(model, {"compile": "reduce-overhead"}, ctx, precision)
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule) and compiled._orig_mod is model
    assert prepare_model(model, {"compile": False}, ctx, precision)[0] is model
    with pytest.raises(ValueError, match="reduce-overhead.*got 'fast'"):
        prepare_model(model, {"compile": "fast"}, ctx, precision)
