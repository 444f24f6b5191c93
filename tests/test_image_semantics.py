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


# ------------------------------------------------------------------------------------------- schedule

def test_recipe_schedule_is_timm_05s_cosine_stepped_per_epoch():
    """timm 0.5's create_scheduler: CosineLRScheduler(t_initial=epochs, lr_min=1e-6, warmup_t=5, warmup_lr_init=5e-6,
    no warm-up prefix, one cycle, k-decay 1, t_in_epochs) and epochs + cooldown epochs to run. Epoch 0 runs at the
    warm-up lr; step(epoch + 1) after each epoch sets the next; step_update leaves an epoch schedule alone."""
    optimizer = build_optimizer(recipe_args(), nn.Linear(2, 2))
    scheduler, num_epochs = build_scheduler(recipe_args(), optimizer, updates_per_epoch=7)
    assert num_epochs == 300

    def expected(t):  # linear warm-up, then cosine on the epoch index itself (not t - warmup)
        if t < 5:
            return 5e-6 + t * (5e-3 - 5e-6) / 5
        return 1e-6 + 0.5 * (5e-3 - 1e-6) * (1 + math.cos(math.pi * t / 300))

    updates = 0
    for epoch in range(num_epochs):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected(epoch), rel=1e-12, abs=0), epoch
        for _ in range(7):
            updates += 1
            scheduler.step_update(updates)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected(epoch), rel=1e-12, abs=0)
        scheduler.step(epoch + 1, 50.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-6)
    _, with_cooldown = build_scheduler(recipe_args("--cooldown-epochs", "10"), optimizer, updates_per_epoch=7)
    assert with_cooldown == 310


# ------------------------------------------------------------------------------------------------- LAMB

def reference_lamb_step(params, state, lr, weight_decays, step, betas=(0.9, 0.999), eps=1e-6, max_norm=1.0):
    """One LAMB step as timm 0.5 took it: grads divided by max(global grad norm / 1.0, 1); Adam moments with bias
    correction; weight decay added to the update; the trust ratio |w| / |update| only where the decay is not 0."""
    grads = [p.grad.double() for p in params]
    clip = max(math.sqrt(sum(float(g.pow(2).sum()) for g in grads)) / max_norm, 1.0)
    new = []
    for p, g, wd in zip(params, grads, weight_decays):
        g = g / clip
        m, v = state.setdefault(id(p), (torch.zeros_like(g), torch.zeros_like(g)))
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        state[id(p)] = (m, v)
        update = (m / (1 - betas[0] ** step)) / (v.sqrt() / math.sqrt(1 - betas[1] ** step) + eps)
        w = p.detach().double()
        if wd:
            update = update + wd * w
            w_norm, u_norm = w.norm(), update.norm()
            update = update * (w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0)
        new.append(w - lr * update)
    return new


