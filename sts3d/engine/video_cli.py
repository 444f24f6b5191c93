"""Command lines of ``Spatiotemporal_Finetuning/tools/train.py`` and ``test.py``: the seed's flags.

``--launcher pytorch`` (what ``dist_train.sh`` / ``dist_test.sh`` pass) reads ``torchrun``'s environment;
``--launcher slurm`` derives the same variables from ``srun``'s; ``none`` is one plain process.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional

from ..checkpoint import CheckpointError, publish_checkpoint
from ..config import ConfigError, apply_options, format_config, load_config, merge
from ..data.pipeline import PipelineError
from ..data.video import AnnotationError, read_annotations
from .distributed import DistContext, init_distributed, shutdown_distributed
from .fusion import fuse_scores
from .logs import print_error, setup_logging
from .video_test import (METRICS, TestOptions, evaluate_scores, evaluation_settings, format_table, read_scores,
                         run_test)
from .video_train import EVAL_HOOK_KEYS, TrainOptions, TrainingError, train

# input errors: one line on stderr and exit status 2, no traceback
INPUT_ERRORS = (ConfigError, PipelineError, AnnotationError, CheckpointError, FileNotFoundError, ValueError,
                KeyError, TrainingError)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config settings: a.b.c=value (Python literals where they parse, strings "
                             "otherwise; the later of two equal keys wins)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                        help="how the processes were started (dist_*.sh pass 'pytorch')")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fine-tune a recognizer on videos (seed-style config).")
    parser.add_argument("config", help="config file (.py)")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default: work_dirs/<config name>)")
    parser.add_argument("--resume-from", help="checkpoint to resume from (weights, optimizer, epoch)")
    parser.add_argument("--validate", action="store_true", help="validate every evaluation.interval epochs")
    parser.add_argument("--test-last", action="store_true", help="test the last checkpoint when training ends")
    parser.add_argument("--test-best", action="store_true", help="test the best checkpoint when training ends")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: drawn, shared by all ranks)")
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms where they exist")
    # the seed's single-process multi-GPU flags: here one process drives one GPU, and dist_train.sh starts them
    parser.add_argument("--gpus", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--gpu-ids", type=int, nargs="+", default=None, help=argparse.SUPPRESS)
    _common(parser)
    return parser


def test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Test a fine-tuned recognizer with multiple views per video.")
    parser.add_argument("config", help="config file (.py)")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--out", help="write per-video scores (dataset order) here: .json, .pkl or .yaml")
    parser.add_argument("--eval", nargs="+", choices=METRICS, default=None,
                        help="metrics to report (default: the config's eval_config.metrics, else both)")
    parser.add_argument("--eval-options", nargs="+", default=None, metavar="KEY=VALUE",
                        help="evaluation settings over the config's eval_config, as mmaction's: "
                             "metric_options.top_k_accuracy.topk='(1,3,5)'")
    parser.add_argument("--options", nargs="+", default=None, help=argparse.SUPPRESS)  # mmaction's old name
    parser.add_argument("--average-clips", choices=["prob", "score"], default=None,
                        help="average softmax probabilities or raw scores over views (default: the config's)")
    parser.add_argument("--fuse-conv-bn", action="store_true", help="fold BN into convs (slightly faster)")
    parser.add_argument("--float32", action="store_true",
                        help="score in float32 on a GPU (the seed's test forwards ran in fp16 autocast there)")
    parser.add_argument("--gpu-collect", action="store_true", help=argparse.SUPPRESS)  # seed flag; gathering is
    parser.add_argument("--tmpdir", help=argparse.SUPPRESS)                            # always in memory here
    _common(parser)
    return parser


def slurm_environment(environ: dict) -> dict:
    """``torchrun``-style variables from ``srun``'s (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, the
    first host of ``SLURM_NODELIST``)."""
    env = {"RANK": environ["SLURM_PROCID"], "WORLD_SIZE": environ["SLURM_NTASKS"],
           "LOCAL_RANK": environ["SLURM_LOCALID"], "MASTER_PORT": environ.get("PORT", environ.get("MASTER_PORT",
                                                                                                     "29500"))}
    if "MASTER_ADDR" not in environ:
        hosts = subprocess.run(["scontrol", "show", "hostnames", environ["SLURM_NODELIST"]], check=True,
                               capture_output=True, text=True).stdout.split()
        env["MASTER_ADDR"] = hosts[0]
    return env


def _run(function: Callable[[DistContext], object], args: argparse.Namespace) -> int:
    if args.launcher == "slurm":
        os.environ.update(slurm_environment(dict(os.environ)))
    try:
        ctx = init_distributed(args.device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    setup_logging(ctx.primary)
    try:
        with warnings.catch_warnings():
            # the loader logs each skipped video (console and the run's log): once, without a Python warning too
            warnings.filterwarnings("ignore", message="skipping unreadable video", category=RuntimeWarning)
            function(ctx)
    except INPUT_ERRORS as error:
        return print_error(error)
    finally:
        shutdown_distributed()
    return 0


def train_main(argv: Optional[list[str]] = None) -> int:
    args = train_parser().parse_args(argv)
    if args.gpus is not None or args.gpu_ids is not None:
        print("warning: --gpus / --gpu-ids are ignored: each process uses one GPU; for several, run "
              "tools/dist_train.sh CONFIG GPUS", file=sys.stderr)

    def job(ctx: DistContext) -> None:
        cfg = load_config(args.config, args.cfg_options)
        opts = TrainOptions(args.work_dir, args.validate, args.resume_from, args.seed, args.deterministic,
                            args.test_last, args.test_best)
        train(cfg, opts, ctx)

    return _run(job, args)


def _metric_settings(base: dict, args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``(metrics, topk)``: ``--eval`` and then ``--eval-options`` merged over ``base``, as mmaction's tools did."""
    settings = merge(base, {"metrics": args.eval} if args.eval else {})
    settings = apply_options(settings, args.eval_options or (), "--eval-options")
    return evaluation_settings(settings, "--eval-options" if args.eval_options else "the config's evaluation")


