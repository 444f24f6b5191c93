"""Late fusion of several models' per-video scores (``tools/analysis/report_accuracy.py``), as mmaction's
``get_weighted_score``: each video's fused score is the coefficient-weighted sum of the models' scores."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; the row maximum is subtracted first, so large logits do not overflow."""
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def fuse_scores(score_lists: Sequence[Sequence[Optional[Sequence[float]]]], coefficients: Sequence[float],
                apply_softmax: bool = False, names: Optional[Sequence[str]] = None) -> list[Optional[list[float]]]:
    """``sum_i coefficients[i] * score_lists[i][v]`` for each video ``v`` (each model's scores softmaxed first with
    ``apply_softmax``). A video that any model left unscored (``None``: the tester could not decode it) is ``None``,
    since its fused score would miss a model. ``names`` (the files) are named in the errors."""
    names = list(names or (f"scores #{i + 1}" for i in range(len(score_lists))))
    if len(coefficients) != len(score_lists):
        raise ValueError(f"--coefficients has {len(coefficients)} values for {len(score_lists)} score files")
    for name, scores in zip(names[1:], score_lists[1:]):
        if len(scores) != len(score_lists[0]):
            raise ValueError(f"{name} has scores of {len(scores)} videos, {names[0]} of {len(score_lists[0])}")
    classes = next((len(s) for scores in score_lists for s in scores if s is not None), 0)
    fused: list[Optional[list[float]]] = []
    for video, rows in enumerate(zip(*score_lists)):
        for name, row in zip(names, rows):
            if row is not None and len(row) != classes:
                raise ValueError(f"{name}: video {video} has {len(row)} class scores, other videos {classes}")
        if any(row is None for row in rows):
            fused.append(None)
            continue
        matrix = np.asarray(rows, dtype=np.float64)  # (models, classes)
        if apply_softmax:
            matrix = softmax(matrix)
        fused.append((np.asarray(coefficients, dtype=np.float64) @ matrix).tolist())
    return fused
