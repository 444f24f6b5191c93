#!/usr/bin/env python
"""Prepare a checkpoint for release, as mmaction's tool: ``python tools/publish_model.py IN_FILE OUT_FILE``.
Drops the optimizer state and writes ``OUT_FILE`` (less ``.pth``) as ``OUT-<first 8 hex digits of its sha256>.pth``,
whose path it prints; the result loads with ``test.py`` and ``load_from`` as the input did."""
import sys
from pathlib import Path

try:
    import sts3d  # noqa: F401  (installed with pip install -e .)
except ImportError:  # a checkout that was not installed: use the library beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sts3d.engine.video_cli import publish_model_main

if __name__ == "__main__":
    sys.exit(publish_model_main())
