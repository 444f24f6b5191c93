#!/usr/bin/env python
"""Accuracy of several models' fused scores, as mmaction's tool:
``python tools/analysis/report_accuracy.py --scores rgb.pkl other.json --coefficients 1 1 --datalist val.txt
[--apply-softmax]``. Each score file is a ``test.py --out`` file (.json, .pkl or .yaml, ours or mmaction's) in the
order of the datalist, whose lines end with the label. Prints mean class, top-1 and top-5 accuracy."""
import sys
from pathlib import Path

try:
    import sts3d  # noqa: F401  (installed with pip install -e .)
except ImportError:  # a checkout that was not installed: use the library beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from sts3d.engine.video_cli import report_accuracy_main

if __name__ == "__main__":
    sys.exit(report_accuracy_main())
