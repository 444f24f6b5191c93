"""The recognizer and heads against mmaction2 0.20 (the seed's fork): layer order, defaults, the model settings
mmaction acted on, testing precision, and loading the original's fine-tuned checkpoints.

Each test names the mmaction behaviour it checks (``mmaction/models/heads/{i3d,x3d,slowfast}_head.py``,
``heads/base.py``, ``recognizers/{base,recognizer3d}.py`` of 0.20 and the seed's changes to the recognizers).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sts3d.checkpoint import CheckpointError
from sts3d.engine.video_test import load_for_test, autocast_for_testing
from sts3d.models import create_recognizer
from sts3d.models.builder import build_recognizer
from sts3d.models.heads import I3DHead, SlowFastHead, X3DHead

X3D_MODEL = dict(type="Recognizer3D",
                 backbone=dict(type="X3D", gamma_w=1, gamma_b=2.25, gamma_d=2.2, reshape_st=True),
                 cls_head=dict(type="X3DHead", in_channels=432, num_classes=5, spatial_type="avg",
                               dropout_ratio=0.5, fc1_bias=False),
                 train_cfg=None,
                 test_cfg=dict(average_clips="prob"))


def test_i3d_head_pools_then_drops_the_pooled_features_then_classifies():
    """I3DHead.forward: AdaptiveAvgPool3d(1) -> dropout -> view(N, -1) -> fc_cls; N(0, init_std) weight, zero bias."""
    torch.manual_seed(0)
    head = I3DHead(num_classes=4, in_channels=16, dropout=0.5, init_std=0.01).train()
    assert head.fc_cls.bias.abs().sum() == 0 and 0.005 < head.fc_cls.weight.std() < 0.02
    x = torch.randn(3, 16, 2, 3, 3)
    torch.manual_seed(1)
    out = head(x)
    torch.manual_seed(1)
    expected = head.fc_cls(nn.functional.dropout(x.mean(dim=(2, 3, 4)), 0.5, training=True))
    torch.testing.assert_close(out, expected)


def test_x3d_head_is_fc1_without_bias_relu_dropout_fc2():
    """X3DHead: pool -> fc1 (432 -> 2048, bias=fc1_bias, default False) -> ReLU -> dropout -> fc2; both fcs N(0, std)."""
    torch.manual_seed(0)
    head = X3DHead(num_classes=4, in_channels=16, dropout=0.5).train()
    assert head.fc1.bias is None and head.fc1.weight.shape == (2048, 16) and head.fc2.weight.shape == (4, 2048)
    assert head.fc2.bias.abs().sum() == 0
    x = torch.randn(3, 16, 2, 3, 3)
    torch.manual_seed(1)
    out = head(x)
    torch.manual_seed(1)
    hidden = torch.relu(x.mean(dim=(2, 3, 4)) @ head.fc1.weight.t())
    torch.testing.assert_close(out, head.fc2(nn.functional.dropout(hidden, 0.5, training=True)))
    assert X3DHead(4, 16, fc1_bias=True).fc1.bias is not None


def test_slowfast_head_default_dropout_is_mmaction_0_8():
    """SlowFastHead's ``dropout_ratio`` defaults to 0.8 in mmaction (I3DHead's and X3DHead's to 0.5)."""
    assert SlowFastHead(num_classes=4, in_channels=8).dropout.p == 0.8
    assert I3DHead(num_classes=4, in_channels=8).dropout.p == 0.5
    assert X3DHead(num_classes=4, in_channels=8).dropout.p == 0.5
    model = build_recognizer(dict(type="Recognizer3D", backbone=dict(type="ResNet3dSlowFast"),
                                  cls_head=dict(type="SlowFastHead", num_classes=4, in_channels=2304)))
    assert model.cls_head.dropout.p == 0.8


def test_zero_dropout_is_no_dropout_layer():
    """``dropout_ratio=0``: mmaction's heads build no dropout layer at all."""
    head = SlowFastHead(num_classes=4, in_channels=8, dropout=0.0).train()
    x = (torch.randn(2, 4, 1, 2, 2), torch.randn(2, 4, 2, 2, 2))
    torch.testing.assert_close(head(x), head.eval()(x))


def test_model_settings_mmaction_acted_on_are_refused_not_ignored():
    """Recognizer3D took ``backbone, cls_head, neck, train_cfg, test_cfg`` (anything else a TypeError); it built a
    neck, mixed batches with ``train_cfg.blending``, returned pooled features with
    ``test_cfg.feature_extraction=True`` and asserted ``max_testing_views`` is an int. None of these may be
    dropped silently."""
    build_recognizer(X3D_MODEL)
    build_recognizer(dict(X3D_MODEL, neck=None, train_cfg=dict(),
                          test_cfg=dict(average_clips="score", max_testing_views=6, feature_extraction=False)))
    cases = [
        (dict(X3D_MODEL, neck=dict(type="TPN")), "model.neck"),
        (dict(X3D_MODEL, train_cfg=dict(blending=dict(type="MixupBlending", num_classes=5, alpha=0.2))),
         "model.train_cfg.blending"),
        (dict(X3D_MODEL, test_cfg=dict(average_clips="prob", feature_extraction=True)),
         "model.test_cfg.feature_extraction"),
        (dict(X3D_MODEL, test_cfg=dict(average_clips="prob", max_testing_views=2.5)),
         "model.test_cfg.max_testing_views"),
        (dict(X3D_MODEL, test_cfg=dict(average_clips="max")), "model.test_cfg.average_clips"),
        (dict(X3D_MODEL, pretrained="x.pth"), "model: unknown key 'pretrained'"),
    ]
    for cfg, message in cases:
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            build_recognizer(cfg)


