"""Command lines of stage 1: ``Image_Pre_Training/train.py`` and ``validate.py``.

The training flags are timm's (as the seed's timm 0.5.0 fork had them, with its additions), so the seed's scripts
run unchanged. Errors in the input end the run with one ``error: ...`` line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional

from ..checkpoint import CheckpointError
from ..data.images import DatasetError
from ..data.video import AnnotationError
from ..models.image import IMAGE_MODELS
from .distributed import DistContext, init_distributed, shutdown_distributed
from .image_train import AMP_DTYPES, TrainingError, UsageError, evaluate, train
from .logs import print_error, setup_logging

MODELS = sorted(IMAGE_MODELS)
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "plateau")
# What a user can get wrong; anything else is a bug and keeps its traceback.
INPUT_ERRORS = (UsageError, DatasetError, AnnotationError, CheckpointError, FileNotFoundError, TrainingError)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("data", metavar="DATA", nargs="?", help="dataset root: DATA/<split>/<class>/<image>, or the "
                       "prefix of the paths in --train-list / --val-list")
    group.add_argument("--data-dir", default=None, metavar="DATA", help="the same as DATA (timm >= 0.6's spelling)")
    group.add_argument("--val-split", default="val", help="validation folder under DATA (default: val)")
    group.add_argument("--val-list", default=None, metavar="FILE",
                       help="validation images as 'relative/path label' lines instead of a folder")
    group.add_argument("--num-classes", type=int, default=None,
                       help="classifier outputs (default: the classes found; for evaluation: the checkpoint's)")
    group.add_argument("--img-size", type=int, default=None, help="image size (default: the model's, 224)")
    group.add_argument("--crop-pct", type=float, default=None,
                       help="validation centre crop fraction: resize to size / crop-pct, crop size "
                            "(default: 0.875, what the seed's timm 0.5 resolved for these models)")
    group.add_argument("--interpolation", default=None, help="validation resize interpolation (default: bicubic)")
    group.add_argument("-j", "--workers", type=int, default=4, help="data-loading processes per process")
    group.add_argument("--pin-mem", action="store_true", help="pinned host memory for faster copies to the GPU")


def _add_device_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("device")
    group.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    group.add_argument("--amp", action="store_true", help="mixed precision (torch.autocast)")
    group.add_argument("--amp-dtype", choices=sorted(AMP_DTYPES), default=None,
                       help="autocast dtype (default: float16 with a loss scaler on CUDA, bfloat16 on CPU)")
    group.add_argument("--channels-last", action="store_true",
                       help="channels-last memory layout: NHWC images, NDHWC 3D conv weights and activations")
    # torch.distributed.launch (the seed's launcher) passes it; the rank is read from the environment
    group.add_argument("--local-rank", "--local_rank", type=int, default=None, help=argparse.SUPPRESS)


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="Image_Pre_Training/train.py", allow_abbrev=False,
        description="Pre-train a 3D backbone on images (one-frame clips), with timm's recipe pieces.")
    _add_data_arguments(parser)
    data = parser.add_argument_group("training data")
    data.add_argument("--train-split", default="train", help="training folder under DATA (default: train)")
    data.add_argument("--train-list", default=None, metavar="FILE",
                      help="training images as 'relative/path label' lines instead of a folder")
    data.add_argument("-b", "--batch-size", type=int, default=128, help="training batch per process")
    data.add_argument("--validation-batch-size", type=int, default=None, help="default: --batch-size")

    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, choices=MODELS, metavar="NAME",
                       help=f"one of {', '.join(MODELS)}")
    model.add_argument("--drop", type=float, default=0.0, help="dropout before the classifier")
    model.add_argument("--drop-path", type=float, default=0.0, help="stochastic depth rate of the last block")
    model.add_argument("--initial-checkpoint", default=None, metavar="FILE",
                       help="start from these weights (non-strict: keys whose shape differs are skipped)")
    model.add_argument("--pretrained2d", action="store_true",
                       help="the original's flag; no effect here (no hosted 2D weights)")
    model.add_argument("--pretrain-dataset", default="k400", help="the original's flag; no effect here")

    opt = parser.add_argument_group("optimizer")
    opt.add_argument("--opt", default="sgd", help="timm optimizer name: sgd, adamw, lamb, ... (default: sgd)")
    opt.add_argument("--opt-eps", type=float, default=None, help="optimizer epsilon (default: the optimizer's)")
    opt.add_argument("--opt-betas", type=float, nargs="+", default=None, help="optimizer betas")
    opt.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    opt.add_argument("--weight-decay", type=float, default=2e-5, help="not applied to biases and 1-D parameters")
    opt.add_argument("--lr", type=float, default=0.05, help="learning rate, used as given (no batch scaling)")

    sched = parser.add_argument_group("schedule")
    sched.add_argument("--sched", choices=SCHEDULERS, default="cosine")
    sched.add_argument("--epochs", type=int, default=300)
    sched.add_argument("--warmup-epochs", type=int, default=3, help="linear warm-up from --warmup-lr")
    sched.add_argument("--warmup-lr", type=float, default=1e-4)
    sched.add_argument("--min-lr", type=float, default=1e-6, help="lower bound of the cosine and poly schedules")
    sched.add_argument("--cooldown-epochs", type=int, default=0, help="epochs at --min-lr after the schedule")
    sched.add_argument("--lr-cycle-decay", type=float, default=0.5, help="LR factor per cycle (cosine, tanh, poly)")
    sched.add_argument("--decay-epochs", type=float, default=100, help="step schedule: epochs between decays")
    sched.add_argument("--decay-rate", type=float, default=0.1, help="step / multistep / plateau LR factor")
    sched.add_argument("--step-by-iteration", action="store_true",
                       help="update the LR every optimizer step (default: once per epoch)")

    aug = parser.add_argument_group("augmentation and loss")
    aug.add_argument("--scale", type=float, nargs=2, default=(0.08, 1.0), help="RandomResizedCrop area range")
    aug.add_argument("--ratio", type=float, nargs=2, default=(3 / 4, 4 / 3), help="RandomResizedCrop aspect range")
    aug.add_argument("--hflip", type=float, default=0.5, help="horizontal flip probability")
    aug.add_argument("--color-jitter", type=float, default=0.4, help="colour jitter strength (off with --aa)")
    aug.add_argument("--aa", default=None, help="timm auto-augment policy, e.g. rand-m7-mstd0.5-inc1")
    aug.add_argument("--train-interpolation", default="random", help="training resize interpolation")
    aug.add_argument("--reprob", type=float, default=0.0, help="random erasing probability")
    aug.add_argument("--remode", default="pixel", help="random erasing fill: const, rand or pixel")
    aug.add_argument("--aug-repeats", type=int, default=0,
                     help="repeated augmentations of each image per epoch (timm RepeatAugSampler); 0: off")
    aug.add_argument("--mixup", type=float, default=0.0, help="Mixup alpha; 0: off")
    aug.add_argument("--cutmix", type=float, default=0.0, help="CutMix alpha; 0: off")
    aug.add_argument("--mixup-prob", type=float, default=1.0, help="probability of mixing a batch")
    aug.add_argument("--mixup-switch-prob", type=float, default=0.5, help="probability of CutMix when both are on")
    aug.add_argument("--mixup-mode", choices=("batch", "pair", "elem"), default="batch")
    aug.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    aug.add_argument("--bce-loss", action="store_true", help="binary cross-entropy (no target threshold)")

    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--native-amp", action="store_true", help="the same as --amp (native AMP is the only kind)")
    run.add_argument("--dist-bn", choices=("reduce", "broadcast", ""), default="reduce",
                     help="BN statistics across processes after each epoch: average (default), copy rank 0's, or "
                          "leave them")
    run.add_argument("--log-interval", type=int, default=50, help="batches between loss updates on the bar")
    run.add_argument("--checkpoint-hist", type=int, default=10, help="epoch checkpoints kept (the best by top-1)")
    run.add_argument("--output", default="output/train", help="runs go to OUTPUT/EXPERIMENT")
    run.add_argument("--experiment", default="",
                     help="run folder name (default: the --resume file's folder, else date-model-size)")
    run.add_argument("--resume", default="", metavar="CKPT",
                     help="continue a run: weights, optimizer, loss scaler and epoch (the LR schedule follows this "
                          "run's flags)")
    run.add_argument("--eval", action="store_true", help="only evaluate the --resume checkpoint on the val split")

    wandb = parser.add_argument_group("wandb (optional; needs the wandb package)")
    wandb.add_argument("--log-wandb", action="store_true", help="log per-epoch metrics to wandb")
    wandb.add_argument("--project", default="sts3d-image-pretraining", help="wandb project")
    wandb.add_argument("--wandb-entity", default=None, help="wandb entity (user or team; default: yours)")
    wandb.add_argument("--wandb-id", default=None, help="continue this wandb run (default: the --resume one's)")
    wandb.add_argument("--wandb-offline", action="store_true", help="log offline (wandb sync later)")
    wandb.add_argument("--log-image", action="store_true", help="also log the first training batch of each epoch")
    _add_device_arguments(parser)
    return parser


def validate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="Image_Pre_Training/validate.py", allow_abbrev=False,
        description="Evaluate an image-pretrained checkpoint; prints top-1, top-5 and loss.")
    _add_data_arguments(parser)
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="a .pth.tar of train.py or the original")
    parser.add_argument("--model", choices=MODELS, default=None, metavar="NAME",
                        help="default: the checkpoint's arch")
    parser.add_argument("-b", "--batch-size", type=int, default=256)
    _add_device_arguments(parser)
    return parser


def run(function: Callable[[argparse.Namespace, DistContext], object], args: argparse.Namespace) -> int:
    """Run ``function`` in this process's place in the process group; input errors become one line."""
    try:
        ctx = init_distributed(args.device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    setup_logging(ctx.primary)
    try:
        function(args, ctx)
    except INPUT_ERRORS as error:
        return print_error(error)
    finally:
        shutdown_distributed()
    return 0


def parse(parser: argparse.ArgumentParser, argv: Optional[list[str]]) -> argparse.Namespace:
    """The command line, with DATA from the positional argument or ``--data-dir``. Abbreviated flags are refused
    (``allow_abbrev=False``), so timm's ``--pretrained`` is an error, not a silent ``--pretrained2d``."""
    args = parser.parse_args(argv)
    if args.data is not None and args.data_dir is not None and args.data != args.data_dir:
        parser.error(f"DATA given twice: {args.data} and --data-dir {args.data_dir}")
    args.data = args.data if args.data is not None else args.data_dir
    if args.data is None:
        parser.error("the dataset root is required: DATA or --data-dir")
    return args


def train_main(argv: Optional[list[str]] = None) -> int:
    args = parse(train_parser(), argv)
    if args.eval:
        if not args.resume:
            print("error: --eval evaluates the --resume checkpoint; pass --resume CKPT", file=sys.stderr)
            return 2
        args = argparse.Namespace(**vars(args), checkpoint=args.resume)
        args.batch_size = args.validation_batch_size or args.batch_size
        return run(evaluate, args)
    return run(train, args)


def validate_main(argv: Optional[list[str]] = None) -> int:
    return run(evaluate, parse(validate_parser(), argv))
