"""Models: the STS convolution, the six backbones, heads, recognizers and the stage-1 image models."""
from .factory import backbone_entry, create_backbone, list_backbones, register_backbone
from .sts import STSConv3d

# Each family file registers its named backbones when imported; image.py registers the v3d_* models in timm.
from . import resnet3d, r2plus1d, x3d  # noqa: E402,F401
from .recognizer import Recognizer3D, average_clips, create_head, create_recognizer  # noqa: E402
from .image import IMAGE_MODELS, V3DImageModel  # noqa: E402

__all__ = ["IMAGE_MODELS", "Recognizer3D", "STSConv3d", "V3DImageModel", "average_clips", "backbone_entry",
           "create_backbone", "create_head", "create_recognizer", "list_backbones", "register_backbone"]
