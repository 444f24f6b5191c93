"""Stage 1 training semantics against timm 0.5, the seed's fork, as its train.py ran the seed's scripts: the LR
schedule, LAMB, Mixup/CutMix, the loss, the samplers and the validation crop."""
import argparse
import math

import numpy as np
import pytest
import timm
import torch
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from sts3d.data.images import ImageDataset
from sts3d.engine.distributed import DistContext
from sts3d.engine.image_cli import train_parser
from sts3d.engine.image_train import (build_criterion, build_mixup, build_optimizer, build_scheduler, data_config,
                                      eval_transform, train_loader)

# the optimizer, schedule and loss flags of Image_Pre_Training/scripts/<model>/distributed_train.sh
RECIPE = ["--opt", "lamb", "--weight-decay", "0.02", "--lr", "5e-3", "--sched", "cosine", "--lr-cycle-decay", "1.0",
          "--warmup-epochs", "5", "--warmup-lr", "5e-6", "--epochs", "300", "--cooldown-epochs", "0",
          "--mixup", "0.1", "--cutmix", "1.0", "--smoothing", "0", "--bce-loss", "--crop-pct", "0.95"]


def recipe_args(*extra):
    return train_parser().parse_args(["data", "--model", "v3d_x3d_s_224", *RECIPE, *extra])


# ------------------------------------------------------------------------------------ validation crop

def test_validation_crop_defaults_to_0875_as_the_seed_resolved_it():
    """The fork's v3d models set default_cfg to the whole table of configs, so timm 0.5's resolve_data_config fell
    back to its defaults: bicubic, ImageNet mean/std, 224 and crop 0.875 (resize 256). --crop-pct 0.95 (the
    training scripts') resizes to floor(224 / 0.95) = 235."""
    model = timm.create_model("v3d_x3d_s_224", num_classes=2)
    parser = train_parser()
    cfg = data_config(parser.parse_args(["data", "--model", "v3d_x3d_s_224"]), model)
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic" and cfg["input_size"] == (3, 224, 224)
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    resize, crop = eval_transform(cfg).transforms[:2]
    assert resize.size == 256 and tuple(crop.size) == (224, 224)
    resize = eval_transform(data_config(parser.parse_args(["data", "--model", "v3d_x3d_s_224", "--crop-pct", "0.95"]),
                                        model)).transforms[0]
    assert resize.size == 235
