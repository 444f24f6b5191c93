#!/usr/bin/env python3
"""Pre-train a 3D backbone on images: ``train.py DATA --model v3d_... [timm-style flags]`` (``--help`` lists them).

Runs as one process or under ``torchrun``; all logic is in :mod:`sts3d.engine.image_train`.
"""
import sys

from sts3d.engine.image_cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
