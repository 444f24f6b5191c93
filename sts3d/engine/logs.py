"""What a run reports: console messages, a progress bar, ``summary.csv``, a PNG of the curves, and wandb.

Only the primary process writes. wandb is optional: it is imported when asked for, and a missing package is one
warning, not an error (the seed's scripts pass ``--log-wandb``).
"""
from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from tqdm import tqdm

logger = logging.getLogger("sts3d")

SUMMARY = "summary.csv"
CURVES = "curves.png"


def setup_logging(primary: bool) -> None:
    """Plain messages on stderr; processes other than the primary report warnings and errors only."""
    logging.basicConfig(level=logging.INFO if primary else logging.WARNING, format="%(message)s",
                        stream=sys.stderr, force=True)


def print_error(error: BaseException) -> int:
    """Report an input error as one ``error: ...`` line on stderr (its first line: a load report's key list would
    bury it; the type's name when it has no message) and return the command-line status for it, 2."""
    text = str(error)
    print(f"error: {text.splitlines()[0] if text else type(error).__name__}", file=sys.stderr)
    return 2


def progress_bar(total: int, description: str, enabled: bool, unit: str = "img") -> tqdm:
    """A bar counting ``unit`` (images, clips, videos), so its rate is per second and its ETA the rest of the
    pass. Off a terminal (log files) it redraws every 30 s instead of continuously."""
    return tqdm(total=total, desc=description, unit=unit, unit_scale=True, disable=not enabled,
                leave=False, dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 30.0)


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class WandbRun:
    """A wandb run (``--log-wandb``): created, or continued when ``run_id`` names one (a resumed training)."""

    def __init__(self, project: str, name: str, entity: Optional[str], run_id: Optional[str], offline: bool,
                 config: dict[str, Any], directory: Path) -> None:
        import wandb  # optional dependency, imported only when asked for

        self._wandb = wandb
        self.run = wandb.init(project=project, name=name, entity=entity, id=run_id, resume="allow", config=config,
                              dir=str(directory), mode="offline" if offline else None)

    @property
    def id(self) -> str:
        return self.run.id

    def log(self, row: dict[str, Any], step: int) -> None:
        self.run.log(row, step=step)

    def log_images(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float], step: int) -> None:
        """Log up to 16 normalised images ``(N, 3, H, W)`` as one grid, un-normalised for viewing."""
        from torchvision.utils import make_grid

        images = images[:16].detach().float().cpu()
        images = images * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
        grid = make_grid(images.clamp(0, 1), nrow=4).permute(1, 2, 0).numpy()
        self.run.log({"train_images": self._wandb.Image(grid)}, step=step)

    def finish(self) -> None:
        self.run.finish()


def start_wandb(args: Any, directory: Path, run_id: Optional[str]) -> Optional[WandbRun]:
    """The run for ``args`` (``--project``, ``--experiment``, ``--wandb-entity``, ``--wandb-offline``), or ``None``
    when wandb is not installed."""
    try:
        return WandbRun(args.project, args.experiment, args.wandb_entity, run_id, args.wandb_offline, vars(args),
                        directory)
    except ImportError:
        logger.warning("wandb is not installed (pip install wandb): --log-wandb ignored")
        return None


class EpochLog:
    """One row per epoch: appended to ``summary.csv``, drawn into ``curves.png`` and sent to wandb.

    Resuming at ``start_epoch`` keeps the rows of the epochs before it and drops later ones (they are trained
    again). Rows hold ``epoch`` (0-based, as the checkpoints), ``train_loss``, ``eval_loss``, ``eval_top1``,
    ``eval_top5`` and ``lr``.
    """

    def __init__(self, directory: Path, start_epoch: int = 0, wandb_run: Optional[WandbRun] = None) -> None:
        self.directory = directory
        self.wandb_run = wandb_run
        self.rows: list[dict[str, Any]] = []
        path = directory / SUMMARY
        if path.is_file() and start_epoch > 0:
            with open(path, newline="") as file:
                rows = [{**{k: float(v) for k, v in row.items()}, "epoch": int(float(row["epoch"]))}
                        for row in csv.DictReader(file)]
            self.rows = [row for row in rows if row["epoch"] < start_epoch]
        self._write_csv()

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._write_csv()
        self._plot()
        if self.wandb_run is not None:
            self.wandb_run.log(row, step=int(row["epoch"]))

    def _write_csv(self) -> None:
        path = self.directory / SUMMARY
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as file:
            if self.rows:
                writer = csv.DictWriter(file, fieldnames=list(self.rows[0]))
                writer.writeheader()
                writer.writerows(self.rows)
        tmp.replace(path)

    def _plot(self) -> None:
        # imported here: only the primary process draws. A bare Figure renders with Agg and leaves pyplot's global
        # backend and figure list alone.
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        epochs = [row["epoch"] for row in self.rows]
        figure = Figure(figsize=(10, 4))
        loss_axis, top1_axis = figure.subplots(1, 2)
        loss_axis.plot(epochs, [row["train_loss"] for row in self.rows], marker=".", label="train")
        loss_axis.plot(epochs, [row["eval_loss"] for row in self.rows], marker=".", label="val")
        loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
        loss_axis.legend()
        top1_axis.plot(epochs, [row["eval_top1"] for row in self.rows], marker=".", color="tab:green")
        top1_axis.set(xlabel="epoch", ylabel="top-1 (%)", title="val top-1")
        for axis in (loss_axis, top1_axis):
            axis.grid(alpha=0.3)
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        figure.tight_layout()
        path = self.directory / CURVES
        tmp = path.with_name(f".tmp.{path.name}")  # keeps the .png suffix, which savefig reads the format from
        figure.savefig(tmp, dpi=100)
        tmp.replace(path)
