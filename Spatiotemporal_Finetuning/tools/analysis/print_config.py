#!/usr/bin/env python
"""Print a config as training resolves it, as mmaction's tool:
``python tools/analysis/print_config.py CONFIG [--cfg-options model.cls_head.num_classes=174]``. The output is the
Python file a run writes into its work dir: save it (``> resolved.py``) and it loads back to the same settings."""
import sys
from pathlib import Path

try:
    import sts3d  # noqa: F401  (installed with pip install -e .)
except ImportError:  # a checkout that was not installed: use the library beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from sts3d.engine.video_cli import print_config_main

if __name__ == "__main__":
    sys.exit(print_config_main())
