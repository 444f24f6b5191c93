"""Factory, recognizers, heads, checkpoint loading and bad input."""
import argparse

import numpy as np
import pytest
import timm
import torch

from sts3d.checkpoint import CheckpointError, load_checkpoint, load_pretrained, read_checkpoint, save_checkpoint
from sts3d.models import average_clips, create_backbone, create_recognizer, list_backbones

SMALL = {"slowfast50_4x16": (2, 3, 8, 32, 32), "slowfast50_8x8": (2, 3, 8, 32, 32)}


def small_clip(name):
    return torch.randn(*SMALL.get(name, (2, 3, 2, 32, 32)))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(KeyError, match="valid names: csn50_ir, r2plus1d34, slowfast50_4x16"):
        create_backbone("resnet50")


@pytest.mark.parametrize("name", ["csn50_ir", "r2plus1d34", "slowfast50_4x16", "slowonly50", "x3d_s"])
def test_wrong_input_rank_says_the_expected_shape(name):
    with pytest.raises(ValueError, match=r"\(N, 3, T, H, W\)"):
        create_backbone(name)(torch.randn(2, 3, 32, 32))


def test_slowfast_needs_enough_frames():
    with pytest.raises(ValueError, match=r"at least resample_rate=8 frames.*got \(1, 3, 4, 32, 32\)"):
        create_backbone("slowfast50_4x16")(torch.randn(1, 3, 4, 32, 32))


@pytest.mark.parametrize("name", sorted(["csn50_ir", "r2plus1d34", "slowfast50_4x16", "slowfast50_8x8",
                                         "slowonly50", "x3d_s"]))
def test_sts_is_same_parameters_and_one_checkpoint(name):
    plain, sts = create_backbone(name), create_backbone(name, sts=True, sts_mode="aligned")
    sts.load_state_dict(plain.state_dict(), strict=True)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in sts.parameters())


@pytest.mark.parametrize("name", ["csn50_ir", "x3d_s"])
@pytest.mark.parametrize("mode", ["faithful", "aligned"])
def test_odd_feature_maps_before_stride2_run(name, mode):
    """112x112 gives a 7x7 map before a stride-2 depthwise conv, where the original crashes."""
    model = create_backbone(name, sts=True, sts_mode=mode).eval()
    plain = create_backbone(name).eval()
    x = torch.randn(1, 3, 2, 112, 112)
    with torch.no_grad():
        out = model(x)
        assert out.shape == plain(x).shape and torch.isfinite(out).all()


def test_reshape_switches_are_the_seeds():
    """sts=True is the seed's switches; they can also be given by hand (reshape_t under slow_pathway)."""
    a = create_backbone("slowfast50_4x16", sts=True)
    b = create_backbone("slowfast50_4x16", slow_pathway=dict(reshape_t=True), fast_pathway=dict(reshape_t=True))
    assert str(a) == str(b)
    r = create_backbone("r2plus1d34", conv_cfg=dict(type="Conv2plus1d_reshape"))
    assert str(r) == str(create_backbone("r2plus1d34", sts=True))


@pytest.mark.parametrize("name,head_keys", [
    ("csn50_ir", ["cls_head.fc_cls.weight", "cls_head.fc_cls.bias"]),
    ("slowfast50_4x16", ["cls_head.fc_cls.weight", "cls_head.fc_cls.bias"]),
    ("x3d_s", ["cls_head.fc1.weight", "cls_head.fc2.weight", "cls_head.fc2.bias"]),
])
def test_recognizer_keys_and_logits(name, head_keys):
    model = create_recognizer(name, num_classes=7, sts=True).eval()
    keys = list(model.state_dict())
    assert [k for k in keys if not k.startswith("backbone.")] == head_keys
    x = small_clip(name)
    with torch.no_grad():
        logits = model(x)
        views = model(torch.stack([x, x], dim=1))
    assert logits.shape == (2, 7) and views.shape == (2, 2, 7)
    torch.testing.assert_close(views[:, 1], logits, rtol=1e-4, atol=1e-5)


def test_slowfast_head_concatenates_fast_then_slow():
    model = create_recognizer("slowfast50_4x16", num_classes=3, dropout=0.0).eval()
    with torch.no_grad():
        model.cls_head.fc_cls.weight.zero_()
        model.cls_head.fc_cls.bias.zero_()
        model.cls_head.fc_cls.weight[0, :256] = 1.0  # class 0 reads the 256 fast channels only
        x = small_clip("slowfast50_4x16")
        slow, fast = model.backbone(x)
        torch.testing.assert_close(model(x)[:, 0], fast.mean(dim=(2, 3, 4)).sum(1), rtol=1e-4, atol=1e-4)


def test_ssv2_segments_fold_into_time():
    """(N, V * S, C, 1, H, W) one-frame segments: each view is the clip of its S segments in order."""
    model = create_recognizer("slowonly50", num_classes=5, num_segments=4).eval()
    segments = torch.randn(2, 3 * 4, 3, 1, 32, 32)
    with torch.no_grad():
        views = model(segments)
        second_view = segments[:, 4:8, :, 0].permute(0, 2, 1, 3, 4)  # (N, C, S, H, W)
        torch.testing.assert_close(views[:, 1], model(second_view), rtol=1e-4, atol=1e-5)
    assert views.shape == (2, 3, 5)
    with pytest.raises(ValueError, match="one-frame segments"):
        model(torch.randn(1, 6, 3, 1, 32, 32))


def test_average_clips():
    scores = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])
    torch.testing.assert_close(average_clips(scores, "score"), torch.tensor([[2.0, 0.0]]))
    torch.testing.assert_close(average_clips(scores, "prob"), scores.softmax(-1).mean(1))
    with pytest.raises(ValueError):
        average_clips(scores, "max")


