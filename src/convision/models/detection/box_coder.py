"""Box regression targets as parametrised by R-CNN (Girshick et al. 2014, appendix C).

For a reference box P (a proposal or an anchor) with centre ``(Px, Py)`` and size ``(Pw, Ph)`` and a
ground-truth box G::

    tx = (Gx - Px) / Pw     ty = (Gy - Py) / Ph     tw = log(Gw / Pw)     th = log(Gh / Ph)

Fast R-CNN (Girshick 2015, section 2.3) normalises the targets to zero mean and unit variance;
py-faster-rcnn does it with fixed standard deviations ``(0.1, 0.1, 0.2, 0.2)``, i.e. the targets are
multiplied by ``weights = (10, 10, 5, 5)`` here. The RPN uses ``weights = (1, 1, 1, 1)`` (Ren et al.
2015). Boxes are continuous xyxy: width ``x2 - x1`` (not py-faster-rcnn's ``+ 1`` pixel
convention). Decoding clamps ``tw``/``th`` at ``log(1000 / 16)`` so that an untrained network cannot
produce infinite boxes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
ROI_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
SIZE_CLAMP = math.log(1000.0 / 16)


def encode(
    reference: Tensor,
    gt: Tensor,
    weights: tuple[float, float, float, float] = RPN_WEIGHTS,
) -> Tensor:
    """Targets ``(tx, ty, tw, th) * weights`` that move ``reference`` (``N x 4``) onto ``gt`` (``N x 4``)."""
    pw = reference[:, 2] - reference[:, 0]
    ph = reference[:, 3] - reference[:, 1]
    px = reference[:, 0] + 0.5 * pw
    py = reference[:, 1] + 0.5 * ph
    gw = gt[:, 2] - gt[:, 0]
    gh = gt[:, 3] - gt[:, 1]
    gx = gt[:, 0] + 0.5 * gw
    gy = gt[:, 1] + 0.5 * gh
    wx, wy, ww, wh = weights
    return torch.stack(
        (
            wx * (gx - px) / pw,
            wy * (gy - py) / ph,
            ww * torch.log(gw / pw),
            wh * torch.log(gh / ph),
        ),
        dim=1,
    )


def decode(
    reference: Tensor,
    deltas: Tensor,
    weights: tuple[float, float, float, float] = RPN_WEIGHTS,
) -> Tensor:
    """Apply ``deltas`` (``N x 4``, or ``N x 4C`` for class-specific regression) to ``reference``
    (``N x 4``); returns boxes shaped like ``deltas``."""
    reference = reference.to(deltas.dtype)
    pw = reference[:, 2:3] - reference[:, 0:1]
    ph = reference[:, 3:4] - reference[:, 1:2]
    px = reference[:, 0:1] + 0.5 * pw
    py = reference[:, 1:2] + 0.5 * ph
    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=SIZE_CLAMP)
    dh = (deltas[:, 3::4] / wh).clamp(max=SIZE_CLAMP)
    cx = dx * pw + px
    cy = dy * ph + py
    w = torch.exp(dw) * pw
    h = torch.exp(dh) * ph
    boxes = torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=2)
    return boxes.reshape(deltas.shape)
