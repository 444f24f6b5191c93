"""The ``v3d_*`` image models' wrapper and the stage-1 -> stage-2 weight transfer, against the seed's timm fork
(``Image_Pre_Training/timm/models/v3d.py``: class ``V3D``) and its mmaction fork (``mmaction/apis/train.py``:
``load_from`` with and without ``inflate``). The backbones themselves are checked in test_backbone_reference.py and
the keys and logits in test_image_models.py."""
import math

import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_data_config
from torch import nn

import sts3d  # noqa: F401  (registers the v3d_* models in timm)
from sts3d.checkpoint import load_pretrained, save_checkpoint
from sts3d.models import IMAGE_MODELS, create_recognizer

NAMES = sorted(IMAGE_MODELS)


@pytest.mark.parametrize("name", NAMES)
def test_model_config_resolves_as_the_seeds_did(name):
    """The seed's models carried ``default_cfg`` = the whole table of configs, so timm 0.5's resolve_data_config took
    its defaults: 224, bicubic, ImageNet mean/std, crop 0.875 (the fork's own ``_cfg`` says 0.875 too). A caller that
    resolves from the model alone (timm's validate.py) must get the same."""
    cfg = resolve_data_config({}, model=timm.create_model(name, num_classes=3))
    assert cfg == dict(input_size=(3, 224, 224), interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN,
                       std=IMAGENET_DEFAULT_STD, crop_pct=0.875, crop_mode="center")


@pytest.mark.parametrize("name", NAMES)
def test_cfg_names_the_models_first_convs_and_classifier(name):
    """``first_conv`` / ``classifier`` name real modules: the convs that read the RGB image (both pathways' stems for
    SlowFast, the spatial half of R(2+1)D's and X3D's stems) and the final Linear."""
    model = timm.create_model(name, num_classes=3)
    first = model.pretrained_cfg["first_conv"]
    first = (first,) if isinstance(first, str) else first
    modules = dict(model.named_modules())
    for conv in first:
        assert isinstance(modules.get(conv), nn.Conv3d) and modules[conv].in_channels == 3, conv
    rgb_convs = [n for n, m in modules.items() if isinstance(m, nn.Conv3d) and m.in_channels == 3]
    assert sorted(first) == sorted(rgb_convs)
    assert modules[model.pretrained_cfg["classifier"]] is model.get_classifier()


def test_x3d_dropout_sits_before_fc1():
    """V3D.forward: pool, flatten, dropout, then X3D's fc1 and ReLU, then the classifier (spec section 2 order)."""
    torch.manual_seed(0)
    model = timm.create_model("v3d_x3d_s_224", num_classes=3, drop_rate=0.5).eval()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.train()
    seen = {}
    model.fc1.register_forward_hook(lambda module, args, out: seen.update(fc1_in=args[0].clone()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
        pooled = model.get_feature(x.unsqueeze(2)).mean(dim=(2, 3, 4))
    fc1_in, live = seen["fc1_in"], pooled != 0  # conv5 ends in a ReLU: some pooled features are 0 anyway
    kept = live & (fc1_in != 0)
    assert live.sum() > 100 and (fc1_in[live] == 0).any() and kept.any()
    torch.testing.assert_close(fc1_in[kept], 2 * pooled[kept])
    assert (fc1_in[~live] == 0).all()


@pytest.mark.parametrize("name", ["v3d_x3d_s_224", "v3d_r2plus1d34_224"])
def test_head_without_classes_and_reset_classifier(name):
    """timm 0.5's create_classifier: ``num_classes=0`` is an Identity (logits are the ``num_features`` pre-logits:
    2048 after X3D's fc1 + ReLU); ``reset_classifier`` builds Linear(num_features, n) and keeps X3D's fc1."""
    model = timm.create_model(name, num_classes=0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, model.num_features)
    model.reset_classifier(7, "avg")
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == model.num_features
    assert model.num_classes == 7 and model.classifier.out_features == 7
    assert model.num_features == {"v3d_x3d_s_224": 2048, "v3d_r2plus1d34_224": 512}[name]
    if "x3d" in name:
        assert model.fc1.in_features == 432 and model.fc1.bias is not None


def test_global_pool_is_average_only():
    """The seed took ``global_pool`` (timm's ``--gp``) and ignored it: the pool is always a 3-D global average.
    'avg' (or None) is accepted; another pool, which the model cannot give, is an error rather than ignored."""
    model = timm.create_model("v3d_x3d_s_224", num_classes=3, global_pool="avg")
    model.reset_classifier(4, global_pool="avg")
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("v3d_x3d_s_224", num_classes=3, global_pool="max")
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(4, global_pool="max")


def test_image_model_conv_biases_keep_pytorch_default_init():
    """V3D.init_weights re-initialises every Conv3d *weight* (Kaiming) and every BN; conv biases (X3D's SE fcs, the
    only biased convs) keep nn.Conv3d's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), not zeros."""
    torch.manual_seed(0)
    model = timm.create_model("v3d_x3d_s_224", num_classes=3)
    biased = [m for m in model.modules() if isinstance(m, nn.Conv3d) and m.bias is not None]
    assert len(biased) == 30
    for m in biased:
        bound, largest = 1 / math.sqrt(m.weight[0].numel()), m.bias.detach().abs().max().item()
        assert bound / 4 < largest <= bound
        fan_out = m.out_channels * m.weight[0, 0].numel()
        assert m.weight.detach().std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.5)


def test_inflate_path_renames_fc1_but_not_the_classifier(tmp_path):
    """The seed's ``inflate=True`` revises keys with ``get_feature -> backbone`` and ``^fc1. -> cls_head.fc1.`` (not the
    classifier): X3D's pre-train fc1 weight reaches the video head as on the plain path; the classifier does not."""
    torch.manual_seed(0)
    image = timm.create_model("v3d_x3d_s_224", num_classes=2)
    path = tmp_path / "model_best.pth.tar"
    save_checkpoint({"arch": "v3d_x3d_s_224", "state_dict": image.state_dict()}, path)
    for inflate in (False, True):
        video = create_recognizer("x3d_s", num_classes=2)
        report = load_pretrained(video, path, inflate=inflate)
        assert torch.equal(video.cls_head.fc1.weight, image.fc1.weight), inflate
        assert "cls_head.fc1.bias" in report.unexpected  # the video head's fc1 has no bias
        fc2_loaded = torch.equal(video.cls_head.fc2.weight, image.classifier.weight)
        assert fc2_loaded is False  # neither path maps classifier -> fc2
        classifier_target = "cls_head.fc_cls.weight" if not inflate else "classifier.weight"
        assert classifier_target in report.unexpected
