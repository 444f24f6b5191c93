#!/usr/bin/env python
"""Metrics of saved per-video scores, without a model, as mmaction's tool:
``python tools/analysis/eval_metric.py CONFIG result.json [--eval top_k_accuracy mean_class_accuracy]
[--eval-options topk='(1,3,5)']``. The scores are a ``test.py --out`` file (.json, .pkl or .yaml, ours or
mmaction's), in the order of the config's ``data.test.ann_file``, which gives the labels."""
import sys
from pathlib import Path

try:
    import sts3d  # noqa: F401  (installed with pip install -e .)
except ImportError:  # a checkout that was not installed: use the library beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from sts3d.engine.video_cli import eval_metric_main

if __name__ == "__main__":
    sys.exit(eval_metric_main())
