"""The image patches that most excite one channel (Zeiler & Fergus 2014, figure 2's right halves):
for every image of a folder, the channel's strongest activation and the receptive field of that
position cropped from the image; the top ones by activation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from convision.data.io import read_image
from convision.inspect.network import Network, preprocess
from convision.inspect.saliency import layer_output
from convision.nn.receptive_field import summarize
from convision.tasks.base import expand_inputs

__all__ = ["Patch", "receptive_box", "top_patches"]


@dataclass
class Patch:
    """``image`` cropped to ``box`` (``top, left, bottom, right`` in the resized image) where
    ``channel`` of the layer reached ``activation``."""

    path: str
    activation: float
    position: tuple[int, int]
    box: tuple[int, int, int, int]
    crop: np.ndarray


def receptive_box(
    position: tuple[int, int],
    field: Sequence[float],
    stride: Sequence[float],
    shape: Sequence[int],
) -> tuple[int, int, int, int]:
    """The input window of a map position: centred at ``(i + 0.5) * stride`` with the side of the
    theoretical receptive field (:mod:`convision.nn.receptive_field`), clipped to ``shape``
    (``H, W``)."""
    box = []
    for a in range(2):
        centre = (position[a] + 0.5) * float(stride[a])
        half = float(field[a]) / 2
        lo = max(0, int(round(centre - half)))
        hi = min(int(shape[a]), int(round(centre + half)))
        box.append((lo, max(hi, lo + 1)))
    return box[0][0], box[1][0], box[0][1], box[1][1]


@torch.no_grad()
def top_patches(
    net: Network,
    layer: str,
    channel: int,
    images: str | Path | Sequence[str | Path],
    k: int = 9,
) -> list[Patch]:
    """One patch per image (at the channel's maximum), the ``k`` strongest first."""
    info = next(
        (
            row
            for row in summarize(net.module, (3, net.size, net.size))
            if row.name == layer
        ),
        None,
    )
    if info is None or info.receptive_field is None:
        field, stride = (net.size, net.size), (net.size, net.size)
    else:
        field, stride = info.receptive_field, info.stride
    found = []
    for path in expand_inputs(images):
        shown, x = preprocess(read_image(path), net)
        act = layer_output(net.module, x, layer)[0, channel]
        flat = int(act.argmax())
        pos = divmod(flat, act.shape[-1])
        box = receptive_box(pos, field, stride, shown.shape[:2])
        crop = shown[box[0] : box[2], box[1] : box[3]]
        found.append(Patch(str(path), float(act.max()), pos, box, crop))
    found.sort(key=lambda p: -p.activation)
    return found[:k]
