"""Zeiler & Fergus's deconvnet against hand computations, max_unpool2d and the backward rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convision.inspect import (
    DeconvNet,
    plain_stack,
    pool_with_switches,
    project_activation,
    unpool,
)


def test_one_layer_projection_is_the_hand_computed_transpose():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    net = DeconvNet([conv, nn.ReLU()])
    x = torch.randn(1, 2, 9, 9)
    act = net(x)
    assert act.shape == (1, 3, 5, 5)
    signal = torch.zeros_like(act)
    signal[0, 1, 2, 3] = 2.5
    signal[0, 2, 0, 4] = -1.0  # the deconvnet's ReLU removes it
    got = net.project(signal)[0].numpy()

    # by hand: the output position (i, j) of a stride-2, padding-1 3x3 filter reads input rows
    # 2i-1 .. 2i+1 and columns 2j-1 .. 2j+1; its transpose writes 2.5 * the filter there
    w = conv.weight.detach().numpy()
    want = np.zeros((2, 11, 11))  # padded by 1 on each side
    i, j = 2, 3
    want[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] += 2.5 * w[1]
    np.testing.assert_allclose(got, want[:, 1:10, 1:10], atol=1e-6)


def test_switches_reproduce_max_unpool2d():
    x = torch.tensor(
        [
            [1.0, 5.0, 2.0, 0.0],
            [3.0, 4.0, 8.0, 1.0],
            [0.0, 9.0, 6.0, 7.0],
            [2.0, 1.0, 3.0, 2.0],
        ]
    )[None, None]
    pool = nn.MaxPool2d(2)
    out, switches = pool_with_switches(x, pool)
    assert out.flatten().tolist() == [5.0, 8.0, 9.0, 7.0]
    assert switches.flatten().tolist() == [1, 6, 9, 11]  # flat positions of the maxima
    y = torch.tensor([[10.0, 20.0], [30.0, 40.0]])[None, None]
    mine = unpool(y, switches, pool, x.shape)
    assert torch.equal(mine, F.max_unpool2d(y, switches, 2, output_size=x.shape[-2:]))
    assert (
        mine[0, 0, 0, 1] == 10 and mine[0, 0, 1, 2] == 20 and mine.count_nonzero() == 4
    )
    # on random maps with an odd size (the last row and column are never a maximum)
    z = torch.randn(2, 3, 9, 9)
    out, switches = pool_with_switches(z, pool)
    assert torch.equal(
        unpool(out, switches, pool, z.shape),
        F.max_unpool2d(out, switches, 2, output_size=z.shape[-2:]),
    )


def _stack() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 6, 5, stride=2, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2),  # overlapping, as AlexNet's
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 4, 3, padding=1),
    ).eval()


def test_explicit_deconvnet_equals_the_backward_rule():
    model = _stack()
    x = torch.randn(1, 3, 37, 37)
    layers = plain_stack(model, x, "6")
    assert layers is not None and len(layers) == 7
    net = DeconvNet(layers)
    act = net(x)
    signal = torch.zeros_like(act)
    flat = int(act[0, 2].argmax())
    signal[0, 2, flat // act.shape[-1], flat % act.shape[-1]] = act[0, 2].max()
    explicit = net.project(signal)
    rule = project_activation(model, x, "6", 2, mode="deconvnet")
    assert explicit.abs().sum() > 0
    torch.testing.assert_close(rule, explicit, atol=1e-5, rtol=1e-5)


def test_rules_differ_as_the_papers_say():
    model = _stack()
    x = torch.randn(1, 3, 37, 37)
    grad = project_activation(model, x, "3", 1, mode="gradient")
    xr = x.clone().requires_grad_(True)
    act = model[:4](xr)
    pos = divmod(int(act[0, 1].argmax()), act.shape[-1])
    (want,) = torch.autograd.grad(
        act[0, 1, pos[0], pos[1]] * act[0, 1].max().detach(), xr
    )
    torch.testing.assert_close(grad, want)  # the plain rule is the true gradient
    # without pooling between them (a pooling switch sits where the ReLU was active anyway),
    # guided backprop masks the signal where the deconvnet does not, and rectifies it where the
    # gradient does not
    torch.manual_seed(2)
    convs = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)
    ).eval()
    x = torch.randn(1, 3, 16, 16)
    modes = {
        m: project_activation(convs, x, "4", 0, mode=m)
        for m in ("gradient", "guided", "deconvnet")
    }
    assert not torch.allclose(modes["guided"], modes["gradient"])
    assert not torch.allclose(modes["guided"], modes["deconvnet"])


def test_residual_networks_are_not_plain_stacks():
    import torchvision

    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    assert (
        plain_stack(model, x, "layer1.1.conv1") is None
    )  # after the first residual sum
    assert len(plain_stack(model, x, "layer1.0.conv2")) == 8  # before it: a plain chain
    out = project_activation(model, x, "layer1.1.conv1", 0)
    assert out.shape == x.shape and out.abs().sum() > 0
    with pytest.raises(ValueError, match="Conv2d / ReLU / MaxPool2d"):
        DeconvNet([nn.Linear(2, 2)])
