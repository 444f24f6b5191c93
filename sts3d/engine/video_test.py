"""Multi-view testing of a fine-tuned recognizer (``tools/test.py``), and the validation pass of training.

Each video is decoded once; all its views (e.g. 10 clips x 3 crops) go through the network together, in chunks of
``model.test_cfg.max_testing_views`` where the config sets it, and their scores are averaged as
``average_clips`` says. With several processes each takes every ``world_size``-th video (no padding duplicates)
and the scores are gathered back into dataset order, so every video counts exactly once.
"""
from __future__ import annotations

import json
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader

from ..checkpoint import CheckpointError, extract_state_dict, load_state, read_checkpoint
from ..data.pipeline import build_dataset, normalizes_on_device, num_segments
from ..data.video import VideoDataset, normalize_clips
from ..models.builder import build_recognizer
from ..models.fuse import fuse_conv_bn
from ..models.recognizer import Recognizer3D, average_clips
from .distributed import DistContext, ShardSampler
from .logs import logger, progress_bar
from .metrics import mean_class_accuracy, top_k_accuracy

METRICS = ("top_k_accuracy", "mean_class_accuracy")


def views_per_forward(device: torch.device, max_views: Optional[int], views: int) -> int:
    """How many of a video's views go through the network at once: ``max_views`` (all when ``None``) on a GPU;
    one on a CPU, where that is 2-2.6x faster than batching them (``bench/multiview_test.py``: large batches leave
    the caches and fault in fresh memory at every layer)."""
    return 1 if device.type == "cpu" else max_views or views


@torch.no_grad()
def video_scores(model: Recognizer3D, views: torch.Tensor, max_views: Optional[int], average: str,
                 autocast_dtype: Optional[torch.dtype] = None, chunk: Optional[int] = None) -> torch.Tensor:
    """Scores ``(K,)`` of one video from its views ``(V, C, T, H, W)`` (or ``(V * S, C, 1, H, W)`` one-frame
    segments when the model folds ``S`` segments; uint8 views are normalised on the model's device), run
    ``chunk`` views at a time (default: :func:`views_per_forward`)."""
    x = views.unsqueeze(0)
    if model.num_segments is not None:
        x = model.fold_segments(x)
    x = x[0]
    device = next(model.parameters()).device
    chunk = chunk or views_per_forward(device, max_views, len(x))
    logits = []
    for start in range(0, len(x), chunk):
        part = normalize_clips(x[start:start + chunk].to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits.append(model.cls_head(model.backbone(part)).float())
    return average_clips(torch.cat(logits)[None], average)[0].cpu()


def _gather_in_order(local: list[tuple[int, Optional[list[float]]]], total: int) -> list[Optional[list[float]]]:
    if dist.is_initialized() and dist.get_world_size() > 1:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
        local = [item for part in parts for item in part]
    ordered: list[Optional[list[float]]] = [None] * total
    for index, scores in local:
        ordered[index] = scores
    return ordered


def predict(model: Recognizer3D, dataset: VideoDataset, ctx: DistContext, max_views: Optional[int] = None,
            average: str = "prob", workers: int = 2, autocast_dtype: Optional[torch.dtype] = None,
            description: str = "test") -> list[Optional[list[float]]]:
    """Per-video scores in dataset order, on every process; ``None`` for a video that could not be decoded (it
    was skipped with a warning)."""
    model.eval()
    sampler = ShardSampler(dataset, ctx)
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=workers,
                        pin_memory=ctx.device.type == "cuda")
    local = []
    bar = progress_bar(len(dataset), description, ctx.primary, unit="video")
    for index, (views, _, skipped) in zip(sampler, loader):
        if int(skipped) or views.numel() == 0:
            local.append((index, None))
        else:
            local.append((index, video_scores(model, views[0], max_views, average, autocast_dtype).tolist()))
        bar.update(ctx.world_size)
    bar.close()
    return _gather_in_order(local, len(dataset))


