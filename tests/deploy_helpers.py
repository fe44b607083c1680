"""Tiny random-weight checkpoints for the deployment tests (export, ONNX Runtime, serving).

Weights are drawn (He-normal convolutions and linear layers, biases in +-0.1) instead of trained, so
that the tests cost seconds, and the outputs still vary from pixel to pixel and box to box (the
zero / 0.01 initialisations of the heads would give near-constant outputs that every runtime agrees on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from convision.data.synthetic import synthetic_classes, synthetic_colors
from convision.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from convision.engine.checkpoint import FORMAT, save_checkpoint
from convision.models import build_model
from convision.tasks.base import checkpoint_meta

NUM_CLASSES = 3  # built-in scenes: background + 2 shapes


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = (
                    m.weight[0].numel()
                    if not isinstance(m, nn.ConvTranspose2d)
                    else m.weight.shape[0] * m.weight[0, 0].numel()
                )
                m.weight.copy_(
                    torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
                )
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
    return model


def random_checkpoint(
    path: Path, task: str, name: str, kwargs: dict[str, Any], cfg: Any, **extra: Any
) -> Path:
    """Build ``name(**kwargs)``, draw its weights, save it as a ``task`` checkpoint trained with ``cfg``."""
    torch.manual_seed(0)
    model = randomize(build_model(name, **kwargs))
    classes = synthetic_classes(NUM_CLASSES)
    colors = synthetic_colors(NUM_CLASSES) if task == "segment" else ()
    if task != "segment":  # classify, localize and detect name the shapes only
        classes = classes[1:]
    meta = checkpoint_meta(
        task,
        name,
        kwargs,
        classes,
        cfg,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        colors=colors,
        **extra,
    )
    save_checkpoint(
        path, {**meta, "format": FORMAT, "state_dict": model.state_dict(), "epoch": 1}
    )
    return path


def segment_checkpoint(
    path: Path, name: str = "fcn8s", size: int = 64, **kwargs: Any
) -> Path:
    from convision.tasks.segment import SegmentConfig

    cfg = SegmentConfig()
    cfg.data.scene_size, cfg.data.num_classes, cfg.data.num_val, cfg.data.workers = (
        size,
        NUM_CLASSES,
        4,
        0,
    )
    kw = {
        "num_classes": NUM_CLASSES,
        "weights": None,
        **({"backbone": "resnet18"} if name != "unet" else {}),
        **kwargs,
    }
    return random_checkpoint(path, "segment", name, kw, cfg)


def classify_checkpoint(path: Path, task: str = "classify", size: int = 64) -> Path:
    from convision.tasks.classify import ClassifyConfig
    from convision.tasks.localize import LocalizeConfig

    cfg = ClassifyConfig() if task == "classify" else LocalizeConfig()
    (
        cfg.data.num_classes,
        cfg.data.num_val,
        cfg.data.image_size,
        cfg.data.scene_size,
        cfg.data.workers,
    ) = NUM_CLASSES, 6, size, size, 0
    name = "classifier" if task == "classify" else "localizer"
    kw = {
        "arch": "resnet18",
        "num_classes": NUM_CLASSES - 1,
        "weights": None,
    }  # exports 3x faster than MobileNetV2
    return random_checkpoint(path, task, name, kw, cfg, image_size=size)


def detect_checkpoint(path: Path, name: str = "faster_rcnn", size: int = 64) -> Path:
    from convision.tasks.detect import DetectConfig

    cfg = DetectConfig()
    cfg.data.num_classes, cfg.data.num_val, cfg.data.scene_size, cfg.data.workers = (
        NUM_CLASSES,
        3,
        size,
        0,
    )
    cfg.model.model = name
    kw: dict[str, Any] = {
        "num_classes": NUM_CLASSES - 1,
        "backbone": "mobilenet_v2",
        "weights": None,
    }
    if name == "yolov1":
        kw |= {"image_size": 224, "head_channels": 32, "score_threshold": 0.05}
    else:
        kw |= {"head_dim": 64, "detections_per_image": 20}
    if name == "faster_rcnn":
        kw |= {
            "anchor_sizes": [16, 32, 64],
            "rpn_channels": 32,
            "rpn_pre_nms_test": 200,
            "rpn_post_nms_test": 50,
        }
    proposals = {"mode": "fast", "max_proposals": 100} if name == "fast_rcnn" else {}
    return random_checkpoint(
        path, "detect", name, kw, cfg, min_size=size, max_size=1000, proposals=proposals
    )
