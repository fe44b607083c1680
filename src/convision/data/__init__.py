"""Data: image/mask reading, the built-in synthetic scenes, segmentation data sets, transforms."""

from __future__ import annotations

from convision.data.io import IGNORE_INDEX, read_image, read_mask
from convision.data.segmentation import (
    VOC_CLASSES,
    SegmentationDataset,
    SegmentationFolder,
    SyntheticSegmentation,
    VOCSegmentation,
    build_segmentation_dataset,
    detect_format,
)
from convision.data.synthetic import (
    SYNTHETIC_CLASS_NAMES,
    SYNTHETIC_COLORS,
    Scene,
    make_scene,
)
from convision.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    pad_collate,
    segmentation_eval_transforms,
    segmentation_train_transforms,
)

__all__ = [
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SYNTHETIC_CLASS_NAMES",
    "SYNTHETIC_COLORS",
    "VOC_CLASSES",
    "Scene",
    "SegmentationDataset",
    "SegmentationFolder",
    "SyntheticSegmentation",
    "VOCSegmentation",
    "build_segmentation_dataset",
    "detect_format",
    "make_scene",
    "pad_collate",
    "read_image",
    "read_mask",
    "segmentation_eval_transforms",
    "segmentation_train_transforms",
]
