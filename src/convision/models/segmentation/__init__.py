"""Semantic segmentation models and their default training recipes."""

from __future__ import annotations

from typing import Any

from convision.models.segmentation.fcn import FCN, fcn8s, fcn16s, fcn32s

__all__ = ["FCN", "fcn32s", "fcn16s", "fcn8s", "RECIPES", "recipe"]

# Measured on real photographs (CamVid, 367 training images, 10 epochs of batch 8, CPU; BENCHMARKS.md
# "Real photographs"): the settings each architecture starts from, over the generic defaults of
# convision.config (SGD 0.01, poly, scale 0.5-2.0), which suit none of them on a short run.
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
    "unet": dict(_PRETRAINED),
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