def eval_metric_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Metrics of a test.py --out file (per-video scores) against the "
                                                 "config's test list.", allow_abbrev=False)
    parser.add_argument("config", help="config file (.py); its data.test.ann_file holds the labels")
    parser.add_argument("results", type=Path, help="per-video scores: .json, .pkl or .yaml (ours or mmaction's)")
    parser.add_argument("--eval", nargs="+", choices=METRICS, default=None,
                        help="metrics to report (default: the config's evaluation.metrics, else both)")
    parser.add_argument("--eval-options", nargs="+", default=None, metavar="KEY=VALUE",
                        help="evaluation settings over the config's evaluation dict, e.g. topk='(1,3,5)'")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config settings")
    return parser


def eval_metric_main(argv: Optional[list[str]] = None) -> int:
    """``tools/analysis/eval_metric.py``: mmaction's evaluation of a saved result file, without a model."""
    args = eval_metric_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options)
        # mmaction's eval_metric.py took the evaluation dict without its hook's keys
        evaluation = {k: v for k, v in dict(cfg.get("evaluation") or {}).items() if k not in EVAL_HOOK_KEYS}
        metrics, topk = _metric_settings(evaluation, args)
        labels = [r.label for r in read_annotations(cfg["data"]["test"]["ann_file"])]
        scores = read_scores(args.results)
        if len(scores) != len(labels):
            raise ValueError(f"{args.results} has scores of {len(scores)} videos, "
                             f"{cfg['data']['test']['ann_file']} lists {len(labels)}")
        if all(s is None for s in scores):  # say which file, rather than evaluate_scores' generic error
            raise ValueError(f"{args.results} has no scores: every entry is null (no video could be decoded)")
        results = evaluate_scores(scores, labels, metrics, topk)
    except INPUT_ERRORS as error:
        return print_error(error)
    print(f"{results['num_videos']} of {len(scores)} videos scored\n{format_table(results)}")
    return 0


