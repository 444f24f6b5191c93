"""What a fine-tuning run records in its work dir: a text log, a json log (one dict per line, as mmcv writes), a PNG
of the curves, and optionally TensorBoard and wandb (the seed's ``log_config.hooks``).

Only the primary process writes. TensorBoard and wandb are optional: a missing package is one warning.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .logs import logger
from .video_test import metric_columns

HOOKS = ("TextLoggerHook", "TensorboardLoggerHook", "WandbLoggerHook")
CURVES = "curves.png"


def _rounded(value: Any) -> Any:
    """mmcv's ``TextLoggerHook._round_float``: floats (also in lists) to 5 decimals, anything else as it is."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return round(value, 5) if isinstance(value, float) else value


def timestamp() -> str:
    return time.strftime("%Y%m%d_%H%M%S", time.localtime())


class RunLog:
    """``<stamp>.log`` (everything the ``sts3d`` logger says, loader workers' skip warnings included),
    ``<stamp>.log.json`` (train rows every ``interval`` iterations and val rows), ``curves.png``."""

    def __init__(self, work_dir: Path, hooks: Sequence[Mapping[str, Any]], config: Mapping[str, Any],
                 stamp: Optional[str] = None) -> None:
        # checked before any file or handler exists, so a bad hook leaves nothing behind
        if not isinstance(hooks, (list, tuple)) or not all(isinstance(hook, Mapping) for hook in hooks):
            raise ValueError(f"log_config.hooks must be a list of dict(type=...), got {hooks!r} (--cfg-options "
                             "reads dict(...) as a string; set the hooks in a config file)")
        for hook in hooks:
            if hook.get("type") not in HOOKS:
                raise ValueError(f"log_config.hooks: unknown hook {hook.get('type')!r}; supported: {', '.join(HOOKS)}")
        self.work_dir = Path(work_dir)
        stamp = stamp or timestamp()
        self.text_path = self.work_dir / f"{stamp}.log"
        self.json_path = self.work_dir / f"{stamp}.log.json"
        self.rows: list[dict[str, Any]] = []
        self._handler = logging.FileHandler(self.text_path)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(self._handler)  # root: the data loader's warnings land here too
        self._tensorboard = None
        self._wandb = None
        for hook in hooks:
            kind = hook["type"]
            if kind == "TensorboardLoggerHook":
                self._tensorboard = self._open_tensorboard(hook)
            elif kind == "WandbLoggerHook":
                self._wandb = self._open_wandb(hook, config)

    def _open_tensorboard(self, hook: Mapping[str, Any]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("TensorboardLoggerHook: tensorboard is not installed (pip install tensorboard); skipped")
            return None
        return SummaryWriter(hook.get("log_dir") or str(self.work_dir / "tf_logs"))

    def _open_wandb(self, hook: Mapping[str, Any], config: Mapping[str, Any]):
        try:
            import wandb
        except ImportError:
            logger.warning("WandbLoggerHook: wandb is not installed (pip install wandb); skipped")
            return None
        init = dict(hook.get("init_kwargs") or {})
        init.setdefault("dir", str(self.work_dir))
        return wandb.init(config=dict(config), **init)

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        """The json log's first line, as mmcv's TextLoggerHook began it: the run's ``meta`` (no ``epoch``, so
        mmaction's ``analyze_logs.py`` skips it)."""
        with open(self.json_path, "a") as file:
            file.write(json.dumps(_rounded(dict(meta))) + "\n")

    def add(self, row: Mapping[str, Any]) -> None:
        """Append a row (``mode`` 'train', 'val' or 'test', ``epoch``, ``iter``, metrics) to the json log and the
        curves. The file holds floats rounded to 5 decimals, as mmcv wrote them; the curves use the exact values."""
        row = dict(row)
        self.rows.append(row)
        with open(self.json_path, "a") as file:
            file.write(json.dumps(_rounded(row)) + "\n")
        step = int(row.get("global_iter", 0))
        scalars = {f"{row['mode']}/{k}": v for k, v in row.items()
                   if isinstance(v, (int, float)) and k not in ("epoch", "iter", "global_iter")}
        if self._tensorboard is not None:
            for key, value in scalars.items():
                self._tensorboard.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        if row["mode"] == "val" or len(self.rows) % 10 == 0:
            self.plot()

    def plot(self) -> None:
        # a bare Figure renders with Agg and leaves pyplot's global state alone
        from matplotlib.figure import Figure

        train = [r for r in self.rows if r["mode"] == "train"]
        val = [r for r in self.rows if r["mode"] == "val"]
        figure = Figure(figsize=(12, 3.6))
        loss_axis, lr_axis, acc_axis = figure.subplots(1, 3)
        loss_axis.plot([r["epoch_float"] for r in train], [r["loss"] for r in train], marker=".")
        loss_axis.set(xlabel="epoch", ylabel="loss", title="training loss")
        lr_axis.plot([r["epoch_float"] for r in train], [r["lr"] for r in train], color="tab:orange")
        lr_axis.set(xlabel="epoch", ylabel="lr", title="learning rate")
        # the metrics evaluation.metrics and its topk asked for
        for label, key in metric_columns(val[-1] if val else {}):
            acc_axis.plot([r["epoch"] for r in val], [100 * r[key] for r in val], marker="o", label=label)
        acc_axis.set(xlabel="epoch", ylabel="%", title="validation (1 clip, centre crop)")
        if val:
            acc_axis.legend()
        for axis in (loss_axis, lr_axis, acc_axis):
            axis.grid(alpha=0.3)
        figure.tight_layout()
        path = self.work_dir / CURVES
        tmp = path.with_name(f".tmp.{path.name}")  # keeps the .png suffix, which savefig reads the format from
        figure.savefig(tmp, dpi=100)
        tmp.replace(path)

    def close(self) -> None:
        if self.rows:
            self.plot()
        logging.getLogger().removeHandler(self._handler)
        self._handler.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()