def test_head_loss_cls_is_read_as_mmaction_did():
    """BaseHead's ``loss_cls`` default is ``CrossEntropyLoss`` with ``loss_weight=1.0``, which a config may spell
    out; another loss or weight would change the training loss, so it is refused."""
    for loss in (dict(type="CrossEntropyLoss"), dict(type="CrossEntropyLoss", loss_weight=1.0)):
        build_recognizer(dict(X3D_MODEL, cls_head=dict(X3D_MODEL["cls_head"], loss_cls=loss)))
    for loss in (dict(type="CrossEntropyLoss", loss_weight=2.0), dict(type="BCELossWithLogits"),
                 dict(type="CrossEntropyLoss", class_weight=[1.0] * 5)):
        with pytest.raises(ValueError, match="model.cls_head.loss_cls"):
            build_recognizer(dict(X3D_MODEL, cls_head=dict(X3D_MODEL["cls_head"], loss_cls=loss)))


def test_testing_autocasts_fp16_on_cuda_as_the_seeds_recognizer():
    """The seed's ``BaseRecognizer.forward`` wraps ``forward_test`` in ``torch.cuda.amp.autocast()`` whatever the
    config says, so its tests (and validation) ran in fp16 autocast on a GPU; on a CPU that autocast did nothing."""
    assert autocast_for_testing({}, torch.device("cuda")) == torch.float16
    assert autocast_for_testing({"fp16": {"loss_scale": 512.0}}, torch.device("cuda")) == torch.float16
    assert autocast_for_testing({"fp16": {"loss_scale": 512.0}}, torch.device("cpu")) is None
    assert autocast_for_testing({"bf16": True}, torch.device("cuda")) == torch.bfloat16
    assert autocast_for_testing({"bf16": True}, torch.device("cpu")) is None
    assert autocast_for_testing({}, torch.device("cuda"), float32=True) is None


def test_test_py_float32_flag_reaches_the_tester(monkeypatch):
    """``tools/test.py --float32`` opts out of the seed's fp16 test autocast on a GPU; without it the seed's
    precision is kept."""
    from sts3d.engine import video_cli

    seen = []
    monkeypatch.setattr(video_cli, "run_test", lambda cfg, opts, ctx: seen.append(opts.float32))
    config = str(Path(__file__).resolve().parents[1]
                 / "Spatiotemporal_Finetuning/configs/recognition/x3d/x3d_s_13x6_STS_k400_video.py")
    for extra in ([], ["--float32"]):
        assert video_cli.test_main([config, "unused.pth", "--device", "cpu", *extra]) == 0
    assert seen == [False, True]


def _original_finetuned_file(tmp_path, model, prefix=""):
    """A file as mmcv's ``save_checkpoint`` wrote the seed's fine-tuned models: ``meta``, ``state_dict`` (the
    recognizer's keys, ``backbone.*`` / ``cls_head.*``) and ``optimizer``."""
    path = tmp_path / "epoch_50.pth"
    state = {prefix + k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"meta": {"epoch": 50, "iter": 1000, "mmcv_version": "1.4.6", "config": "model = dict()",
                         "fp16": {"loss_scaler": {"scale": 512.0, "growth_tracker": 0}}},
                "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    return path


@pytest.mark.parametrize("name, head_keys", [
    ("x3d_s", {"cls_head.fc1.weight": (2048, 432), "cls_head.fc2.weight": (5, 2048), "cls_head.fc2.bias": (5,)}),
    ("slowfast50_4x16", {"cls_head.fc_cls.weight": (5, 2304), "cls_head.fc_cls.bias": (5,)}),
])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_original_finetuned_checkpoint_loads_every_weight(tmp_path, name, head_keys, prefix):
    """mmcv's ``load_checkpoint`` (the seed's ``test.py``) strips a leading ``module.`` and loads ``state_dict`` into
    the recognizer, whose head keys are ``cls_head.fc_cls.*`` (I3D, SlowFast) or ``cls_head.fc1.weight`` +
    ``cls_head.fc2.*`` (X3D)."""
    torch.manual_seed(0)
    source = create_recognizer(name, num_classes=5, sts=True)
    assert {k: tuple(v.shape) for k, v in source.state_dict().items() if k.startswith("cls_head.")} == head_keys
    path = _original_finetuned_file(tmp_path, source, prefix)
    torch.manual_seed(1)
    target = create_recognizer(name, num_classes=5, sts=True)
    load_for_test(target, str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="does not fit the config's model"):
        load_for_test(create_recognizer(name, num_classes=7, sts=True), str(path))