def report_accuracy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fuse several models' per-video scores (a weighted sum) and "
                                                 "report the accuracy of the fused scores.", allow_abbrev=False)
    parser.add_argument("--scores", nargs="+", type=Path, required=True,
                        help="test.py --out files of the models (.json, .pkl or .yaml, ours or mmaction's), in the "
                             "order of --datalist")
    parser.add_argument("--coefficients", nargs="+", type=float, default=None,
                        help="weight of each score file (default: 1 each)")
    parser.add_argument("--datalist", type=Path, required=True,
                        help="the test list: one video a line, its label the last field")
    parser.add_argument("--apply-softmax", action="store_true", help="softmax each model's scores before fusing")
    return parser


def report_accuracy_main(argv: Optional[list[str]] = None) -> int:
    """``tools/analysis/report_accuracy.py``: mmaction's late fusion of score files, with its printout."""
    args = report_accuracy_parser().parse_args(argv)
    coefficients = args.coefficients if args.coefficients is not None else [1.0] * len(args.scores)
    try:
        records = read_annotations(args.datalist)
        fused = fuse_scores([read_scores(path) for path in args.scores], coefficients, args.apply_softmax,
                            [str(path) for path in args.scores])
        if len(fused) != len(records):
            raise ValueError(f"the score files have scores of {len(fused)} videos, {args.datalist} lists "
                             f"{len(records)}")
        classes = next((len(s) for s in fused if s is not None), None)
        if classes is None:
            raise ValueError("no video has scores in every score file")
        for record in records:
            if record.label >= classes:
                raise ValueError(f"{record.source}: label {record.label} is outside the {classes} classes scored")
        results = evaluate_scores(fused, [r.label for r in records])
    except INPUT_ERRORS as error:
        return print_error(error)
    print(f"{results['num_videos']} of {len(fused)} videos scored")
    print(f"Mean Class Accuracy: {results['mean_class_accuracy']:.04f}")
    print(f"Top 1 Accuracy: {results['top1_acc']:.04f}")
    print(f"Top 5 Accuracy: {results['top5_acc']:.04f}")
    return 0


def publish_model_main(argv: Optional[list[str]] = None) -> int:
    """``tools/publish_model.py``: a checkpoint without its optimizer state, named with its hash, as mmaction's."""
    parser = argparse.ArgumentParser(description="Drop a checkpoint's optimizer state and save it as "
                                                 "OUT_FILE-<first 8 hex digits of its sha256>.pth.", allow_abbrev=False)
    parser.add_argument("in_file", help="checkpoint to publish (epoch_<n>.pth, best_*.pth, ...)")
    parser.add_argument("out_file", help="output name; a trailing .pth makes way for -<sha256[:8]>.pth")
    args = parser.parse_args(argv)
    try:
        final = publish_checkpoint(args.in_file, args.out_file)
    except (CheckpointError, OSError) as error:  # OSError: a missing input, an unwritable output folder
        return print_error(error)
    print(final)
    return 0


def print_config_main(argv: Optional[list[str]] = None) -> int:
    """``tools/analysis/print_config.py``: the config as training resolves it (``_base_`` files merged, overrides
    applied), printed as the Python file a run writes into its work dir, so the output can be saved and used."""
    parser = argparse.ArgumentParser(description="Print the resolved config (inheritance and overrides applied).",
                                     allow_abbrev=False)
    parser.add_argument("config", help="config file (.py)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config settings")
    parser.add_argument("--options", nargs="+", default=None, help=argparse.SUPPRESS)  # mmaction's name for them
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, [*(args.options or ()), *args.cfg_options])
    except ConfigError as error:
        return print_error(error)
    print(format_config(cfg), end="")
    return 0


def test_main(argv: Optional[list[str]] = None) -> int:
    parser = test_parser()
    args = parser.parse_args(argv)
    if args.options is not None:
        if args.eval_options is not None:
            parser.error("--options and --eval-options cannot both be given (--options is the old name)")
        print("warning: --options is deprecated in favor of --eval-options", file=sys.stderr)
        args.eval_options = args.options

    def job(ctx: DistContext) -> None:
        cfg = load_config(args.config, args.cfg_options)
        metrics, topk = _metric_settings(dict(cfg.get("eval_config") or {}), args)
        run_test(cfg, TestOptions(args.checkpoint, metrics, args.out, args.average_clips, args.fuse_conv_bn, topk,
                                  args.float32), ctx)

    return _run(job, args)