def evaluation_settings(eval_config: Mapping[str, Any], source: str = "eval_config") -> tuple[tuple[str, ...],
                                                                                          tuple[int, ...]]:
    """``(metrics, topk)`` from an mmaction-style evaluation dict (``eval_config``, ``--eval-options``): ``metrics``
    (a name or a list), ``metric_options=dict(top_k_accuracy=dict(topk=(1, 5)))``, and a top-level ``topk``, which
    mmaction took with a deprecation warning. Anything else is an error naming ``source``."""
    eval_config = dict(eval_config)
    metrics = eval_config.pop("metrics", METRICS)
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for metric in metrics:
        if metric not in METRICS:
            raise ValueError(f"{source}: unknown metric {metric!r}; supported: {', '.join(METRICS)}")
    options = {name: dict(value or {}) for name, value in dict(eval_config.pop("metric_options", None) or {}).items()}
    if "topk" in eval_config:
        warnings.warn(f"{source}: a top-level topk is deprecated (as in mmaction); use "
                      "metric_options.top_k_accuracy.topk", FutureWarning)
        options.setdefault("top_k_accuracy", {})["topk"] = eval_config.pop("topk")
    if eval_config:
        raise ValueError(f"{source}: unknown evaluation setting {sorted(eval_config)[0]!r}; supported: metrics, "
                         "metric_options, topk")
    for name, settings in options.items():
        allowed = {"top_k_accuracy": {"topk"}}.get(name)
        if allowed is None and name not in METRICS:
            raise ValueError(f"{source}: metric_options for unknown metric {name!r}")
        unknown = set(settings) - (allowed or set())
        if unknown:
            raise ValueError(f"{source}: metric_options.{name} has no setting {sorted(unknown)[0]!r}")
    topk = options.get("top_k_accuracy", {}).get("topk", (1, 5))
    topk = (topk,) if isinstance(topk, int) else topk
    if not isinstance(topk, (tuple, list)) or not topk or not all(
            isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in topk):
        raise ValueError(f"{source}: topk must be a positive int or a tuple of them, got {topk!r}")
    return metrics, tuple(topk)


