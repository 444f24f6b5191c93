#!/usr/bin/env python3
"""Evaluate an image-pretrained checkpoint: ``validate.py DATA --checkpoint CKPT [--model NAME] [...]``.

Ends with a line giving top-1, top-5 and loss. All logic is in :mod:`sts3d.engine.image_train`.
"""
import sys

from sts3d.engine.image_cli import validate_main

if __name__ == "__main__":
    sys.exit(validate_main())
