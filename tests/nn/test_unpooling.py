"""Unpooling: nearest, bed of nails, max unpooling with the pooling switches; ONNX export of all three."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from convision.nn import (
    MaxPoolWithIndices,
    MaxUnpool,
    bed_of_nails_unpool,
    nearest_unpool,
)
from tests.helpers import onnx_outputs

X = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)


def test_nearest_unpool():
    out = nearest_unpool(X)
    assert out[0, 0].tolist() == [
        [1, 1, 2, 2],
        [1, 1, 2, 2],
        [3, 3, 4, 4],
        [3, 3, 4, 4],
    ]
    x = torch.randn(2, 3, 5, 4)
    assert torch.equal(
        nearest_unpool(x, 3), F.interpolate(x, scale_factor=3, mode="nearest")
    )


def test_bed_of_nails_unpool():
    assert bed_of_nails_unpool(X)[0, 0].tolist() == [
        [1, 0, 2, 0],
        [0, 0, 0, 0],
        [3, 0, 4, 0],
        [0, 0, 0, 0],
    ]
    assert bed_of_nails_unpool(X, position=(1, 1))[0, 0].tolist() == [
        [0, 0, 0, 0],
        [0, 1, 0, 2],
        [0, 0, 0, 0],
        [0, 3, 0, 4],
    ]
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    out = bed_of_nails_unpool(x, 3, (2, 1))
    assert out.shape == (2, 3, 12, 15)
    assert torch.equal(out[..., 2::3, 1::3], x.detach())
    assert out.abs().sum().item() == pytest.approx(
        x.abs().sum().item(), rel=1e-6
    )  # zeros elsewhere
    # it is a stride-3 transposed convolution with a one-hot 3x3 kernel
    k = torch.zeros(3, 1, 3, 3)
    k[:, 0, 2, 1] = 1
    assert torch.allclose(out, F.conv_transpose2d(x, k, stride=3, groups=3))
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    with pytest.raises(ValueError):
        bed_of_nails_unpool(X, 2, (2, 0))


def test_max_unpool_puts_values_back_where_the_maxima_were():
    x = torch.tensor(
        [
            [1.0, 5.0, 2.0, 0.0],
            [3.0, 2.0, 1.0, 7.0],
            [0.0, 0.0, 4.0, 1.0],
            [9.0, 1.0, 2.0, 3.0],
        ]
    ).view(1, 1, 4, 4)
    y, idx = MaxPoolWithIndices(2)(x)
    assert y[0, 0].tolist() == [[5, 7], [9, 4]]
    assert idx[0, 0].tolist() == [[1, 7], [12, 10]]  # flat positions in the 4x4 plane
    up = MaxUnpool(2)(y, idx, output_size=x.shape)
    assert up[0, 0].tolist() == [[0, 5, 0, 0], [0, 0, 0, 7], [0, 0, 4, 0], [9, 0, 0, 0]]
    # odd size comes back exactly with output_size
    x = torch.randn(2, 3, 7, 9)
    y, idx = MaxPoolWithIndices(2)(x)
    up = MaxUnpool(2)(y, idx, output_size=x.shape[-2:])
    assert up.shape == x.shape
    assert torch.equal(up, nn.MaxUnpool2d(2)(y, idx, output_size=x.shape[-2:]))
    kept = up != 0
    assert int(kept.sum()) == y.numel() and torch.equal(up[kept], x[kept])


class _AllUnpools(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = MaxPoolWithIndices(2)
        self.unpool = MaxUnpool(2)

    def forward(self, x):
        y, idx = self.pool(x)
        return (
            self.unpool(y, idx, output_size=x.shape[-2:]),
            nearest_unpool(y),
            bed_of_nails_unpool(y, 2, (1, 0)),
        )


def test_onnx_export_and_onnxruntime():
    model = _AllUnpools().eval()
    x2 = torch.randn(1, 2, 9, 7)
    got = onnx_outputs(model, (torch.randn(1, 2, 9, 7),), (x2,))
    for a, b in zip(got, model(x2)):
        assert a.shape == tuple(b.shape)
        assert torch.allclose(torch.from_numpy(a), b)
