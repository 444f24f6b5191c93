"""Reading a fine-tuning run's json log (``<stamp>.log.json``, mmcv's TextLoggerHook format), as mmaction's
``tools/analysis/analyze_logs.py`` did: training curves of any logged key, and the time per training iteration.

Rows without ``epoch`` (the meta line, test results) are skipped. A training row holds the averages over one
logging window (``iter`` is its last iteration in the epoch); a validation row follows its epoch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np


class LogError(ValueError):
    """A json log that cannot be read or lacks what was asked for; the message names the file."""


@dataclass
class RunRows:
    """The rows of one json log with an ``epoch``, split by ``mode``."""
    path: Path
    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)

    def iters_per_epoch(self) -> int:
        """The last training ``iter`` of the first epoch (mmaction's x-axis unit)."""
        first = self.train[0]["epoch"]
        return max(int(r["iter"]) for r in self.train if r["epoch"] == first)


def load_json_log(path: Path) -> RunRows:
    """The training and validation rows of ``path``; a line that is not JSON is an error naming its line."""
    rows = RunRows(Path(path))
    if not rows.path.is_file():
        raise LogError(f"{path}: no such json log")
    for number, line in enumerate(rows.path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise LogError(f"{path}:{number}: not a JSON line ({error.msg})") from None
        if "epoch" not in row:
            continue
        {"train": rows.train, "val": rows.val}.get(row.get("mode"), []).append(row)
    if not rows.train:
        raise LogError(f"{path}: no training rows (mode 'train' with an epoch)")
    return rows


@dataclass
class Curve:
    label: str
    iters: np.ndarray  # global iteration of each point
    values: np.ndarray
    validation: bool


def key_curves(rows: RunRows, key: str, label: str) -> list[Curve]:
    """The training curve of ``key`` (one point per logging window) and, where validation rows hold it, the
    validation curve (one point at the end of each validated epoch, labelled ``'<label> (val)'``)."""
    per_epoch = rows.iters_per_epoch()
    curves = []
    for series, validation in ((rows.train, False), (rows.val, True)):
        points = [r for r in series if key in r]
        if not points:
            continue
        # a training row at its iteration within the epoch, a validation row at its epoch's end
        iters = np.array([int(r["epoch"]) * per_epoch if validation else
                          (int(r["epoch"]) - 1) * per_epoch + int(r["iter"]) for r in points])
        curves.append(Curve(f"{label} (val)" if validation else label, iters,
                            np.array([float(r[key]) for r in points]), validation))
    if not curves:
        raise LogError(f"{rows.path}: no row holds {key!r}")
    return curves


def plot_curves(logs: Sequence[RunRows], keys: Sequence[str], legend: Optional[Sequence[str]] = None,
                title: Optional[str] = None, style: Optional[str] = None, figure: Any = None) -> Any:
    """One axis with every ``key`` of every log against the global iteration; ``legend`` names each (log, key)
    pair, log-major (default ``<json log>_<key>``). Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    names = list(legend) if legend else [f"{rows.path}_{key}" for rows in logs for key in keys]
    if len(names) != len(logs) * len(keys):
        raise LogError(f"--legend has {len(names)} names for {len(logs)} logs x {len(keys)} keys")
    with plt.style.context(_style(style)):
        figure = figure or plt.figure(figsize=(8, 4.5))
        axis = figure.subplots()
        names_left = iter(names)
        for rows in logs:
            for key in keys:
                for curve in key_curves(rows, key, next(names_left)):
                    axis.plot(curve.iters, curve.values, label=curve.label, linewidth=0.5 if not curve.validation
                              else 1.0, marker="o" if curve.validation else None)
        axis.set_xlabel("iter")
        axis.legend()
        if title:
            axis.set_title(title)
    return figure


def _style(name: Optional[str]) -> str:
    """A matplotlib style for mmaction's ``--style`` (a seaborn style name, e.g. 'dark'), without seaborn."""
    import matplotlib.pyplot as plt

    for candidate in (name, f"seaborn-v0_8-{name}", f"seaborn-{name}"):
        if candidate and candidate in plt.style.available:
            return candidate
    return "default"


@dataclass
class TrainTime:
    slowest_epoch: int
    slowest: float
    fastest_epoch: int
    fastest: float
    std_over_epochs: float
    mean_iter_time: float

    def report(self) -> str:
        return (f"slowest epoch {self.slowest_epoch}, average time is {self.slowest:.4f}\n"
                f"fastest epoch {self.fastest_epoch}, average time is {self.fastest:.4f}\n"
                f"time std over epochs is {self.std_over_epochs:.4f}\n"
                f"average iter time: {self.mean_iter_time:.4f} s/iter")


def train_time(rows: RunRows, include_outliers: bool = False) -> TrainTime:
    """Seconds per training iteration from the rows' ``time``: the mean of each epoch (without its first row,
    which holds the loader's start-up, unless ``include_outliers``), the slowest and fastest epochs (1-based), the
    spread of those means, and the mean over every row kept."""
    epochs: dict[int, list[float]] = {}
    for row in rows.train:
        if "time" not in row:
            raise LogError(f"{rows.path}: a training row of epoch {row['epoch']} has no 'time'")
        epochs.setdefault(int(row["epoch"]), []).append(float(row["time"]))
    kept = {epoch: times if include_outliers or len(times) == 1 else times[1:] for epoch, times in epochs.items()}
    numbers = sorted(kept)
    means = np.array([np.mean(kept[e]) for e in numbers])
    return TrainTime(numbers[int(means.argmax())], float(means.max()), numbers[int(means.argmin())],
                     float(means.min()), float(means.std()), float(np.mean(np.concatenate(list(kept.values())))))
