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
    """Recall of the top-1 prediction (the first of equal highest scores) for each class that is a label or a
    prediction, averaged over those classes. A class that is predicted but never the label counts as 0: mmaction
    averaged the rows of a confusion matrix over the union of both sets, so its reported figures include those."""
    labels = np.asarray(labels)
    predicted = np.argmax(np.asarray(scores), axis=1)
    return float(np.mean([np.mean(predicted[labels == c] == c) if np.any(labels == c) else 0.0
                          for c in np.union1d(labels, predicted)]))
