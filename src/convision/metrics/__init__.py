"""Evaluation metrics."""

from __future__ import annotations

from convision.metrics.segmentation import ConfusionMatrix, format_table

__all__ = ["ConfusionMatrix", "format_table"]
