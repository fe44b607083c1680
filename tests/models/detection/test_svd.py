"""Truncated SVD of the RoI head's fc layers (Fast R-CNN §3.1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convision.errors import ConfigError
from convision.models import build_model
from convision.models.detection.svd import factorize_linear, truncated_svd_


def test_full_rank_factorization_is_exact_and_low_rank_is_the_best_approximation() -> (
    None
):
    torch.manual_seed(0)
    layer = nn.Linear(40, 12)
    x = torch.randn(5, 40)
    full = factorize_linear(layer, 12)
    assert torch.allclose(full(x), layer(x), atol=1e-5)
    assert full[0].bias is None and torch.equal(
        full[1].bias, layer.bias
    )  # the paper: no bias, then the original one
    low = factorize_linear(layer, 4)
    assert low[0].weight.shape == (4, 40) and low[1].weight.shape == (12, 4)
    # Eckart-Young: the rank-4 error equals the norm of the discarded singular values
    s = torch.linalg.svdvals(layer.weight.double())
    err = torch.linalg.matrix_norm(
        (low[1].weight @ low[0].weight - layer.weight).double()
    )
    assert torch.isclose(err, s[4:].norm(), rtol=1e-4)


def test_faster_rcnn_head_factorized_in_place_keeps_the_detections_close() -> None:
    torch.manual_seed(0)
    model = build_model(
        "faster_rcnn",
        num_classes=3,
        backbone="resnet18",
        weights=None,
        head_dim=64,
        anchor_sizes=[16, 32, 64],
    ).eval()
    images = [torch.rand(3, 96, 96)]
    with torch.no_grad():
        feats = model.body(model.prepare(images)[0])
        rois = torch.tensor([[0, 4.0, 4.0, 60.0, 70.0], [0, 20.0, 10.0, 90.0, 50.0]])
        pooled = model.roi_heads.pooler(feats, rois)
        before = model.roi_heads.box_head(pooled)
        truncated_svd_(model, (64, 64))  # full rank: same function
        after = model.roi_heads.box_head(pooled)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(before, after))
    linear = [
        m for m in model.roi_heads.box_head.body.modules() if isinstance(m, nn.Linear)
    ]
    assert len(linear) == 4
    with torch.no_grad():
        truncated_svd_(
            build_model(
                "faster_rcnn",
                num_classes=3,
                backbone="resnet18",
                weights=None,
                head_dim=64,
            ),
            (8,),
        )
    with pytest.raises(ConfigError):
        factorize_linear(nn.Linear(10, 5), 6)
    with pytest.raises(ConfigError):
        truncated_svd_(nn.Linear(3, 3))
