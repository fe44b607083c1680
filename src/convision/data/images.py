"""Image statistics and conversions every task shares."""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors

# ImageNet's per-channel mean and standard deviation (RGB, 0..1), torchvision's pretrained weights' normalisation.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def to_image(array: np.ndarray) -> tv_tensors.Image:
    """HxW or HxWx{1,3,4} uint8 -> ``tv_tensors.Image`` uint8 [3,H,W] (grey repeated, alpha dropped)."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return tv_tensors.Image(
        torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
    )