def pretrain_checkpoint(tmp_path, name):
    """A file like the original's stage-1 output: timm's dict with weights under state_dict and an args Namespace."""
    model = timm.create_model(name, num_classes=1000)
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "arch": name, "state_dict": model.state_dict(), "version": 2,
                "args": argparse.Namespace(model=name, wandb_id="abc")}, path)
    return model, path


def test_load_from_image_checkpoint_into_x3d_recognizer(tmp_path):
    image_model, path = pretrain_checkpoint(tmp_path, "v3d_x3d_s_224")
    model = create_recognizer("x3d_s", num_classes=5, sts=True)
    report = load_checkpoint(model, path)
    backbone_keys = [k for k in model.state_dict() if k.startswith("backbone.")]
    assert set(backbone_keys) <= set(report.loaded)
    assert "cls_head.fc1.weight" in report.loaded  # the pre-trained fc1 is transferred, as in the original
    assert set(report.unexpected) == {"cls_head.fc1.bias", "cls_head.fc_cls.weight", "cls_head.fc_cls.bias"}
    assert set(report.missing) == {"cls_head.fc2.weight", "cls_head.fc2.bias"}
    torch.testing.assert_close(model.backbone.conv5.conv.weight, image_model.get_feature.conv5.conv.weight)


def test_load_reports_shape_mismatch_and_keeps_the_head(tmp_path):
    _, path = pretrain_checkpoint(tmp_path, "v3d_csn50_ir_224")
    model = create_recognizer("csn50_ir", num_classes=5)
    head_before = model.cls_head.fc_cls.weight.clone()
    report = load_checkpoint(model, path)
    assert ("cls_head.fc_cls.weight", (1000, 2048), (5, 2048)) in report.mismatched
    assert "mismatched cls_head.fc_cls.weight" in report.summary()
    torch.testing.assert_close(model.cls_head.fc_cls.weight, head_before)
    # a bare backbone takes the same file
    backbone = create_backbone("csn50_ir")
    assert not load_checkpoint(backbone, path).missing


def test_checkpoint_of_another_network_is_an_error(tmp_path):
    _, path = pretrain_checkpoint(tmp_path, "v3d_x3d_s_224")
    with pytest.raises(CheckpointError, match="no backbone weight fits"):
        load_checkpoint(create_recognizer("csn50_ir", num_classes=5), path)


@pytest.mark.parametrize("image_name, network", [("v3d_csn50_ir_224", "slowonly50"),
                                                 ("v3d_slowfast50_4x16_224", "slowfast50_8x8")])
def test_load_from_a_partly_fitting_network_is_an_error(tmp_path, image_name, network):
    """ir-CSN-50 and SlowOnly-50 share 212 backbone weights, SlowFast 4x16 and 8x8 all but their laterals: a
    partial fit is another network, and nothing is loaded."""
    _, path = pretrain_checkpoint(tmp_path, image_name)
    model = create_recognizer(network, num_classes=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=f"model_best.pth.tar \\({image_name}\\) looks like another network"):
        load_pretrained(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_original_checkpoint_with_numpy_scalars_in_meta_reads(tmp_path):
    """mmcv's EvalHook keeps the best score as the numpy.float64 mmaction's metrics return."""
    model = create_recognizer("x3d_s", num_classes=5)
    path = tmp_path / "best_top1_acc_epoch_50.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {"epoch": 50, "hook_msgs": {
        "best_score": np.float64(0.725), "best_ckpt": "x", "counts": np.arange(3)}}}, path)
    checkpoint = read_checkpoint(path)
    assert checkpoint["meta"]["hook_msgs"]["best_score"] == 0.725
    assert not load_checkpoint(create_recognizer("x3d_s", num_classes=5), path).missing


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)

    def crash(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["state_dict"]["w"], torch.ones(2))


def test_garbage_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth: cannot be read"):
        load_checkpoint(create_backbone("x3d_s"), bad)


def test_build_recognizer_from_a_seed_style_model_dict():
    from sts3d.models.builder import build_recognizer

    cfg = dict(type="Recognizer3D",
               backbone=dict(type="ResNet3dSlowFast", pretrained=None, resample_rate=4, speed_ratio=4,
                             slow_pathway=dict(type="resnet3d", depth=50, pretrained=None, lateral=True,
                                               fusion_kernel=7, conv1_kernel=(1, 7, 7), conv1_stride_t=1,
                                               pool1_stride_t=1, inflate=(0, 0, 1, 1), norm_eval=False,
                                               reshape_t=True),
                             fast_pathway=dict(type="resnet3d", depth=50, pretrained=None, lateral=False,
                                               base_channels=8, conv1_kernel=(5, 7, 7), conv1_stride_t=1,
                                               pool1_stride_t=1, norm_eval=False, reshape_t=True)),
               cls_head=dict(type="SlowFastHead", in_channels=2304, num_classes=7, spatial_type="avg",
                             dropout_ratio=0.5))
    model = build_recognizer(cfg)
    reference = create_recognizer("slowfast50_8x8", num_classes=7, sts=True)
    assert str(model) == str(reference)
    with pytest.raises(ValueError, match="model.backbone.type 'ResNet9'"):
        build_recognizer(dict(cfg, backbone=dict(type="ResNet9")))
    with pytest.raises(ValueError, match=r"model.backbone.pretrained='x.pth' is not supported"):
        build_recognizer(dict(cfg, backbone=dict(cfg["backbone"], pretrained="x.pth")))
