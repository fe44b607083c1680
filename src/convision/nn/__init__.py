"""Reusable layers."""
from __future__ import annotations

from convision.nn.upsampling import BilinearUpsample, bilinear_filter, bilinear_kernel

__all__ = ["BilinearUpsample", "bilinear_filter", "bilinear_kernel"]
