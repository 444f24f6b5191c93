#!/usr/bin/env python
"""Fine-tune a recognizer: ``python tools/train.py CONFIG [--validate] [--work-dir DIR] [--cfg-options k=v ...]``.

Runs from any working directory; ``dist_train.sh`` starts one of these per GPU through ``torchrun``.
"""
import sys
from pathlib import Path

try:
    import sts3d  # noqa: F401  (installed with pip install -e .)
except ImportError:  # a checkout that was not installed: use the library beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sts3d.engine.video_cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
