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
