"""U-Net: the paper's network (23 convolutions, valid form 572 -> 388 and its central-region logits),
the padded form at any size, torchvision encoders with skips at strides 16..1, CLI training +
convision.load, ONNX export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convision
import convision.tasks.segment
from convision.errors import ConfigError
from convision.models import MODELS, build_model
from convision.models.segmentation.unet import (
    UNet,
    unet_valid_input_size,
    unet_valid_output_size,
)
from tests.helpers import assert_onnx_matches, train_segment_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`convision segment train --model unet --backbone none` for one step; the CLI has no width flag,
    so the builder arguments it chooses get base_channels=8."""
    out = train_segment_tiny(
        tmp_path_factory.mktemp("unet"),
        "unet",
        "--backbone",
        "none",
        scene_size=64,
        base_channels=8,
    )
    return out, convision.load(out / "last.pt")


def test_paper_network_and_valid_sizes():
    with torch.device("meta"):
        model = build_model("unet", num_classes=2, valid=True).eval()
    assert isinstance(model, UNet) and MODELS["unet"].__name__ == "unet"
    convs = [
        m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    assert len(convs) == 23  # "In total the network has 23 convolutional layers"
    assert [
        m.out_channels for m in model.encoder.modules() if isinstance(m, nn.Conv2d)
    ][::2] == [64, 128, 256, 512, 1024]
    assert all(c.padding == (0, 0) for c in convs)
    assert model(torch.empty(1, 3, 572, 572, device="meta")).shape == (
        1,
        2,
        388,
        388,
    )  # Fig. 1
    assert unet_valid_output_size(572) == 388 and unet_valid_input_size(388) == 572
    assert [unet_valid_output_size(n) for n in (188, 204, 572)] == [4, 20, 388]
    assert unet_valid_input_size(1) == 188
    with pytest.raises(ValueError, match="556 or 572"):
        unet_valid_output_size(570)
    with pytest.raises(ValueError):
        model(torch.empty(1, 3, 570, 572, device="meta"))


def test_valid_form_returns_the_central_region():
    torch.manual_seed(0)
    model = build_model("unet", num_classes=2, valid=True, base_channels=2).eval()
    x = torch.randn(1, 3, 204, 204)
    with torch.no_grad():
        full = model(x)  # 20x20: input pixels 92..111
        crop = model(
            x[..., 16:, 16:]
        )  # 188x188 shifted by 16 (the total stride): 4x4 = full's last 4x4
    assert full.shape == (1, 2, 20, 20) and crop.shape == (1, 2, 4, 4)
    assert torch.allclose(full[..., 16:, 16:], crop, atol=1e-5)


def test_padded_form_any_size_and_torchvision_encoders():
    with torch.device("meta"):
        paper = build_model("unet", num_classes=3).eval()
        encoders = {
            bb: build_model("unet", num_classes=3, backbone=bb).eval()
            for bb in ("vgg16", "mobilenet_v2", "resnet50")
        }
    for size in [(1, 1), (5, 7), (31, 65), (97, 131)]:
        assert paper(torch.empty(1, 3, *size, device="meta")).shape == (1, 3, *size), (
            size
        )
        for bb, m in encoders.items():
            assert m(torch.empty(1, 3, *size, device="meta")).shape == (1, 3, *size), (
                bb,
                size,
            )
    assert encoders["vgg16"].skip_strides == (
        16,
        8,
        4,
        2,
        1,
    )  # VGG has a stride-1 map (conv1_2)
    assert encoders["resnet50"].skip_strides == (16, 8, 4, 2, None)
    # nearest-neighbour upsampling keeps the 2048 channels of layer4; + 1024 of layer3
    assert encoders["resnet50"].decoder.blocks[0].convs[0].in_channels == 2048 + 1024
    with pytest.raises(ConfigError, match="weights"):
        build_model("unet", num_classes=3, weights="IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="valid"):
        build_model("unet", num_classes=3, backbone="resnet18", valid=True)


def test_torchvision_encoder_trains():
    torch.manual_seed(0)
    model = build_model("unet", num_classes=3, backbone="resnet18")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    before = model.encoder.stride8.conv1.weight.detach().clone()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert not torch.equal(
        before, model.encoder.stride8.conv1.weight
    )  # gradients reach the encoder


def test_cli_train_then_load(trained):
    out, model = trained
    assert model.spec["name"] == "unet"
    kwargs = model.spec["kwargs"]  # the builder's full arguments, defaults included
    assert {k: kwargs[k] for k in ("num_classes", "weights", "base_channels")} == {
        "num_classes": 3,
        "weights": None,
        "base_channels": 8,
    }
    assert kwargs["backbone"] in (None, "none") and kwargs["valid"] is False
    assert model.backbone_name is None and model.encoder.levels[0][0].out_channels == 8
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert all(
        torch.equal(v, ckpt["state_dict"][k]) for k, v in model.state_dict().items()
    )
    assert model.head.bias.abs().sum() > 0  # started at zero
    with torch.no_grad():
        y = model(torch.randn(1, 3, 45, 70))
    assert y.shape == (1, 3, 45, 70) and torch.isfinite(y).all()


def test_onnx_export_matches_pytorch(trained):
    assert_onnx_matches(trained[1].eval(), torch.randn(1, 3, 45, 70))