def evaluate_scores(scores: Sequence[Optional[Sequence[float]]], labels: Sequence[int],
                    metrics: Sequence[str] = METRICS, topk: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``top<k>_acc`` for each of ``topk`` and ``mean_class_accuracy`` (fractions) over the videos that have
    scores, in the order of ``metrics``, as mmaction named them."""
    kept = [i for i, s in enumerate(scores) if s is not None]
    if not kept:
        raise ValueError("no video of the test set could be decoded: nothing to score")
    matrix = np.asarray([scores[i] for i in kept])
    truth = [labels[i] for i in kept]
    results: dict[str, float] = {}
    for metric in metrics:
        if metric == "top_k_accuracy":
            results.update({f"top{k}_acc": acc for k, acc in zip(topk, top_k_accuracy(matrix, truth, topk))})
        elif metric == "mean_class_accuracy":
            results["mean_class_accuracy"] = mean_class_accuracy(matrix, truth)
        else:
            raise ValueError(f"unknown metric {metric!r}; supported: {', '.join(METRICS)}")
    results["num_videos"] = len(kept)
    return results


def metric_columns(results: Mapping[str, float]) -> list[tuple[str, str]]:
    """``(title, key)`` of each metric in ``results``, in order: ``top-1``, ``top-5``, ..., ``mean class accuracy``."""
    return [(f"top-{key[3:-4]}" if key != "mean_class_accuracy" else "mean class accuracy", key)
            for key in results if re.fullmatch(r"top\d+_acc", key) or key == "mean_class_accuracy"]


def format_table(results: Mapping[str, float]) -> str:
    columns = metric_columns(results)
    widths = [max(len(title), 6) for title, _ in columns]
    header = " | ".join(title.rjust(width) for (title, _), width in zip(columns, widths))
    values = " | ".join(f"{100 * results[key]:.2f}".rjust(width) for (_, key), width in zip(columns, widths))
    return f"{header}\n{'-' * len(header)}\n{values}"


def autocast_for_testing(cfg: Mapping[str, Any], device: torch.device, float32: bool = False) -> Optional[torch.dtype]:
    """The autocast dtype of testing (``None``: float32). The seed's recognizer ran every test forward inside
    ``torch.cuda.amp.autocast()``, whatever the config said, so on a GPU its scores are fp16 autocast ones (bf16
    where the config says ``bf16 = True``); on a CPU that autocast did nothing, and testing is float32.
    ``float32`` turns autocast off."""
    if float32 or device.type != "cuda":
        return None
    return torch.bfloat16 if cfg.get("bf16") else torch.float16


def load_for_test(model: Recognizer3D, path: str) -> None:
    """Load a fine-tuned checkpoint (ours, or an original released one); any missing or misfitting weight is an
    error, since testing a partly random network says nothing."""
    report = load_state(model, extract_state_dict(read_checkpoint(path)), path)
    missing = [k for k in report.missing if not k.endswith("num_batches_tracked")]
    if missing or report.mismatched:
        raise CheckpointError(f"{path} does not fit the config's model: {len(missing)} weights missing, "
                              f"{len(report.mismatched)} of another shape (first: "
                              f"{(missing + [m[0] for m in report.mismatched])[0]})\n{report.summary()}")
    if report.unexpected:
        logger.warning("%s: %d checkpoint keys the model does not have were ignored", path, len(report.unexpected))


@dataclass
class TestOptions:
    checkpoint: str
    metrics: Sequence[str] = METRICS
    out: Optional[str] = None
    average_clips: Optional[str] = None
    fuse_conv_bn: bool = False
    topk: Sequence[int] = (1, 5)
    float32: bool = False  # no autocast on a GPU (the seed tested in fp16 autocast there)


OUT_FORMATS = {".json": "json", ".pkl": "pickle", ".pickle": "pickle", ".yaml": "yaml", ".yml": "yaml"}


def out_format(path: str) -> str:
    """The format ``--out`` is written in, by its extension, as mmcv's ``dump`` chose it."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUT_FORMATS:
        raise ValueError(f"--out {path}: the extension must be one of {', '.join(OUT_FORMATS)}")
    return OUT_FORMATS[suffix]


def write_scores(path: Path, scores: Sequence[Optional[Sequence[float]]]) -> None:
    """Per-video scores, atomically: JSON / YAML lists, or (``.pkl``) the list of float32 arrays mmaction's
    ``--out`` held; ``None`` for a video that could not be decoded."""
    kind = out_format(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if kind == "pickle":
        with open(tmp, "wb") as file:
            pickle.dump([None if s is None else np.asarray(s, dtype=np.float32) for s in scores], file)
    elif kind == "yaml":
        tmp.write_text(yaml.safe_dump([None if s is None else list(s) for s in scores]))
    else:
        tmp.write_text(json.dumps(scores))
    tmp.replace(path)


class _ScoresUnpickler(pickle.Unpickler):
    """Unpickles a list of NumPy arrays (mmaction's ``--out`` .pkl) and nothing else that could run code."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a scores file")
        return super().find_class(module, name)


def read_scores(path: Path) -> list[Optional[list[float]]]:
    """Per-video scores from a ``--out`` file (ours or mmaction's): JSON, YAML or a pickled list of arrays."""
    kind = out_format(str(path))
    try:
        if kind == "pickle":
            with open(path, "rb") as file:
                loaded = _ScoresUnpickler(file).load()
        else:
            loaded = yaml.safe_load(path.read_text()) if kind == "yaml" else json.loads(path.read_text())
    except (OSError, ValueError, pickle.UnpicklingError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read scores ({error})") from None
    if not isinstance(loaded, list):
        raise ValueError(f"{path}: expected a list of per-video scores, got {type(loaded).__name__}")
    return [None if s is None else np.asarray(s, dtype=np.float64).reshape(-1).tolist() for s in loaded]


def run_test(cfg: Mapping[str, Any], opts: TestOptions, ctx: DistContext) -> dict[str, Any]:
    """Test ``opts.checkpoint`` on ``data.test``; the primary process prints the table and writes ``--out``."""
    if opts.out:
        out_format(opts.out)  # a bad extension fails now, not after the test
    num_classes = cfg["model"]["cls_head"]["num_classes"]
    data = cfg["data"]
    dataset = build_dataset(data["test"], "test", num_classes, data.get("decoder", "decord"),
                            normalize=not normalizes_on_device(data))
    model = build_recognizer({**cfg["model"], "num_segments": num_segments(data["test"]["pipeline"])})
    load_for_test(model, opts.checkpoint)
    if opts.fuse_conv_bn:
        fuse_conv_bn(model)
    model.to(ctx.device)
    test_cfg = cfg["model"].get("test_cfg") or {}
    average = opts.average_clips or test_cfg.get("average_clips", "prob")
    if average not in ("prob", "score"):
        raise ValueError(f"average_clips must be 'prob' or 'score' for testing, got {average!r}")
    workers = data.get("test_dataloader", {}).get("workers_per_gpu", data.get("workers_per_gpu", 2))
    scores = predict(model, dataset, ctx, test_cfg.get("max_testing_views"), average, workers,
                     autocast_for_testing(cfg, ctx.device, opts.float32))
    labels = [r.label for r in dataset.records]
    missing = [str(dataset.records[i].path) for i, s in enumerate(scores) if s is None]
    results = evaluate_scores(scores, labels, opts.metrics, opts.topk)
    if ctx.primary:
        if missing:
            warnings.warn(f"{len(missing)} undecodable videos left out of the metrics (null in --out): "
                          f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}", RuntimeWarning)
        if opts.out:
            write_scores(Path(opts.out), scores)
            logger.info("per-video scores (%s, dataset order) written to %s", average, opts.out)
        print(f"{results['num_videos']} of {len(scores)} videos scored, average_clips={average}\n"
              f"{format_table(results)}", flush=True)
    return {**results, "scores": scores, "skipped": missing}
