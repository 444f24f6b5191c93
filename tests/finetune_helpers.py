"""Tiny synthetic video sets and configs for the fine-tuning tests (real mp4 files, real configs on disk)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from sts3d.data.synthetic import write_video_dataset

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "Spatiotemporal_Finetuning" / "tools"
CONFIGS = REPO / "Spatiotemporal_Finetuning" / "configs" / "recognition"
NUM_CLASSES = 4


def analysis_tool(name: str) -> ModuleType:
    """``tools/analysis/<name>.py`` loaded as a module, to call its ``main(argv)``."""
    spec = importlib.util.spec_from_file_location(name, TOOLS / "analysis" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_videos(root: Path) -> Path:
    """4 classes (2 shapes x up/down), 3 train and 2 val videos each, 12 frames of 40x40."""
    return write_video_dataset(root, num_shapes=2, train_per_class=3, val_per_class=2, frames=12, size=40,
                               progress=False)


def tiny_config(path: Path, base: str, data: Path, clip_len: int = 4, frame_interval: int = 2, segments: bool = False,
                extra: str = "") -> Path:
    """A config that inherits ``base`` (relative to configs/recognition) and shrinks it: 32x32 training crops,
    2 videos per batch, no loader workers, 1 epoch, 2 clips x 3 crops at test (or 4 one-frame segments)."""
    if segments:
        sample, test_sample = "clip_len=1, frame_interval=1, num_clips=4", "clip_len=1, frame_interval=1, num_clips=4"
    else:
        sample = f"clip_len={clip_len}, frame_interval={frame_interval}, num_clips=1"
        test_sample = f"clip_len={clip_len}, frame_interval={frame_interval}, num_clips=2"
    text = f"""_base_ = [{str(CONFIGS / base)!r}]
model = dict(cls_head=dict(num_classes={NUM_CLASSES}), test_cfg=dict(max_testing_views=4))
train_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', {sample}),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 40)),
    dict(type='RandomResizedCrop'),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='Normalize', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_bgr=False),
    dict(type='FormatShape', input_format='NCTHW'),
]
val_pipeline = [dict(type='SampleFrames', {test_sample.replace('num_clips=2', 'num_clips=1')}, test_mode=True),
                dict(type='Resize', scale=(-1, 40)), dict(type='CenterCrop', crop_size=32)]
test_pipeline = [dict(type='SampleFrames', {test_sample}, test_mode=True),
                 dict(type='Resize', scale=(-1, 40)), dict(type='ThreeCrop', crop_size=40)]
data = dict(
    videos_per_gpu=2, workers_per_gpu=0,
    train=dict(ann_file={str(data / 'train.txt')!r}, data_prefix={str(data / 'videos')!r}, pipeline=train_pipeline),
    val=dict(ann_file={str(data / 'val.txt')!r}, data_prefix={str(data / 'videos')!r}, pipeline=val_pipeline),
    test=dict(ann_file={str(data / 'val.txt')!r}, data_prefix={str(data / 'videos')!r}, pipeline=test_pipeline))
total_epochs = 1
lr_config = dict(warmup_iters=1)
evaluation = dict(interval=1)
checkpoint_config = dict(interval=1)
log_config = dict(interval=2)
{extra}
"""
    path.write_text(text)
    return path


def run_tool(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a tool script or a dist script as a user would, from ``cwd``, with this interpreter first on PATH."""
    environment = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, *args] if args[0].endswith(".py") else ["bash", *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
