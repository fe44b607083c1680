"""segmentation_cross_entropy: FCN's per-pixel multinomial logistic loss with ignore and weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convision.errors import ConfigError
from convision.losses import segmentation_cross_entropy


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 5, 6, generator=g, requires_grad=True)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    return logits, target


def test_equals_mean_cross_entropy_without_ignored_pixels():
    logits, target = _batch()
    assert _f(segmentation_cross_entropy(logits, target)) == pytest.approx(
        _f(F.cross_entropy(logits, target))
    )


def test_mean_is_over_non_ignored_pixels_only():
    logits, target = _batch()
    target[0, :2] = 255
    per_pixel = F.cross_entropy(logits, target.clamp(max=3), reduction="none")
    valid = target != 255
    expected = per_pixel[valid].mean()
    assert _f(segmentation_cross_entropy(logits, target)) == pytest.approx(
        _f(expected), rel=1e-6
    )


def test_class_weights_tensor_or_list_give_weighted_mean():
    logits, target = _batch(1)
    target[1, 0] = 255
    weights = [0.5, 1.0, 2.0, 4.0]
    expected = F.cross_entropy(
        logits, target, weight=torch.tensor(weights), ignore_index=255
    )
    assert _f(segmentation_cross_entropy(logits, target, weights)) == pytest.approx(
        _f(expected), rel=1e-6
    )
    got = segmentation_cross_entropy(logits, target, torch.tensor(weights))
    assert _f(got) == pytest.approx(_f(expected), rel=1e-6)
    # and it differs from the unweighted loss, so the weights were used
    assert abs(_f(segmentation_cross_entropy(logits, target)) - _f(expected)) > 1e-3


def test_wrong_number_of_class_weights_is_a_config_error():
    logits, target = _batch()
    with pytest.raises(
        ConfigError, match="class_weights: 3 weights given for 4 classes"
    ):
        segmentation_cross_entropy(logits, target, [1.0, 1.0, 1.0])


def test_all_ignored_batch_gives_zero_with_a_graph():
    logits, target = _batch()
    target[:] = 255
    loss = segmentation_cross_entropy(logits, target)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() == 0
    logits.grad = None
    loss = segmentation_cross_entropy(logits, target, [1.0, 2.0, 3.0, 4.0])
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_gradient_matches_torch_cross_entropy():
    logits, target = _batch(2)
    target[0, 0, 0] = 255
    segmentation_cross_entropy(logits, target).backward()
    ours = logits.grad.clone()
    logits.grad = None
    F.cross_entropy(logits, target, ignore_index=255).backward()
    assert torch.allclose(ours, logits.grad, atol=1e-7)
