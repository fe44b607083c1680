"""Style as statistics of feature maps: the losses of neural style transfer.

The lecture notes call it *moment matching*: an image's style is captured by statistics of the
responses of learned filters, and a new image is made to have the same statistics.

* **Gram matrices** (second moments, uncentred): Gatys, Ecker & Bethge, "Image Style Transfer
  Using Convolutional Neural Networks", CVPR 2016, eq. 3-5. For a layer with ``C`` maps of ``M =
  H*W`` positions, ``G = F F^T / M`` and the layer's loss is the mean of ``(G - A)^2`` over the ``C x
  C`` entries (the paper's ``1 / (4 C^2 M^2) sum (G_raw - A_raw)^2`` times 4; the constant goes into
  the style weight).
* **Mean and standard deviation per channel** (first and second central moments): the statistics
  AdaIN aligns (Huang & Belongie, "Arbitrary Style Transfer in Real-time with Adaptive Instance
  Normalization", ICCV 2017, eq. 8 and 11). The layer's loss is ``mean((mu_g - mu_s)^2) +
  mean((sigma_g - sigma_s)^2)`` over the channels; the paper sums unsquared L2 norms, squared
  terms keep the loss smooth at its minimum (L-BFGS) and on the Gram loss's scale.

Layers are summed with weights (Gatys's ``w_l``; by default ``1 / L`` each). ``content_loss`` is the
mean squared difference of feature maps (Gatys eq. 1, up to a constant), ``total_variation`` the mean
absolute difference of neighbouring pixels (an anisotropic TV prior as in Mahendran & Vedaldi,
"Understanding Deep Image Representations by Inverting Them", CVPR 2015, with beta = 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from convision.errors import ConfigError

__all__ = [
    "STYLE_LOSSES",
    "content_loss",
    "gram_matrix",
    "moments",
    "style_loss",
    "style_targets",
    "total_variation",
]

STYLE_LOSSES = ("gram", "moments")
EPS = 1e-5  # added to the variance before the square root (AdaIN's epsilon)


def gram_matrix(features: Tensor) -> Tensor:
    """``[N, C, H, W] -> [N, C, C]``: ``F F^T / (H W)``, the channels' mean products over positions."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def moments(features: Tensor) -> tuple[Tensor, Tensor]:
    """``[N, C, H, W] -> (mean [N, C], std [N, C])`` over positions (biased variance + ``EPS``)."""
    mean = features.mean(dim=(2, 3))
    var = features.var(dim=(2, 3), unbiased=False)
    return mean, torch.sqrt(var + EPS)


def style_targets(
    features: Mapping[str, Tensor], kind: str = "gram"
) -> dict[str, tuple[Tensor, ...]]:
    """The style image's statistics per layer (computed once, then matched every step)."""
    _check_kind(kind)
    if kind == "gram":
        return {k: (gram_matrix(v).detach(),) for k, v in features.items()}
    return {k: tuple(t.detach() for t in moments(v)) for k, v in features.items()}


def style_loss(
    features: Mapping[str, Tensor],
    targets: Mapping[str, Sequence[Tensor]],
    kind: str = "gram",
    weights: Mapping[str, float] | None = None,
) -> Tensor:
    """``sum_l w_l E_l`` over the layers of ``targets`` (see the module notes); ``weights`` default ``1/L``."""
    _check_kind(kind)
    total = features[next(iter(targets))].new_zeros(())
    for name, target in targets.items():
        w = 1.0 / len(targets) if weights is None else float(weights[name])
        if kind == "gram":
            loss = (gram_matrix(features[name]) - target[0]).pow(2).mean()
        else:
            mean, std = moments(features[name])
            loss = (mean - target[0]).pow(2).mean() + (std - target[1]).pow(2).mean()
        total = total + w * loss
    return total


def content_loss(
    features: Mapping[str, Tensor], targets: Mapping[str, Tensor]
) -> Tensor:
    """Mean squared difference of the feature maps, averaged over the content layers."""
    losses = [(features[k] - t).pow(2).mean() for k, t in targets.items()]
    return torch.stack(losses).mean()


def total_variation(image: Tensor) -> Tensor:
    """Mean ``|x[i+1, j] - x[i, j]| + |x[i, j+1] - x[i, j]|`` of ``[N, C, H, W]``."""
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return dx + dy


def _check_kind(kind: str) -> None:
    if kind not in STYLE_LOSSES:
        raise ConfigError(
            f"style_loss: expected {' | '.join(STYLE_LOSSES)}, got {kind!r}"
        )
