"""Image classification datasets for stage 1: ImageNet-style folders and list files.

A folder split is ``ROOT/<split>/<class>/<image>`` (images may sit in sub-folders of a class folder; any file whose
extension PIL can open counts). Classes are the sorted folder names, so label ``i`` is the ``i``-th name. A list
file holds one ``relative/path label`` per line, paths relative to ``ROOT`` (the seed's ``--train-list`` format;
parsed by :func:`sts3d.data.video.read_annotations`, whose errors name ``file:line``).

Problems found when scanning (a missing or empty split, a class folder without images) raise ``DatasetError``. An
image that cannot be decoded while training is replaced by the next readable one, warned about once, and counted,
so one bad file never stops a long run.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from PIL import Image
from torch.utils.data import Dataset

from .video import read_annotations

logger = logging.getLogger(__name__)

Image.init()  # registers every plugin, so the extension table below is complete
IMAGE_EXTENSIONS = frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


class DatasetError(ValueError):
    """Data that cannot be trained or evaluated on; the message names the folder or file."""


class ImageDataset(Dataset):
    """``(image, label)`` pairs from ``samples`` (path, label); ``transform`` turns a PIL RGB image into a tensor
    ``(3, H, W)``.

    An unreadable image is replaced by the next readable sample. Each bad file is warned about once per process
    group (the flags live in shared memory, so data-loader workers see each other's) and counted in
    :attr:`num_unreadable`.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Optional[list[str]], source: str,
                 transform: Optional[Callable] = None, warn: bool = True) -> None:
        if not samples:
            raise DatasetError(f"{source}: no images")
        self.samples = list(samples)
        self.classes = classes  # folder names in label order; None for list files
        self.source = source
        self.transform = transform
        self.warn = warn
        self._unreadable = multiprocessing.Array("b", len(self.samples))  # one flag per sample, shared with workers

    @property
    def num_labels(self) -> int:
        """Labels span ``[0, num_labels)``."""
        return len(self.classes) if self.classes is not None else 1 + max(label for _, label in self.samples)

    @property
    def num_unreadable(self) -> int:
        """How many distinct images failed to decode so far (in this process and its workers)."""
        with self._unreadable.get_lock():
            return sum(self._unreadable.get_obj())

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Union[torch.Tensor, Image.Image], int]:
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            path, label = self.samples[i]
            try:
                with Image.open(path) as image:
                    image = image.convert("RGB")
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                self._mark_unreadable(i, error)
                continue
            return (self.transform(image) if self.transform is not None else image), label
        raise DatasetError(f"{self.source}: no image could be read")

    def _mark_unreadable(self, index: int, error: Exception) -> None:
        with self._unreadable.get_lock():
            first = not self._unreadable[index]
            self._unreadable[index] = 1
        if first and self.warn:
            logger.warning("skipping unreadable image %s (%s); using the next one instead",
                           self.samples[index][0], error)


def scan_image_folder(split_dir: Union[str, Path],
                      class_to_idx: Optional[dict[str, int]] = None) -> tuple[list[tuple[str, int]], list[str]]:
    """Samples ``(path, label)`` and class names of an ImageFolder split.

    With ``class_to_idx`` (the training split's), labels follow it and a class it lacks is an error; otherwise the
    sorted folder names are the classes.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir}: split folder not found (expected {split_dir}/<class>/<image>)")
    names = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        raise DatasetError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    if class_to_idx is None:
        class_to_idx = {name: i for i, name in enumerate(names)}
        classes = names
    else:
        unknown = [name for name in names if name not in class_to_idx]
        if unknown:
            raise DatasetError(f"{split_dir}: class folders not in the training classes: {', '.join(unknown[:5])}"
                               + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
        classes = sorted(class_to_idx, key=class_to_idx.get)
    samples = []
    for name in names:
        files = sorted(os.path.join(root, f) for root, _, fs in os.walk(split_dir / name, followlinks=True)
                       for f in fs if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DatasetError(f"{split_dir / name}: class folder holds no images")
        samples += [(f, class_to_idx[name]) for f in files]
    return samples, classes


def image_folder_dataset(root: Union[str, Path], split: str, class_to_idx: Optional[dict[str, int]] = None,
                         warn: bool = True) -> ImageDataset:
    """The ImageFolder split ``root/split`` (see :func:`scan_image_folder`)."""
    samples, classes = scan_image_folder(Path(root) / split, class_to_idx)
    return ImageDataset(samples, classes, str(Path(root) / split), warn=warn)


def image_list_dataset(root: Union[str, Path], list_file: Union[str, Path], warn: bool = True) -> ImageDataset:
    """The images of a list file (``relative/path label`` per line, relative to ``root``)."""
    records = read_annotations(list_file, root)
    if not records[0].path.is_file():  # a wrong root would otherwise surface as every image being unreadable
        raise DatasetError(f"{records[0].source}: {records[0].path} not found (paths are relative to {root})")
    return ImageDataset([(str(r.path), r.label) for r in records], None, str(list_file), warn=warn)


def check_num_classes(num_classes: Optional[int], datasets: Sequence[ImageDataset]) -> int:
    """``num_classes`` (the model's output count), or the number the data needs when ``None``; an error when it
    is smaller than the labels found."""
    needed = max(dataset.num_labels for dataset in datasets)
    if num_classes is None:
        return needed
    if num_classes < needed:
        where = ", ".join(dataset.source for dataset in datasets)
        raise DatasetError(f"--num-classes {num_classes} is smaller than the {needed} classes found in {where}")
    return num_classes
