"""The network ``convision inspect`` looks into: what to run, how to normalise its input, and its
layers by name.

A model is a torchvision classifier name (``alexnet``, ``vgg16``, ``resnet18``, ``mobilenet_v2``,
...; with ``weights`` such as ``IMAGENET1K_V1`` where they are available offline), a convision
model name as ``convision summary`` resolves it (random weights, or ``weights`` for its backbone),
or a convision checkpoint (classification, localization, segmentation, detection). For a
detection checkpoint the convolutional trunk (``body`` of Fast/Faster R-CNN, ``features`` of
R-CNN and YOLO) is inspected: the rest of a detector works on regions, not on the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convision.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from convision.errors import ConfigError
from convision.tasks.summary import build

__all__ = ["Network", "load_network", "conv_layers", "resolve_layer", "preprocess"]


@dataclass
class Network:
    """``module`` takes ``1 x 3 x size x size`` images normalised with ``mean`` / ``std``."""

    name: str
    module: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int = 224


def load_network(
    name: str,
    *,
    weights: str | None = None,
    backbone: str | None = None,
    num_classes: int | None = None,
    size: int | None = None,
) -> Network:
    """Resolve ``name`` (see the module notes) into a :class:`Network` in eval mode on the CPU."""
    module, default = build(
        name, num_classes=num_classes, backbone=backbone, weights=weights
    )
    normalization = getattr(module, "normalization", None) or {}
    mean = tuple(normalization.get("mean", IMAGENET_MEAN))
    std = tuple(normalization.get("std", IMAGENET_STD))
    if getattr(module, "task", None) == "detect":
        module = _trunk(module)
    return Network(name, module.eval().float().cpu(), mean, std, int(size or default))


def _trunk(detector: nn.Module) -> nn.Module:
    for attr in ("body", "features", "backbone"):
        part = getattr(detector, attr, None)
        if isinstance(part, nn.Module):
            return part
    raise ConfigError(
        f"{type(detector).__name__}: no convolutional trunk (body / features) to inspect"
    )


def conv_layers(module: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The ``nn.Conv2d`` modules of ``module`` by name, in definition order."""
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]


def resolve_layer(module: nn.Module, layer: str | None) -> str:
    """``layer`` checked against the module names (default: the last convolution of the feature
    extractor -- ``features`` / ``backbone`` / ``body`` where the model has one -- else the last
    one); an unknown name is a one-line ConfigError naming some of the convolutions."""
    convs = [n for n, _ in conv_layers(module)]
    if not convs:
        raise ConfigError(f"{type(module).__name__}: no Conv2d layer to inspect")
    if layer is None:
        for part in ("features", "backbone", "body"):
            inside = [n for n in convs if n.split(".")[0] == part]
            if inside:
                return inside[-1]
        return convs[-1]
    names = dict(module.named_modules())
    if layer not in names or layer == "":
        shown = convs if len(convs) <= 8 else convs[:4] + ["..."] + convs[-3:]
        raise ConfigError(
            f"--layer: no layer {layer!r} in {type(module).__name__} "
            f"(its {len(convs)} convolutions: {', '.join(shown)}; any module name works)"
        )
    return layer


def preprocess(image: np.ndarray, net: Network) -> tuple[np.ndarray, Tensor]:
    """``(RGB uint8 shown, 1 x 3 x S x S normalised tensor)``: the image's shorter side resized to
    ``net.size``, then the centre square cropped."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float()[None]
    h, w = x.shape[-2:]
    scale = net.size / min(h, w)
    nh, nw = max(net.size, round(h * scale)), max(net.size, round(w * scale))
    x = F.interpolate(
        x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False
    )
    top, left = (nh - net.size) // 2, (nw - net.size) // 2
    x = x[..., top : top + net.size, left : left + net.size].clamp(0, 255)
    shown = x[0].permute(1, 2, 0).round().to(torch.uint8).numpy()
    mean = torch.tensor(net.mean).view(1, 3, 1, 1)
    std = torch.tensor(net.std).view(1, 3, 1, 1)
    return shown, (x / 255.0 - mean) / std
