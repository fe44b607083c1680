"""Anchors of the Region Proposal Network (Ren, He, Girshick, Sun 2015, "Faster R-CNN", section 3.1.1).

:func:`generate_anchors` reproduces py-faster-rcnn's ``generate_anchors`` (base size 16, ratios
0.5/1/2, scales 8/16/32): a ``base_size x base_size`` reference window is first reshaped to each
aspect ratio at (roughly) constant area, ``w = round(sqrt(area / ratio))``, ``h = round(w * ratio)``
(numpy's round half to even, which ``torch.round`` shares), and then each of those is scaled by each
scale around the same centre. Boxes there are *inclusive* pixel coordinates ``(x1, y1, x2, y2)``
(width ``x2 - x1 + 1``).

``first_pixel``: the index of the image's first pixel. py-faster-rcnn's docstring prints the anchors
of its MATLAB ancestor, whose first pixel is 1 (first anchor ``[-83, -39, 100, 56]``); its Python code
starts the reference window at 0 and returns the same boxes minus 1 (``[-84, -40, 99, 55]``). Both
are the same continuous box: we map an inclusive box to our continuous xyxy (``x2 - x1`` wide) with
``(x1 - first_pixel, y1 - first_pixel, x2 + 1 - first_pixel, y2 + 1 - first_pixel)``, i.e.
``[-84, -40, 100, 56]`` for the first one: centred on ``(8, 8)``, the centre of the first 16 x 16
cell, and ``184 x 96`` pixels.

:class:`AnchorGrid` shifts the base anchors over a feature map with the given stride (16), ordered
position-major (row, column) then anchor (py-faster-rcnn's ``shifts + anchors`` order), and caches
the result per feature size, device and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from convision.errors import ConfigError

__all__ = ["generate_anchors", "base_anchors", "AnchorGrid"]


def _whctrs(anchor: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = anchor[..., 2] - anchor[..., 0] + 1
    h = anchor[..., 3] - anchor[..., 1] + 1
    return w, h, anchor[..., 0] + 0.5 * (w - 1), anchor[..., 1] + 0.5 * (h - 1)


def _mkanchors(ws: Tensor, hs: Tensor, x_ctr: Tensor, y_ctr: Tensor) -> Tensor:
    return torch.stack(
        (
            x_ctr - 0.5 * (ws - 1),
            y_ctr - 0.5 * (hs - 1),
            x_ctr + 0.5 * (ws - 1),
            y_ctr + 0.5 * (hs - 1),
        ),
        dim=-1,
    )


def generate_anchors(
    base_size: int = 16,
    ratios: Sequence[float] = (0.5, 1.0, 2.0),
    scales: Sequence[float] = (8.0, 16.0, 32.0),
    first_pixel: int = 1,
) -> Tensor:
    """py-faster-rcnn's anchors, raw: ``len(ratios) * len(scales) x 4`` inclusive pixel boxes
    (float64), ratio-major (all scales of ratio 0.5 first). See the module docstring for
    ``first_pixel``."""
    base = torch.tensor(
        [
            first_pixel,
            first_pixel,
            first_pixel + base_size - 1,
            first_pixel + base_size - 1,
        ],
        dtype=torch.float64,
    )
    w, h, x_ctr, y_ctr = _whctrs(base)
    ratios_t = torch.tensor(list(ratios), dtype=torch.float64)
    # _ratio_enum: same area, aspect ratio h / w = ratio, rounded to whole pixels
    ws = torch.round(torch.sqrt(w * h / ratios_t))
    hs = torch.round(ws * ratios_t)
    ratio_anchors = _mkanchors(ws, hs, x_ctr, y_ctr)
    # _scale_enum of every ratio anchor
    scales_t = torch.tensor(list(scales), dtype=torch.float64)
    rw, rh, rx, ry = _whctrs(ratio_anchors)
    out = _mkanchors(
        rw[:, None] * scales_t,
        rh[:, None] * scales_t,
        rx[:, None].expand(-1, len(scales)),
        ry[:, None].expand(-1, len(scales)),
    )
    return out.reshape(-1, 4)


def base_anchors(
    sizes: Sequence[float] = (128, 256, 512),
    ratios: Sequence[float] = (0.5, 1.0, 2.0),
    stride: int = 16,
) -> Tensor:
    """The ``A x 4`` continuous xyxy anchors of the first feature cell (float32): py-faster-rcnn's
    generator with ``base_size = stride`` and ``scales = sizes / stride`` (sizes 128/256/512 at
    stride 16 are its scales 8/16/32), converted as in the module docstring."""
    if (
        not sizes
        or not ratios
        or any(float(s) <= 0 for s in sizes)
        or any(float(r) <= 0 for r in ratios)
    ):
        raise ConfigError(
            f"anchor_sizes / anchor_ratios: expected non-empty lists of positive numbers, got {list(sizes)} / {list(ratios)}"
        )
    raw = generate_anchors(
        stride, ratios, [float(s) / stride for s in sizes], first_pixel=0
    )
    raw[:, 2:] += 1
    return raw.float()


class AnchorGrid(nn.Module):
    """All anchors of a stride-``stride`` feature map: ``forward(height, width, device, dtype)`` ->
    ``(height * width * A) x 4`` continuous xyxy, cached per ``(height, width, device, dtype)``.

    Anchor ``a`` of cell ``(i, j)`` is ``base[a] + (stride * j, stride * i)`` (py-faster-rcnn's
    shifts): centred on ``(stride * j + stride / 2, stride * i + stride / 2)``.
    """

    def __init__(
        self,
        sizes: Sequence[float] = (128, 256, 512),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        stride: int = 16,
    ) -> None:
        super().__init__()
        self.stride = int(stride)
        self.register_buffer(
            "base", base_anchors(sizes, ratios, stride), persistent=False
        )
        self._cache: dict[tuple[int, int, torch.device, torch.dtype], Tensor] = {}

    @property
    def num_anchors(self) -> int:
        return int(self.base.shape[0])

    def forward(
        self,
        height: int,
        width: int,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        key = (int(height), int(width), torch.device(device), dtype)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        sx = torch.arange(width, device=device, dtype=torch.float32) * self.stride
        sy = torch.arange(height, device=device, dtype=torch.float32) * self.stride
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
        anchors = (shifts + self.base.to(device)[None]).reshape(-1, 4).to(dtype)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = anchors
        return anchors

    def _apply(
        self, fn, recurse=True
    ):  # .to(device) / .half(): drop anchors cached for the old ones
        self._cache = {}
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, num_anchors={self.num_anchors}"
