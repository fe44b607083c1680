"""Style losses against a direct numpy computation of the papers' formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convision.errors import ConfigError
from convision.nn.style_loss import (
    EPS,
    content_loss,
    gram_matrix,
    moments,
    style_loss,
    style_targets,
    total_variation,
)

torch.set_num_threads(1)


def _maps(seed: int, shape) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.rand(shape, generator=g, dtype=torch.float64),
        "b": torch.randn((2, 3, 4, 6), generator=g, dtype=torch.float64),
    }


def _np_gram(f: np.ndarray) -> np.ndarray:
    n, c, h, w = f.shape
    out = np.zeros((n, c, c))
    for k in range(n):  # G_ij = sum_positions F_i F_j / M  (Gatys eq. 3, divided by M)
        for i in range(c):
            for j in range(c):
                out[k, i, j] = np.sum(f[k, i] * f[k, j]) / (h * w)
    return out


def test_gram_loss_equals_numpy():
    gen, sty = _maps(0, (2, 4, 5, 3)), _maps(1, (2, 4, 5, 3))
    g = gram_matrix(gen["a"]).numpy()
    assert np.allclose(g, _np_gram(gen["a"].numpy()))
    targets = style_targets(sty, "gram")
    weights = {"a": 0.3, "b": 2.0}
    got = float(style_loss(gen, targets, "gram", weights))
    expected = sum(
        weights[k] * np.mean((_np_gram(gen[k].numpy()) - _np_gram(sty[k].numpy())) ** 2)
        for k in ("a", "b")
    )
    assert got == pytest.approx(expected, rel=1e-10)
    # default layer weights: 1/L each
    default = float(style_loss(gen, targets, "gram"))
    assert default == pytest.approx(
        sum(
            0.5 * np.mean((_np_gram(gen[k].numpy()) - _np_gram(sty[k].numpy())) ** 2)
            for k in "ab"
        ),
        rel=1e-10,
    )


def test_moment_loss_equals_numpy():
    gen, sty = _maps(2, (1, 3, 4, 4)), _maps(3, (1, 3, 4, 4))
    mean, std = moments(gen["b"])
    f = gen["b"].numpy()
    assert np.allclose(mean.numpy(), f.mean(axis=(2, 3)))
    assert np.allclose(std.numpy(), np.sqrt(f.var(axis=(2, 3)) + EPS))

    def stats(x):
        return x.mean(axis=(2, 3)), np.sqrt(x.var(axis=(2, 3)) + EPS)

    expected = 0.0
    for k, w in (("a", 0.5), ("b", 0.5)):
        mg, sg = stats(gen[k].numpy())
        ms, ss = stats(sty[k].numpy())
        expected += w * (np.mean((mg - ms) ** 2) + np.mean((sg - ss) ** 2))
    got = float(style_loss(gen, style_targets(sty, "moments"), "moments"))
    assert got == pytest.approx(expected, rel=1e-10)
    # moments ignore where things are: a spatially shuffled map has the same statistics
    perm = torch.randperm(4 * 6)
    shuffled = {
        k: v.flatten(2)[..., perm].reshape(v.shape) if k == "b" else v
        for k, v in sty.items()
    }
    assert float(style_loss(shuffled, style_targets(sty, "moments"), "moments")) < 1e-20


def test_content_and_total_variation_equal_numpy():
    x = torch.rand(1, 3, 5, 7, dtype=torch.float64)
    a = x.numpy()
    tv = np.abs(np.diff(a, axis=2)).mean() + np.abs(np.diff(a, axis=3)).mean()
    assert float(total_variation(x)) == pytest.approx(tv, rel=1e-12)
    y = torch.rand(1, 3, 5, 7, dtype=torch.float64)
    got = float(content_loss({"c": x}, {"c": y}))
    assert got == pytest.approx(np.mean((a - y.numpy()) ** 2), rel=1e-12)


def test_unknown_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="gram | moments"):
        style_targets({"a": torch.zeros(1, 1, 2, 2)}, "mean")
