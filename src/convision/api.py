"""Deprecated module, kept for one release: use ``convision.train`` / ``load`` / ``evaluate`` /
``predict`` (any task) or :mod:`convision.tasks.segment` (segmentation's own entry points)."""

from __future__ import annotations

from convision.tasks.base import expand_inputs, load
from convision.tasks.segment import (
    build_datasets,
    evaluate,
    model_kwargs,
    predict,
    predict_to_folder,
    train,
)

__all__ = [
    "build_datasets",
    "evaluate",
    "expand_inputs",
    "load",
    "model_kwargs",
    "predict",
    "predict_to_folder",
    "train",
]
