"""Semantic segmentation models."""

from __future__ import annotations

from convision.models.segmentation.fcn import FCN, fcn8s, fcn16s, fcn32s

__all__ = ["FCN", "fcn32s", "fcn16s", "fcn8s"]
