"""DeconvNet: the paper's layer table, whole-image inference at any size, training through the CLI and
the engine (narrow fc6/fc7) + convision.load, ONNX export."""

from __future__ import annotations

import pytest
import torch

import convision
import convision.tasks.segment
from convision.errors import ConfigError
from convision.models import MODELS, build_model
from convision.models.segmentation.deconvnet import DECONV_WIDTHS, DeconvNet
from tests.helpers import assert_onnx_matches, train_segment_tiny

TINY = {"num_classes": 3, "weights": None, "fc_channels": 16}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`convision segment train --model deconvnet` for one step; the CLI has no width flag, so the
    builder arguments it chooses are swapped for narrow fc6/fc7 (fc_channels=16)."""
    out = train_segment_tiny(
        tmp_path_factory.mktemp("deconvnet"), "deconvnet", fc_channels=16
    )
    return out, convision.load(out / "last.pt")


def test_layers_follow_the_paper():
    with torch.device("meta"):
        model = build_model("deconvnet", num_classes=21).eval()
    assert isinstance(model, DeconvNet) and MODELS["deconvnet"].__name__ == "deconvnet"
    n = sum(p.numel() for p in model.parameters())
    assert 250e6 < n < 254e6  # "252M parameters" (paper Sec. 3.1)
    assert (
        model.fc6[0].kernel_size == (7, 7)
        and model.fc6[0].padding == (0, 0)
        and model.fc6[0].out_channels == 4096
    )
    assert model.fc7[0].kernel_size == (1, 1) and model.deconv_fc6[0].kernel_size == (
        7,
        7,
    )
    assert all(
        isinstance(s[1], torch.nn.BatchNorm2d)
        for s in (model.fc6, model.fc7, model.deconv_fc6)
    )
    widths = [
        [m.out_channels for m in s.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
        for s in model.decoder
    ]
    assert tuple(map(tuple, widths)) == DECONV_WIDTHS
    assert model.score.kernel_size == (1, 1) and model.score.out_channels == 21
    # at 224x224 pool5 is 7x7 and fc6/fc7 are 1x1, as in the paper's Table 1
    seen = {}
    model.fc7.register_forward_hook(
        lambda m, a, out: seen.__setitem__("fc7", out.shape)
    )
    model.deconv_fc6.register_forward_hook(
        lambda m, a, out: seen.__setitem__("deconv_fc6", out.shape)
    )
    assert model(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 21, 224, 224)
    assert seen == {"fc7": (1, 4096, 1, 1), "deconv_fc6": (1, 512, 7, 7)}
    for size in [
        (1, 1),
        (5, 7),
        (31, 65),
        (97, 131),
        (250, 300),
    ]:  # whole images of any size
        assert model(torch.empty(1, 3, *size, device="meta")).shape == (1, 21, *size), (
            size
        )
    with pytest.raises(ConfigError, match="fc_channels"):
        build_model("deconvnet", num_classes=3, weights="IMAGENET1K_V1", fc_channels=64)


def test_cli_train_then_load(trained):
    out, model = trained
    assert model.spec["name"] == "deconvnet" and model.spec["kwargs"] == TINY
    assert model.fc6[0].out_channels == 16
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert all(
        torch.equal(v, ckpt["state_dict"][k]) for k, v in model.state_dict().items()
    )
    assert (
        model.score.bias.abs().sum() > 0
    )  # started at zero, moved by the training step
    with torch.no_grad():
        y = model(torch.randn(1, 3, 40, 27))
    assert y.shape == (1, 3, 40, 27) and torch.isfinite(y).all()


def test_onnx_export_matches_pytorch(trained):
    assert_onnx_matches(trained[1].eval(), torch.randn(1, 3, 40, 27))
