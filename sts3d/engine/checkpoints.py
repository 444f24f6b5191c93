"""Training checkpoints on disk, as timm writes them: ``last``, the best ``N`` epochs, ``model_best``.

Every file is written atomically (:func:`sts3d.checkpoint.save_checkpoint`, then hard links or copies renamed into
place), so a run killed at any moment leaves each file either as it was or complete.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

from ..checkpoint import save_checkpoint

EXTENSION = ".pth.tar"
LAST = "last" + EXTENSION
BEST = "model_best" + EXTENSION


def epoch_file(epoch: int) -> str:
    return f"checkpoint-{epoch}{EXTENSION}"


def _link_atomic(src: Path, dst: Path) -> None:
    """Make ``dst`` a hard link to (or, where links fail, a copy of) ``src``, replacing it atomically."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(dst)


class CheckpointKeeper:
    """Writes ``last.pth.tar`` every epoch, keeps ``checkpoint-<epoch>.pth.tar`` for the ``max_history`` epochs with
    the highest metric (ties keep the earlier epoch) and ``model_best.pth.tar`` for the best one.

    Its bookkeeping travels inside each checkpoint (key ``saver``), so a resumed run ranks and evicts as before.
    """

    def __init__(self, directory: Path, max_history: int = 10) -> None:
        if max_history < 1:
            raise ValueError(f"--checkpoint-hist must be at least 1, got {max_history}")
        self.directory = Path(directory)
        self.max_history = max_history
        self.history: list[tuple[int, float]] = []  # (epoch, metric), best first
        self.best: Optional[tuple[int, float]] = None

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(entry) for entry in self.history],
                "best": list(self.best) if self.best is not None else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the ranking; entries whose files are gone (another folder, deleted) are dropped."""
        self.history = [(int(e), float(m)) for e, m in state.get("history", [])
                        if (self.directory / epoch_file(int(e))).is_file()]
        best = state.get("best")
        self.best = (int(best[0]), float(best[1])) if best is not None else None

    def save(self, state: Mapping[str, Any], epoch: int, metric: float) -> None:
        """Write ``state`` (plus the ranking) as the checkpoint of ``epoch``, scored by ``metric``."""
        # an epoch trained again after resuming from an earlier checkpoint replaces its old entry
        others = [entry for entry in self.history if entry[0] != epoch]
        ranked = sorted(others + [(epoch, metric)], key=lambda entry: -entry[1])  # stable: ties keep order
        kept, dropped = ranked[:self.max_history], ranked[self.max_history:]
        is_best = self.best is None or metric > self.best[1]
        self.history = kept
        if is_best:
            self.best = (epoch, metric)
        last = self.directory / LAST
        save_checkpoint({**state, "saver": self.state_dict()}, last)
        if (epoch, metric) in kept:
            _link_atomic(last, self.directory / epoch_file(epoch))
        if is_best:
            _link_atomic(last, self.directory / BEST)
        for old_epoch, _ in dropped:
            (self.directory / epoch_file(old_epoch)).unlink(missing_ok=True)