def test_lamb_is_timm_05s():
    """create_optimizer_v2(model, 'lamb', lr, weight_decay=0.02): no decay for 1-D parameters and biases, in the
    first group; Lamb's betas (0.9, 0.999), eps 1e-6, bias correction, global grad-norm clip 1.0, trust ratio only
    for the decayed group (always_adapt off), no trust clip, decay added to the update (not decoupled)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    optimizer = build_optimizer(recipe_args(), model)
    no_decay, decay = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 0.02
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["0.bias", "1.bias", "1.weight", "3.bias"]
    assert sorted(names[id(p)] for p in decay["params"]) == ["0.weight", "3.weight"]
    settings = {key: decay[key] for key in ("lr", "betas", "eps", "bias_correction", "grad_averaging",
                                            "max_grad_norm", "trust_clip", "always_adapt")}
    assert settings == dict(lr=5e-3, betas=(0.9, 0.999), eps=1e-6, bias_correction=True, grad_averaging=True,
                            max_grad_norm=1.0, trust_clip=False, always_adapt=False)
    assert not decay.get("decoupled_decay", False) and not decay.get("caution", False)

    params = no_decay["params"] + decay["params"]
    decays = [0.0] * len(no_decay["params"]) + [0.02] * len(decay["params"])
    state = {}
    for step in (1, 2, 3):
        x = torch.randn(8, 3, 6, 6) * (20 if step == 1 else 1)  # a large first gradient: the clip acts
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        expected = reference_lamb_step(params, state, 5e-3, decays, step)
        optimizer.step()
        for p, e in zip(params, expected):
            torch.testing.assert_close(p.detach().double(), e, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------- Mixup

def timm05_box(height, width, lam):
    """timm 0.5's rand_bbox + lambda correction: the centre drawn row then column, side // 2 to either side."""
    cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
    cy, cx = np.random.randint(0, height), np.random.randint(0, width)
    top, bottom = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    left, right = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    # timm >= 0.9 would end the box at cy + (cut_h + 1) // 2 and cx + (cut_w + 1) // 2
    differs = (min(cy + (cut_h + 1) // 2, height), min(cx + (cut_w + 1) // 2, width)) != (bottom, right)
    return (top, bottom, left, right), 1 - (bottom - top) * (right - left) / (height * width), differs


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_cutmix_pastes_timm_05s_box_over_height_and_width(mode):
    """The seed mixed with timm 0.5's (FastCollate)Mixup: a CutMix box of side // 2 around its centre on each side
    (timm >= 0.9's box is one pixel longer for an odd side), over the last two axes of (N, 3, H, W) images, image i
    paired with image N - 1 - i, targets lam * own + (1 - lam) * partner's."""
    n, height, width = 4, 9, 11
    args = argparse.Namespace(mixup=0.0, cutmix=1.0, mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode=mode,
                              smoothing=0.0)
    mixup = build_mixup(args, num_classes=n)
    images = torch.arange(n * 3 * height * width, dtype=torch.float32).reshape(n, 3, height, width)
    labels = torch.arange(n)
    one_hot = torch.eye(n)
    cases_that_differ = 0
    for seed in range(12):
        np.random.seed(seed)
        mixed, target = mixup(images.clone(), labels)

        np.random.seed(seed)  # the same draws, in timm 0.5's order
        expected, lams = images.clone(), torch.ones(n)
        if mode == "batch":
            np.random.rand()  # whether to mix (prob 1)
            (top, bottom, left, right), lam, differs = timm05_box(height, width, np.random.beta(1.0, 1.0))
            expected[:, :, top:bottom, left:right] = images.flip(0)[:, :, top:bottom, left:right]
            lams[:] = lam
            cases_that_differ += differs
        else:
            count = n // 2 if mode == "pair" else n
            lam_mix = np.random.beta(1.0, 1.0, size=count).astype(np.float32)
            np.random.rand(count)  # whether to mix each (prob 1)
            for i in range(count):
                j = n - 1 - i
                (top, bottom, left, right), lam, differs = timm05_box(height, width, float(lam_mix[i]))
                expected[i, :, top:bottom, left:right] = images[j, :, top:bottom, left:right]
                if mode == "pair":
                    expected[j, :, top:bottom, left:right] = images[i, :, top:bottom, left:right]
                    lams[j] = lam
                lams[i] = lam
                cases_that_differ += differs
        assert torch.equal(mixed, expected), seed
        torch.testing.assert_close(target, lams[:, None] * one_hot + (1 - lams[:, None]) * one_hot.flip(0))
    assert cases_that_differ > 0  # the draws include boxes where timm >= 0.9 would paste another region


# ---------------------------------------------------------------------------------------------- loss

def test_training_loss_is_chosen_as_timm_05s_train_py():
    """Under Mixup/CutMix: BCE without target threshold (--bce-loss) or soft-target CE. Without: --smoothing gives
    BCE with smoothed one-hot targets (--bce-loss) or label-smoothing CE; no smoothing gives plain CE, --bce-loss or
    not (0.5's train.py read --bce-loss only under Mixup or with smoothing)."""
    def criterion(mixup, **flags):
        return build_criterion(argparse.Namespace(**{"bce_loss": False, "smoothing": 0.0, **flags}), mixup)

    mixed_bce = criterion(True, bce_loss=True)
    assert isinstance(mixed_bce, BinaryCrossEntropy) and mixed_bce.target_threshold is None
    assert isinstance(criterion(True), SoftTargetCrossEntropy)
    smoothed_bce = criterion(False, bce_loss=True, smoothing=0.1)
    assert isinstance(smoothed_bce, BinaryCrossEntropy) and smoothed_bce.smoothing == 0.1
    assert smoothed_bce.target_threshold is None
    assert isinstance(criterion(False, smoothing=0.1), LabelSmoothingCrossEntropy)
    assert type(criterion(False, bce_loss=True)) is nn.CrossEntropyLoss
    assert type(criterion(False)) is nn.CrossEntropyLoss
    # the recipe's BCE on Mixup targets: mean over images and classes of BCE with logits
    logits, soft = torch.randn(4, 5), torch.softmax(torch.randn(4, 5), 1)
    torch.testing.assert_close(mixed_bce(logits, soft), nn.functional.binary_cross_entropy_with_logits(logits, soft))


# ------------------------------------------------------------------------------------------- samplers

def test_training_sampler_without_repeats_is_seeded_by_epoch_only():
    """timm 0.5's loader built DistributedSampler(dataset) with torch's default seed 0 (not --seed) and dropped the
    last incomplete batch."""
    dataset = ImageDataset([(f"{i}.png", 0) for i in range(10)], ["a"], "ten", warn=False)
    args = argparse.Namespace(aug_repeats=0, batch_size=2, workers=0, pin_mem=False, seed=42)
    loader = train_loader(dataset, args, DistContext(rank=1, world_size=2), even=True)
    assert loader.sampler.seed == 0 and loader.sampler.shuffle and loader.drop_last
    loader.sampler.set_epoch(3)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    assert list(loader.sampler) == order[1::2]


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
