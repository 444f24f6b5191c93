"""sts3d: image pre-training and STS spatiotemporal fine-tuning of 3D CNNs (Li et al., ECCV 2022)."""
from . import models  # noqa: F401

__version__ = "0.1.0"
