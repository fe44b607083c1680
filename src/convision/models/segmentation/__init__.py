"""Semantic segmentation models and their default training recipes."""

from __future__ import annotations

from typing import Any

from convision.models.segmentation.fcn import FCN, fcn8s, fcn16s, fcn32s

__all__ = ["FCN", "fcn32s", "fcn16s", "fcn8s", "RECIPES", "recipe"]

# Measured on real photographs (CamVid 96x128, 367 training images, 10 epochs of batch 8, CPU;
# BENCHMARKS.md "Real photographs"): the settings each architecture starts from, over the generic
# defaults of convision.config (SGD 0.01, poly, scale 0.5-2.0), which suit none of them on a
# short run. `segment train` applies them (defaults < recipe < YAML < flags); in Python:
# convision.config.apply(cfg, recipe(name), where="recipe"). The FCNs (test mIoU: 8s 0.408,
# 16s 0.391, 32s 0.319) and the dilated front-end (0.292) use the demo's recipe; U-Net gets
# smp's (AdamW, a 3-epoch warm-up then cosine, no scale or colour jitter): 0.411, where the
# demo's recipe gave it 0.395 (smp's Unet: 0.406). SegNet and DeconvNet (VGG16-BN, no ImageNet
# weights here) were not measured on real data and keep the FCNs' recipe.
_PRETRAINED = {
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "schedule": "poly",
    "warmup_epochs": 0.5,
    "scale_min": 0.75,
    "scale_max": 1.5,
}
RECIPES: dict[str, dict[str, Any]] = {
    "fcn32s": dict(_PRETRAINED),
    "fcn16s": dict(_PRETRAINED),
    "fcn8s": dict(_PRETRAINED),
    "unet": {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "warmup_epochs": 3.0,
        "scale_min": 1.0,
        "scale_max": 1.0,
        "color_jitter": 0.0,
    },
    "dilated": dict(_PRETRAINED),
    "segnet": dict(_PRETRAINED),
    "deconvnet": dict(_PRETRAINED),
}


def recipe(model: str) -> dict[str, Any]:
    """The default training settings of segmentation architecture ``model`` (empty if it has none)."""
    return dict(RECIPES.get(model, {}))


def describe_recipes() -> str:
    """One line per architecture, for ``convision segment train --help``."""
    lines = []
    for name, settings in RECIPES.items():
        lines.append(
            f"  {name:<10} "
            + " ".join(
                f"--{k.replace('_', '-')} {v:g}"
                if isinstance(v, float)
                else f"--{k.replace('_', '-')} {v}"
                for k, v in settings.items()
            )
        )
    return "\n".join(lines)
