"""Stage 1 end to end on tiny images: training each model, checkpoints into stage 2, exact resume, two processes,
validation, wandb, the data sets and bad input."""
import argparse
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image, ImageDraw

from sts3d.checkpoint import load_checkpoint, read_checkpoint
from sts3d.data.images import DatasetError, ImageDataset, image_folder_dataset, image_list_dataset
from sts3d.engine.distributed import DistContext
from sts3d.engine.image_cli import parse, train_main, train_parser, validate_main
from sts3d.engine.image_train import (build_optimizer, build_scheduler, checkpoint_state, restore_training_state,
                                      train_loader)
from sts3d.models import IMAGE_MODELS, create_recognizer

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "Image_Pre_Training" / "scripts"
# the smallest run: 32 px, 4 images a batch, no loader processes
TINY = ["--img-size", "32", "--batch-size", "4", "--workers", "0", "--epochs", "1"]
# the seed's recipe pieces, cheap at this size
RECIPE = ["--opt", "lamb", "--lr", "5e-3", "--weight-decay", "0.02", "--warmup-epochs", "1", "--warmup-lr", "5e-6",
          "--aa", "rand-m7-mstd0.5-inc1", "--color-jitter", "0", "--aug-repeats", "3", "--mixup", "0.1",
          "--cutmix", "1.0", "--smoothing", "0", "--bce-loss", "--train-interpolation", "bicubic", "--seed", "0"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny convolutions gain nothing from two, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def draw_image(path, label, rng, size=40):
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    box = [8, 8, size - 8, size - 8]
    (draw.ellipse if label == 0 else draw.rectangle)(box, fill=(255, 0, 0) if label == 0 else (0, 0, 255))
    image.save(path)


def make_image_folder(root, per_class=(("train", 4), ("val", 2)), classes=("circle", "square")):
    rng = np.random.default_rng(0)
    for split, count in per_class:
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                draw_image(root / split / name / f"{i}.png", label, rng)
    return root


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """``train/{circle,square}`` with 4 images each, ``val/`` with 2 each, 40 x 40 PNGs."""
    return make_image_folder(tmp_path_factory.mktemp("images"))


def train(data, out, *flags):
    return train_main([str(data), "--output", str(out), *flags])


@pytest.fixture(scope="session")
def x3d_run(images, tmp_path_factory):
    """Two epochs of X3D-S with the recipe's pieces; the folder of its checkpoints."""
    out = tmp_path_factory.mktemp("x3d")
    threads = torch.get_num_threads()  # session fixtures start before the one_thread fixture
    torch.set_num_threads(1)
    assert train(images, out, "--model", "v3d_x3d_s_224", "--experiment", "run", *TINY, *RECIPE,
                 "--epochs", "2") == 0
    torch.set_num_threads(threads)
    return out / "run"


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def same_state(a, b):
    """Equal nested containers of tensors and plain values, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


# ------------------------------------------------------------------------------------------------ each model

EXTRA = {  # a few more switches, each tried on one model
    "v3d_csn50_ir_224": ["--amp", "--channels-last"],
    "v3d_slowonly50_224": ["--step-by-iteration", "--drop-path", "0.05"],
    "v3d_r2plus1d34_224": ["--drop-path", "0.05"],
    "v3d_slowfast50_4x16_224": ["--drop-path", "0"],
    "v3d_slowfast50_8x8_224": ["--drop-path", "0", "--checkpoint-hist", "1"],
    "v3d_x3d_s_224": ["--drop-path", "0"],
}


@pytest.mark.parametrize("name", sorted(IMAGE_MODELS))
def test_one_epoch_then_the_checkpoint_loads_into_stage2(name, images, tmp_path):
    assert train(images, tmp_path, "--model", name, "--experiment", "e", *TINY, *RECIPE, *EXTRA[name]) == 0
    run = tmp_path / "e"
    files = {p.name for p in run.iterdir()}
    assert {"checkpoint-0.pth.tar", "last.pth.tar", "model_best.pth.tar", "args.yaml", "summary.csv",
            "curves.png"} <= files
    checkpoint = read_checkpoint(run / "model_best.pth.tar")  # weights_only=True: args is a plain dict
    assert {"epoch", "arch", "state_dict", "optimizer", "amp_scaler", "metric", "args", "scheduler"} <= set(checkpoint)
    assert checkpoint["epoch"] == 0 and checkpoint["arch"] == name and isinstance(checkpoint["args"], dict)
    state = checkpoint["state_dict"]
    assert {key.split(".")[0] for key in state} == ({"get_feature", "classifier", "fc1"} if "x3d" in name
                                                     else {"get_feature", "classifier"})
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())

    recognizer = create_recognizer(IMAGE_MODELS[name][0], num_classes=5)
    report = load_checkpoint(recognizer, run / "model_best.pth.tar")
    backbone = [key for key in recognizer.state_dict() if key.startswith("backbone.")]
    assert set(backbone) <= set(report.loaded)  # only the 2-class classifier is left out
    own = recognizer.state_dict()
    assert all(torch.equal(own[key], state["get_feature" + key[len("backbone"):]]) for key in backbone)
    if "x3d" in name:  # the seed's mapping carries the X3D fc1 weight over
        assert "cls_head.fc1.weight" in report.loaded
    shutil.rmtree(run)  # up to 0.7 GB of checkpoints (R(2+1)D-34 with its LAMB state); kept when a check fails


# ------------------------------------------------------------------------------------------------- resume

def test_resume_continues_exactly(x3d_run, images, tmp_path):
    """Resuming from the first epoch's checkpoint gives the uninterrupted run's second epoch bit for bit."""
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    shutil.copy(x3d_run / "checkpoint-0.pth.tar", stopped / "last.pth.tar")
    shutil.copy(x3d_run / "summary.csv", stopped)  # with a row of epoch 1, which the resumed run replaces
    assert train(images, tmp_path, "--resume", str(stopped / "last.pth.tar"), "--model", "v3d_x3d_s_224",
                 *TINY, *RECIPE, "--epochs", "2") == 0
    expected, resumed = read_checkpoint(x3d_run / "last.pth.tar"), read_checkpoint(stopped / "last.pth.tar")
    assert resumed["epoch"] == expected["epoch"] == 1
    for key in ("state_dict", "optimizer", "scheduler", "amp_scaler", "metric"):
        assert same_state(resumed[key], expected[key]), key
    assert (stopped / "summary.csv").read_text() == (x3d_run / "summary.csv").read_text()


@pytest.mark.parametrize("saved, now, logged", [
    # extending a run (--epochs) and changing --lr, the LR stepped per epoch
    ({}, {"epochs": 10, "lr": 1e-3}, ["--epochs 10 (was 2)", "--lr 0.001 (was 0.005)"]),
    # the LR stepped per update, with another --batch-size: 5 updates an epoch instead of 2, no schedule flag changed
    ({"step_by_iteration": True}, {"step_by_iteration": True, "batch_size": 2}, ["--batch-size 2 (was 4)"]),
], ids=["epochs-and-lr", "updates-per-epoch"])
def test_resume_with_other_flags_follows_them(x3d_run, caplog, saved, now, logged):
    """On --resume the schedule is this run's flags', as in timm's train.py, not the one saved with the
    checkpoint (whose t_initial, base rate and warm-up are the old run's); the changed flags are logged."""
    checkpoint = read_checkpoint(x3d_run / "checkpoint-0.pth.tar")
    checkpoint["args"].update(saved)
    old = argparse.Namespace(**checkpoint["args"])
    old_scheduler, _ = build_scheduler(old, build_optimizer(old, timm.create_model("v3d_x3d_s_224", num_classes=2)),
                                       updates_per_epoch=2)
    old_scheduler.step(1), old_scheduler.step_update(2)
    checkpoint["scheduler"] = old_scheduler.state_dict()
    args = argparse.Namespace(**{**checkpoint["args"], **now})
    updates = 4 // args.batch_size + 1 if "batch_size" in now else 2
    model = timm.create_model("v3d_x3d_s_224", num_classes=2)
    optimizer = build_optimizer(args, model)
    scheduler, _ = build_scheduler(args, optimizer, updates_per_epoch=updates)
    fresh_optimizer = build_optimizer(args, timm.create_model("v3d_x3d_s_224", num_classes=2))
    fresh, _ = build_scheduler(args, fresh_optimizer, updates_per_epoch=updates)
    with caplog.at_level(logging.INFO, logger="sts3d"):
        assert restore_training_state(checkpoint, model, optimizer, scheduler, None, "ckpt", args, updates) == 1
    fresh.step(1), fresh.step_update(updates)
    assert scheduler.state_dict() == {**fresh.state_dict(), "metric": checkpoint["metric"]}
    assert optimizer.param_groups[0]["lr"] == pytest.approx(fresh_optimizer.param_groups[0]["lr"])
    message = [record.getMessage() for record in caplog.records if "--resume" in record.getMessage()]
    assert len(message) == 1 and all(flag in message[0] for flag in logged), message


def test_command_line_of_the_seed_and_of_timm(tmp_path, capsys):
    """torch.distributed.launch passes --local-rank; timm >= 0.6 spells DATA --data-dir; an abbreviation such as
    timm's --pretrained (which would have been read as --pretrained2d) is refused."""
    args = parse(train_parser(), ["--data-dir", str(tmp_path), "--model", "v3d_x3d_s_224", "--local-rank=0"])
    assert args.data == str(tmp_path) and args.local_rank == 0
    assert parse(train_parser(), [str(tmp_path), "--model", "v3d_x3d_s_224", "--local_rank", "1"]).data == str(tmp_path)
    for argv, message in (([str(tmp_path), "--model", "v3d_x3d_s_224", "--pretrained"], "unrecognized arguments"),
                          (["--model", "v3d_x3d_s_224"], "DATA or --data-dir")):
        with pytest.raises(SystemExit):
            parse(train_parser(), argv)
        assert message in capsys.readouterr().err


def test_restore_brings_back_optimizer_scheduler_and_scaler(x3d_run):
    checkpoint = read_checkpoint(x3d_run / "checkpoint-0.pth.tar")
    args = argparse.Namespace(**checkpoint["args"])
    model = timm.create_model("v3d_x3d_s_224", num_classes=2)
    optimizer = build_optimizer(args, model)
    scheduler, _ = build_scheduler(args, optimizer, updates_per_epoch=2)
    saved_scaler = torch.amp.GradScaler("cpu", init_scale=512.0)
    saved_scaler.load_state_dict({"scale": 64.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                  "growth_interval": 100, "_growth_tracker": 7})
    checkpoint["amp_scaler"] = saved_scaler.state_dict()
    scaler = torch.amp.GradScaler("cpu")
    assert restore_training_state(checkpoint, model, optimizer, scheduler, scaler, "ckpt", args, 2) == 1
    again = checkpoint_state(model, optimizer, scheduler, scaler, 0, checkpoint["metric"], checkpoint["args"],
                             checkpoint["classes"])
    for key in ("state_dict", "optimizer", "scheduler", "amp_scaler"):
        assert same_state(again[key], checkpoint[key]), key
    assert again["amp_scaler"]["scale"] == 64.0 and again["amp_scaler"]["_growth_tracker"] == 7


# ------------------------------------------------------------------------------------- several processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(script, *arguments, **env):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(free_port()),
                   "TORCHRUN": f"{sys.executable} -m torch.distributed.run", **env}
    return subprocess.run(["bash", str(SCRIPTS / script), *map(str, arguments)], capture_output=True, text=True,
                          env=environment, cwd=ROOT, timeout=300)


def test_two_processes_on_cpu_with_the_seed_script(images, x3d_run, tmp_path):
    """The seed's X3D script as written (LAMB, RandAugment, Mixup/CutMix, BCE, repeated augmentation, AMP,
    --log-wandb without wandb), shrunk by flags appended at the end, on 2 gloo processes; then the eval script."""
    done = run_script("x3d/distributed_train.sh", 2, images, tmp_path, *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es) on cpu" in done.stderr and "wandb is not installed" in done.stderr
    checkpoint = read_checkpoint(tmp_path / "x3d_s_a2_300e" / "last.pth.tar")
    assert checkpoint["args"]["world_size"] == 2 and checkpoint["args"]["aug_repeats"] == 3
    assert checkpoint["args"]["lr"] == 5e-3 and checkpoint["args"]["img_size"] == 32  # recipe, then overrides

    # evaluation split over 2 processes counts every image once: the same numbers as one process
    shared = run_script("x3d/distributed_eval.sh", 2, images, x3d_run / "model_best.pth.tar", "--img-size", "32",
                        "--workers", "0")
    assert shared.returncode == 0, shared.stderr[-3000:]
    single = subprocess.run([sys.executable, "Image_Pre_Training/validate.py", str(images), "--checkpoint",
                             str(x3d_run / "model_best.pth.tar"), "--img-size", "32", "--workers", "0",
                             "--crop-pct", "0.95"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    numbers = [re.search(r"\((\d+) images\): top-1 ([\d.]+)  top-5 ([\d.]+)  loss ([\d.]+)", done.stdout).groups()
               for done in (shared, single)]
    assert numbers[0][:3] == numbers[1][:3] and numbers[0][0] == "4"
    assert float(numbers[0][3]) == pytest.approx(float(numbers[1][3]), rel=1e-4)  # float32 batches of 2 vs 4


@pytest.mark.parametrize("script", sorted(p.relative_to(SCRIPTS).as_posix() for p in SCRIPTS.glob("*/*eval.sh")))
def test_eval_scripts_run_in_float32_as_the_seed_did(script, tmp_path):
    """The seed's eval scripts passed no --amp; here it would mean bf16 autocast on a CPU. TORCHRUN=echo prints
    the command line the script would launch."""
    done = run_script(script, 1, tmp_path, tmp_path / "model_best.pth.tar", TORCHRUN="echo")
    assert done.returncode == 0, done.stderr
    argv = done.stdout.split()
    assert argv[argv.index("--nproc_per_node=1") + 1].endswith("validate.py")
    assert "--amp" not in argv and "--native-amp" not in argv


def test_the_seed_launch_line_with_torch_distributed_launch(images, x3d_run):
    """The seed's scripts ran ``python -m torch.distributed.launch --nproc_per_node=N train.py DATA ... --eval
    --resume CKPT``; torch 2's launch adds ``--local-rank=0`` to the script's arguments."""
    done = subprocess.run([sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=1",
                           f"--master_port={free_port()}", "Image_Pre_Training/train.py", str(images), "--model",
                           "v3d_x3d_s_224", "--batch-size", "4", "--opt", "lamb", "--workers", "0", "--drop-path",
                           "0.05", "--img-size", "32", "--eval", "--resume", str(x3d_run / "model_best.pth.tar")],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"\(4 images\): top-1 [\d.]+", done.stdout), done.stdout


def test_scripts_say_how_to_call_them_when_data_is_missing():
    for script in ("csn/distributed_train.sh", "slowfast/distributed_4x16eval.sh"):
        done = run_script(script, DATA="", OUTPUT="", CHECKPOINT="")
        assert done.returncode == 2 and done.stderr.startswith("usage:")
    scripts = sorted(p.relative_to(SCRIPTS).as_posix() for p in SCRIPTS.glob("*/*.sh"))
    assert scripts == sorted([f"{m}/distributed_{k}.sh" for m in ("csn", "r2plus1d", "slowonly", "x3d")
                              for k in ("train", "eval")]
                             + [f"slowfast/distributed_{v}{k}.sh" for v in ("4x16", "8x8") for k in ("train", "eval")])


# --------------------------------------------------------------------------------------------- validation

def test_validate_ends_with_top1_top5_and_loss(x3d_run, images, capsys):
    """validate.py and train.py --eval (both at the seed's default crop, 0.875) report the same; --eval first prints
    the line the seed's train.py printed."""
    assert validate_main([str(images), "--checkpoint", str(x3d_run / "model_best.pth.tar"), "--img-size", "32",
                          "--workers", "0"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "top-1" in last and "top-5 100.000" in last and "loss" in last  # 2 classes: top-5 counts every image
    top1 = float(re.search(r"top-1 ([0-9.]+)", last).group(1))
    assert train_main([str(images), "--model", "v3d_x3d_s_224", "--eval", "--resume",
                       str(x3d_run / "model_best.pth.tar"), "--img-size", "32", "--workers", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2:] == [f"Accuracy of the network on the 4 test images: {top1:.1f}%", last]


# ------------------------------------------------------------------------------------------------- wandb

def test_wandb_run_is_configurable_and_resumed(images, tmp_path, monkeypatch):
    calls = []

    class Run:
        id = "run-123"

        def log(self, row, step):
            calls.append(("log", dict(row), step))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init, Image=lambda array: array))
    flags = ["--model", "v3d_x3d_s_224", "--experiment", "w", *TINY, "--log-wandb", "--project", "p",
             "--wandb-entity", "me", "--wandb-offline", "--log-image"]
    assert train(images, tmp_path, *flags) == 0
    init_kwargs = calls[0][1]
    assert (init_kwargs["project"], init_kwargs["entity"], init_kwargs["name"], init_kwargs["mode"],
            init_kwargs["id"]) == ("p", "me", "w", "offline", None)
    logged = {key for call in calls if call[0] == "log" for key in call[1]}
    assert {"train_images", "eval_top1", "train_loss", "lr"} <= logged
    assert read_checkpoint(tmp_path / "w" / "last.pth.tar")["args"]["wandb_id"] == "run-123"

    calls.clear()
    assert train(images, tmp_path, *flags, "--epochs", "2", "--resume", str(tmp_path / "w" / "last.pth.tar")) == 0
    assert calls[0][1]["id"] == "run-123" and [c[2] for c in calls if c[0] == "log" and "eval_top1" in c[1]] == [1]


# -------------------------------------------------------------------------------------------------- data

def test_repeated_augmentation_with_one_process_and_few_images(images):
    dataset = image_folder_dataset(images, "train")
    args = argparse.Namespace(aug_repeats=3, batch_size=128, workers=0, pin_mem=False, seed=0)
    loader = train_loader(dataset, args, DistContext(), even=True)
    assert loader.batch_size == 8 and len(loader) == 1  # a whole epoch of 8 samples, not rounded to nothing
    indices = list(loader.sampler)
    assert len(indices) == 8 and max(indices.count(i) for i in set(indices)) <= 3
    odd = ImageDataset(dataset.samples[:7], dataset.classes, "seven")
    assert train_loader(odd, args, DistContext(), even=True).batch_size == 6  # Mixup pairs images
    assert train_loader(odd, args, DistContext(), even=False).batch_size == 7


def test_unreadable_image_is_skipped_with_one_warning(images, tmp_path, caplog):
    root = make_image_folder(tmp_path, per_class=(("train", 2),))
    (root / "train" / "circle" / "1.png").write_bytes(b"not an image")
    dataset = image_folder_dataset(root, "train")
    with caplog.at_level(logging.WARNING):
        labels = [dataset[i][1] for i in range(len(dataset)) for _ in range(2)]
    assert labels == [0, 0, 1, 1, 1, 1, 1, 1]  # the bad image's place taken by the next one
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "1.png" in warnings[0] and dataset.num_unreadable == 1
    # loader workers share the count
    dataset = image_folder_dataset(root, "train", warn=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2,
                                         collate_fn=lambda batch: [label for _, label in batch])
    assert sum(len(batch) for batch in loader) == 4 and dataset.num_unreadable == 1


def test_list_files(images, tmp_path, capsys):
    listed = tmp_path / "train.txt"
    listed.write_text("train/circle/0.png 0\n\ntrain/square/1.png 1\n")
    dataset = image_list_dataset(images, listed)
    assert dataset.num_labels == 2 and len(dataset) == 2 and dataset[1][1] == 1
    bad = tmp_path / "bad.txt"
    bad.write_text("train/circle/0.png 0\ntrain/square/1.png one\n")
    assert train(images, tmp_path, "--model", "v3d_x3d_s_224", "--train-list", str(bad), *TINY) == 2
    assert f"{bad}:2: label 'one' is not an integer" in one_error_line(capsys)
    wrong_root = tmp_path / "wrong.txt"
    wrong_root.write_text("circle/0.png 0\n")
    with pytest.raises(DatasetError, match="wrong.txt:1: .* not found"):
        image_list_dataset(images, wrong_root)


# ------------------------------------------------------------------------------------------------ bad input

def broken_folder(tmp_path, case):
    root = tmp_path / case
    if case == "empty split":
        (root / "train").mkdir(parents=True)
    elif case == "class without images":
        make_image_folder(root)
        (root / "train" / "triangle").mkdir()
        (root / "train" / "triangle" / "notes.txt").write_text("no images here")
    elif case == "val class not in train":
        make_image_folder(root)
        make_image_folder(root, per_class=(("val", 1),), classes=("triangle",))
    return root


@pytest.mark.parametrize("case, message", [
    ("missing split", r"missing split/train: split folder not found"),
    ("empty split", r"empty split/train: no class folders"),
    ("class without images", r"train/triangle: class folder holds no images"),
    ("val class not in train", r"val: class folders not in the training classes: triangle"),
])
def test_bad_data_is_one_line(case, message, tmp_path, capsys):
    assert train(broken_folder(tmp_path, case), tmp_path / "out", "--model", "v3d_x3d_s_224", *TINY) == 2
    assert re.search(message, one_error_line(capsys))
    assert not (tmp_path / "out").exists()


def test_too_few_classes_unknown_model_and_unknown_flag(images, tmp_path, capsys):
    assert train(images, tmp_path, "--model", "v3d_x3d_s_224", "--num-classes", "1", *TINY) == 2
    assert "--num-classes 1 is smaller than the 2 classes found" in one_error_line(capsys)
    for flags, message in ((["--model", "resnet50"], "invalid choice: 'resnet50' (choose from 'v3d_csn50_ir_224'"),
                           (["--model", "v3d_x3d_s_224", "--bogus"], "unrecognized arguments: --bogus")):
        with pytest.raises(SystemExit) as exit_info:
            train(images, tmp_path, *flags)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_bad_resume_files_are_one_line(images, x3d_run, tmp_path, capsys):
    text = tmp_path / "notes.pth.tar"
    text.write_text("not a checkpoint")
    weights_only = tmp_path / "weights.pth.tar"
    torch.save({"state_dict": read_checkpoint(x3d_run / "last.pth.tar")["state_dict"]}, weights_only)
    cases = [(text, "v3d_x3d_s_224", "cannot be read as a checkpoint"),
             (weights_only, "v3d_x3d_s_224", "not a training checkpoint (no epoch, optimizer)"),
             (x3d_run / "last.pth.tar", "v3d_csn50_ir_224", "a checkpoint of v3d_x3d_s_224, not of --model "
                                                            "v3d_csn50_ir_224"),
             (tmp_path / "missing.pth.tar", "v3d_x3d_s_224", "checkpoint not found")]
    for path, model, message in cases:
        assert train(images, tmp_path / "out", "--model", model, "--resume", str(path), *TINY) == 2
        assert message in one_error_line(capsys)
    assert validate_main([str(images), "--checkpoint", str(x3d_run / "last.pth.tar"), "--model",
                          "v3d_slowonly50_224"]) == 2
    assert "a checkpoint of v3d_x3d_s_224" in one_error_line(capsys)


def test_finished_checkpoints_are_never_overwritten(images, x3d_run, capsys):
    before = {p.name: p.read_bytes() for p in x3d_run.glob("*.pth.tar")}
    assert train(images, x3d_run.parent, "--model", "v3d_x3d_s_224", "--experiment", x3d_run.name, *TINY) == 2
    assert "already holds checkpoints" in one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in x3d_run.glob("*.pth.tar")} == before


def test_command_line_error_has_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "Image_Pre_Training/train.py", str(tmp_path / "nowhere"), "--model",
                           "v3d_x3d_s_224"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere' / 'train'}: split folder not found "
                                                f"(expected {tmp_path / 'nowhere' / 'train'}/<class>/<image>)"]
