"""Losses.

Segmentation uses the per-pixel multinomial logistic loss of FCN (Long, Shelhamer & Darrell,
"Fully Convolutional Networks for Semantic Segmentation", CVPR 2015, sec. 4): a softmax
cross-entropy at every pixel, averaged over the pixels that are not ignored.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from convision.errors import ConfigError


def segmentation_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weights: torch.Tensor | Sequence[float] | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Mean per-pixel cross-entropy of ``logits[N,C,H,W]`` against ``target[N,H,W]``.

    Pixels equal to ``ignore_index`` do not count. With ``class_weights`` the mean is weighted
    (sum_i w[y_i] l_i / sum_i w[y_i], as ``F.cross_entropy``). A batch whose pixels are all
    ignored gives 0, still connected to the graph, instead of NaN.
    """
    num_classes = logits.shape[1]
    target = target.long()
    valid = target != ignore_index
    weight = None
    if class_weights is not None:
        weight = torch.as_tensor(class_weights, device=logits.device).to(logits.dtype)
        if weight.ndim != 1 or weight.numel() != num_classes:
            raise ConfigError(
                f"class_weights: {weight.numel()} weights given for {num_classes} classes"
            )
        # weight of each valid pixel's class, summed in fp32; ignored pixels get 0
        # (the clamp only keeps their index legal)
        denom = (weight.float()[target.clamp(0, num_classes - 1)] * valid).sum()
    else:
        denom = valid.sum()
    loss_sum = F.cross_entropy(
        logits, target, weight=weight, ignore_index=ignore_index, reduction="sum"
    )
    # denom == 0 only when every pixel is ignored (or weighs 0); then loss_sum == 0 with zero gradient
    return loss_sum.float() / denom.float().clamp_min(1e-12)
