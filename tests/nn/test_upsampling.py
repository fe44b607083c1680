from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from convision.nn import BilinearUpsample, bilinear_filter, bilinear_kernel


def test_bilinear_filter_matches_reference_upsample_filt():
    # fcn.berkeleyvision.org surgery.upsample_filt(4): 1-D profile [0.25, 0.75, 0.75, 0.25]
    f4 = bilinear_filter(4)
    assert torch.allclose(f4[0], torch.tensor([0.25, 0.75, 0.75, 0.25]) * 0.25)
    assert torch.allclose(
        f4,
        torch.outer(
            torch.tensor([0.25, 0.75, 0.75, 0.25]),
            torch.tensor([0.25, 0.75, 0.75, 0.25]),
        ),
    )
    # odd size: peak 1 at the centre
    f3 = bilinear_filter(3)
    assert f3[1, 1] == 1.0 and torch.allclose(f3[0], torch.tensor([0.25, 0.5, 0.25]))


@pytest.mark.parametrize("k", [4, 16, 32, 64])
def test_bilinear_kernel_properties(k):
    w = bilinear_kernel(5, k)
    assert w.shape == (5, 5, k, k)
    off_diag = ~torch.eye(5, dtype=torch.bool)
    assert w[off_diag].abs().sum() == 0
    for c in range(5):
        assert torch.equal(w[c, c], bilinear_filter(k))
    f = bilinear_filter(k)
    assert (
        torch.equal(f, f.T) and torch.equal(f, f.flip(0)) and torch.equal(f, f.flip(1))
    )
    # the stride-(k/2) polyphase components each sum to 1 (partition of unity)
    s = k // 2
    phases = torch.stack([f[i::s, j::s].sum() for i in range(s) for j in range(s)])
    assert torch.allclose(phases, torch.ones_like(phases))


@pytest.mark.parametrize("factor", [2, 3, 4, 8, 16, 32])
def test_aligned_output_size_and_constant_interior(factor):
    up = BilinearUpsample(3, factor)
    x = torch.ones(1, 3, 5, 7)
    y = up(x)
    assert y.shape == (1, 3, 5 * factor, 7 * factor)
    b = factor // 2
    interior = y[..., b : y.shape[-2] - b, b : y.shape[-1] - b]
    assert torch.allclose(interior, torch.ones_like(interior))
    # the border is darker (zeros outside the map), not wrong in size
    assert y[..., 0, 0].max() < 1


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_aligned_equals_interpolate_half_pixel_in_interior(factor):
    torch.manual_seed(0)
    up = BilinearUpsample(4, factor)
    x = torch.randn(2, 4, 6, 9)
    y = up(x)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    b = factor // 2
    assert torch.allclose(y[..., b:-b, b:-b], ref[..., b:-b, b:-b], atol=1e-5)
    # ... and only there: the outer f//2 rows differ (zero padding vs edge replication)
    assert not torch.allclose(y[..., :b, :], ref[..., :b, :], atol=1e-3)
    # align_corners=True is a different convention and does not match
    ref_ac = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=True)
    assert not torch.allclose(y[..., b:-b, b:-b], ref_ac[..., b:-b, b:-b], atol=1e-3)


def test_unaligned_is_the_caffe_layer():
    up = BilinearUpsample(2, 32, aligned=False)
    assert up.kernel_size == (64, 64) and up.stride == (32, 32) and up.padding == (0, 0)
    assert up(torch.zeros(1, 2, 3, 4)).shape == (1, 2, (3 + 1) * 32, (4 + 1) * 32)


def test_frozen_vs_learnable():
    frozen = BilinearUpsample(3, 2)
    learn = BilinearUpsample(3, 2, learnable=True)
    assert frozen.bias is None and learn.bias is None
    assert not frozen.weight.requires_grad and learn.weight.requires_grad
    assert not frozen.learnable and learn.learnable
    assert torch.equal(frozen.weight, learn.weight)
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    (frozen(x).sum() + learn(x).sum()).backward()
    assert frozen.weight.grad is None
    assert learn.weight.grad is not None and learn.weight.grad.abs().sum() > 0
    assert (
        x.grad is not None and x.grad.abs().sum() > 0
    )  # gradients pass through a frozen layer
    # still a parameter: saved and restored with the state dict
    assert "weight" in frozen.state_dict()


@pytest.mark.parametrize("factor", [2, 3, 8, 32])
def test_grids_put_samples_at_the_right_pixels(factor):
    # bilinear interpolation reproduces a linear ramp exactly, so the ramp reveals the geometry
    n = 6
    ramp = torch.arange(float(n)).view(1, 1, 1, n).expand(1, 1, 3, n).contiguous()
    u = torch.arange(float(n * factor))
    row = 3 * factor // 2  # a middle row, clear of the top/bottom border

    centre = BilinearUpsample(1, factor, grid="center")(ramp)
    assert centre.shape == (1, 1, 3 * factor, n * factor)
    b = factor // 2
    # cell i centred on pixel f*i + (f-1)/2  <=>  value at pixel u is (u + 0.5)/f - 0.5
    assert torch.allclose(
        centre[0, 0, row, b : n * factor - b],
        ((u + 0.5) / factor - 0.5)[b : n * factor - b],
        atol=1e-5,
    )

    layer = BilinearUpsample(1, factor, grid="corner")
    assert (
        layer.kernel_size[0] == 2 * factor - 1
        and layer.padding[0] == layer.output_padding[0] == factor - 1
    )
    corner = layer(ramp)
    assert corner.shape == (1, 1, 3 * factor, n * factor)
    last = factor * (n - 1) + 1
    # cell i on pixel f*i  <=>  value at pixel u is u/f, up to the last sample
    assert torch.allclose(corner[0, 0, row, :last], u[:last] / factor, atol=1e-5)
    assert corner[0, 0, row, last:].max() < n - 1  # fades after the last sample


def test_corner_grid_composes_exactly():
    # the knots of the coarse map are samples of the finer one: 2x then 16x == 32x
    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, 7)
    direct = BilinearUpsample(4, 32, grid="corner")(x)
    staged = BilinearUpsample(4, 16, grid="corner")(
        BilinearUpsample(4, 2, grid="corner")(x)
    )
    assert torch.allclose(direct, staged, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="grid"):
        BilinearUpsample(2, 2, grid="middle")
    with pytest.raises(ValueError, match="factor"):
        BilinearUpsample(2, 0)
