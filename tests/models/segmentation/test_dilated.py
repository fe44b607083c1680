"""Yu & Koltun's dilated front-end and context module: geometry, identity initialisation, 67x67
receptive field, any input size, CLI training + convision.load, ONNX export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convision
import convision.tasks.segment
from convision.errors import ConfigError
from convision.models import MODELS, build_model
from convision.models.segmentation.dilated import (
    CONTEXT_DILATIONS,
    ContextModule,
    DilatedNet,
)
from tests.helpers import assert_onnx_matches, train_segment_tiny

TINY = {
    "num_classes": 3,
    "weights": None,
    "context": "large",
    "fc_channels": 16,
    "backbone": "vgg16",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`convision segment train --model dilated` for one step; the CLI has no width flag, so the
    builder arguments it chooses are swapped for narrow fc6/fc7 (fc_channels=16)."""
    out = train_segment_tiny(
        tmp_path_factory.mktemp("dilated"),
        "dilated",
        "--backbone",
        "vgg16",
        fc_channels=16,
    )
    return out, convision.load(out / "last.pt")


def test_frontend_geometry():
    with torch.device("meta"):
        model = build_model("dilated", num_classes=21).eval()
    assert isinstance(model, DilatedNet) and MODELS["dilated"].__name__ == "dilated"
    assert (
        sum(isinstance(m, nn.MaxPool2d) for m in model.frontend) == 3
    )  # pool4, pool5 removed
    convs = [m for m in model.frontend if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert [c.dilation[0] for c in convs] == [1] * 10 + [2, 2, 2]  # conv5 dilated by 2
    assert (
        model.fc6.kernel_size == (7, 7)
        and model.fc6.dilation == (4, 4)
        and model.fc6.out_channels == 4096
    )
    assert model.fc7.kernel_size == (1, 1) and model.final.out_channels == 21
    assert (
        list(model.frontend._modules)[-1] == "29"
        and "23" not in model.frontend._modules
    )  # torchvision names
    assert model.scores(torch.empty(1, 3, 64, 96, device="meta")).shape == (
        1,
        21,
        8,
        12,
    )  # stride 8
    for size in [(1, 1), (5, 7), (31, 65), (97, 131), (500, 500)]:
        assert model(torch.empty(1, 3, *size, device="meta")).shape == (1, 21, *size), (
            size
        )
    with pytest.raises(ConfigError, match="context"):
        build_model("dilated", num_classes=3, context="huge", fc_channels=8)


def test_mobilenet_frontend_keeps_stride_8_and_learns():
    """The front-end on MobileNetV2: stride 8 by dilation (no stride-2 convolution after stride 8,
    depthwise dilations 2 and 4), any input size, and a few steps lower the loss."""
    torch.manual_seed(0)
    model = build_model(
        "dilated", num_classes=3, backbone="mobilenet_v2", context="basic"
    )
    strided = [
        m
        for m in model.frontend.modules()
        if isinstance(m, nn.Conv2d) and m.stride == (2, 2)
    ]
    assert len(strided) == 3  # stem, features[2], features[4]: strides 2, 4, 8
    dilations = [
        m.dilation[0]
        for m in model.frontend[7:18].modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    assert dilations == [2] * 7 + [4] * 4
    assert model.fc6 is None and model.final.in_channels == 1280
    assert model.scores(torch.zeros(1, 3, 64, 96)).shape == (1, 3, 8, 12)
    assert model(torch.zeros(1, 3, 37, 29)).shape == (1, 3, 37, 29)
    x = nn.functional.interpolate(
        torch.randn(4, 3, 4, 4), scale_factor=8
    )  # 8x8 blocks: fits stride 8
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    with pytest.raises(ConfigError, match="backbone"):
        build_model("dilated", num_classes=3, backbone="resnet18")


def test_context_module_table_and_identity_initialisation():
    torch.manual_seed(0)
    basic, large = ContextModule(5, "basic"), ContextModule(5, "large")
    for module, widths in (
        (basic, [5] * 8),
        (large, [10, 10, 20, 40, 80, 160, 160, 5]),
    ):
        convs = [m for m in module.layers if isinstance(m, nn.Conv2d)]
        assert [c.out_channels for c in convs] == widths
        assert [c.dilation[0] for c in convs] == list(CONTEXT_DILATIONS)
        assert [c.kernel_size[0] for c in convs] == [3] * 7 + [1]
        assert sum(isinstance(m, nn.ReLU) for m in module.layers) == 7
    x = torch.randn(2, 5, 20, 24)
    with torch.no_grad():
        assert torch.equal(
            basic(x), torch.relu(x)
        )  # identity up to the first truncation
        out = large(x)
    assert (out - torch.relu(x)).abs().max() < 0.05 and not torch.equal(
        out, torch.relu(x)
    )  # identity + small noise


def test_context_receptive_field_is_67():
    module = ContextModule(1, "basic")
    for m in module.layers:
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 0.1)
    x = torch.rand(1, 1, 81, 81, requires_grad=True)
    module(x)[0, 0, 40, 40].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (67, 67)


def test_cli_train_then_load(trained):
    out, model = trained
    # the checkpoint stores the arguments the CLI chose; the builder's defaults fill in the rest
    assert (
        model.spec["name"] == "dilated" and model.spec["kwargs"].items() <= TINY.items()
    )
    assert model.context_kind == "large" and model.fc6.out_channels == 16
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert all(
        torch.equal(v, ckpt["state_dict"][k]) for k, v in model.state_dict().items()
    )
    fresh = ContextModule(3, "large")
    assert not torch.allclose(
        model.context.layers[0].bias, fresh.layers[0].bias
    )  # moved from zero
    with torch.no_grad():
        y = model(torch.randn(1, 3, 37, 29))
    assert y.shape == (1, 3, 37, 29) and torch.isfinite(y).all()


def test_onnx_export_matches_pytorch(trained):
    assert_onnx_matches(trained[1].eval(), torch.randn(1, 3, 40, 32))
