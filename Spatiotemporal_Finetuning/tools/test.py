#!/usr/bin/env python
"""Test a fine-tuned recognizer with multiple views:
``python tools/test.py CONFIG CHECKPOINT [--eval top_k_accuracy mean_class_accuracy] [--out result.json]
[--average-clips prob]``. Runs from any working directory; ``dist_test.sh`` starts one per GPU."""
import sys
from pathlib import Path

try:
    import sts3d  # noqa: F401  (installed with pip install -e .)
except ImportError:  # a checkout that was not installed: use the library beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sts3d.engine.video_cli import test_main

if __name__ == "__main__":
    sys.exit(test_main())
