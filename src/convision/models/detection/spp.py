"""Spatial pyramid pooling of regions (He, Zhang, Ren, Sun 2014, "Spatial Pyramid Pooling in Deep
Convolutional Networks for Visual Recognition", sections 2.3 and 4 ("Object detection")).

SPP-net max-pools each window of the shared conv5 map into a fixed pyramid of ``n x n`` bins (the
detection system uses ``{6x6, 3x3, 2x2, 1x1}``, 50 bins) and concatenates the levels, so that the
fully connected layers get a fixed-length vector whatever the window's size. Each level here is one
:func:`torchvision.ops.roi_pool` call (max over bins), flattened per RoI as ``C x n x n`` and the
levels concatenated in the given order. Differences from the paper: the bins come from torchvision's
RoI pooling (window projected onto the map by rounding ``x * spatial_scale``, bin ``i`` spans
``floor(i * size / n) .. ceil((i + 1) * size / n)``) instead of SPP-net's ``ceil(a / n)``-sized
windows with stride ``floor(a / n)`` and its corner projection ``x' = floor(x / S) + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import roi_pool

from convision.errors import ConfigError

__all__ = ["SpatialPyramidPooling"]


class SpatialPyramidPooling(nn.Module):
    """``forward(features N x C x H x W, rois R x 5 (batch index, x1, y1, x2, y2)) -> R x C * sum(n^2)``."""

    def __init__(
        self, levels: Sequence[int] = (6, 3, 2, 1), spatial_scale: float = 1.0 / 16
    ) -> None:
        super().__init__()
        if not levels or any(int(n) < 1 for n in levels):
            raise ConfigError(
                f"spp_levels: expected a non-empty list of positive bin counts, got {list(levels)}"
            )
        self.levels = tuple(int(n) for n in levels)
        self.spatial_scale = float(spatial_scale)

    def output_length(self, channels: int) -> int:
        return channels * sum(n * n for n in self.levels)

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return torch.cat(
            [
                roi_pool(features, rois, (n, n), self.spatial_scale).flatten(1)
                for n in self.levels
            ],
            dim=1,
        )

    def extra_repr(self) -> str:
        return f"levels={self.levels}, spatial_scale={self.spatial_scale}"
