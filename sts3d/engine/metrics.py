"""Video classification metrics as the seed reports them (fractions in [0, 1])."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def top_k_accuracy(scores: np.ndarray, labels: Sequence[int], topk: Sequence[int] = (1, 5)) -> list[float]:
    """Fraction of videos whose label is among the ``k`` highest scores, for each ``k``; a ``k`` at or above the
    number of classes counts every video as a hit. ``scores`` is ``(N, num_classes)``."""
    rank = label_rank(scores, labels)
    return [float(np.mean(rank < k)) for k in topk]


def label_rank(scores: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """How many classes score strictly higher than each video's label (0: a top-1 hit; ties favour the label)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    label_scores = scores[np.arange(len(labels)), labels]
    return (scores > label_scores[:, None]).sum(axis=1)


def mean_class_accuracy(scores: np.ndarray, labels: Sequence[int]) -> float:
    """Top-1 accuracy of each class that occurs in ``labels``, averaged over those classes."""
    labels = np.asarray(labels)
    hits = label_rank(scores, labels) == 0
    return float(np.mean([np.mean(hits[labels == c]) for c in np.unique(labels)]))
