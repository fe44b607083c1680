"""SegNet: VGG16-BN encoder, decoder upsampling with the pooling indices, any input size, CLI
training + convision.load, ONNX export (checked with onnxruntime)."""

from __future__ import annotations

import pytest
import torch
import torchvision

import convision
from convision.errors import ConfigError
from convision.models import MODELS, build_model
from convision.models.segmentation.segnet import DECODER_WIDTHS, SegNet
from tests.helpers import assert_onnx_matches, train_segment_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny CLI training run (1 epoch, 1 step of batch 2 at 32x32), then convision.load."""
    out = train_segment_tiny(tmp_path_factory.mktemp("segnet"), "segnet")
    return out, convision.load(out / "last.pt")


@pytest.fixture(scope="module")
def model(trained) -> SegNet:
    return trained[1]


def test_encoder_is_vgg16_bn_and_decoder_mirrors_it(model):
    assert MODELS["segnet"].__name__ == "segnet" and isinstance(model, SegNet)
    with torch.device("meta"):
        ref = torchvision.models.vgg16_bn()
    convs = [
        m for stage in model.encoder for m in stage if isinstance(m, torch.nn.Conv2d)
    ]
    ref_convs = [m for m in ref.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and [c.weight.shape for c in convs] == [
        c.weight.shape for c in ref_convs
    ]
    # torchvision's own layer names: a vgg16_bn state dict's features.* load into the encoder
    names = {k.split(".", 2)[2] for k in model.state_dict() if k.startswith("encoder.")}
    assert names == {
        k.split(".", 1)[1] for k in ref.state_dict() if k.startswith("features.")
    }
    dec = [
        [m.out_channels for m in s.modules() if isinstance(m, torch.nn.Conv2d)]
        for s in model.decoder
    ]
    assert tuple(map(tuple, dec)) == DECODER_WIDTHS
    assert (
        sum(len(d) for d in dec) + 1 == 13
    )  # 12 conv-BN-ReLU + the classifier mirror 13 encoder convs
    assert model.classifier.out_channels == 3 and model.classifier.kernel_size == (3, 3)
    with pytest.raises(ConfigError):
        build_model("segnet", num_classes=0)
    with pytest.raises(ConfigError):
        build_model(
            "segnet", num_classes=3, backbone="resnet18"
        )  # fixed encoder: no such option


def test_any_size_gives_logits_at_input_size():
    with torch.device("meta"):  # shapes only, no compute
        meta = build_model("segnet", num_classes=3).eval()
    for size in [(1, 1), (5, 7), (31, 65), (33, 32), (97, 131), (360, 480)]:
        assert meta(torch.empty(1, 3, *size, device="meta")).shape == (1, 3, *size), (
            size
        )


def test_decoder_upsamples_at_the_pooling_indices(model):
    model.eval()
    seen = {}

    def hook(module, args, out):
        seen.setdefault("first", (args, out))

    handle = model.unpool.register_forward_hook(hook)
    with torch.no_grad():
        y = model(torch.randn(1, 3, 45, 61))
    handle.remove()
    assert y.shape == (1, 3, 45, 61)
    (pooled, idx, *_), up = seen["first"]
    assert up.shape[-2:] == (
        3,
        4,
    )  # pool4 output of 45x61 with ceil-mode pooling: 45->23->12->6->3
    nonzero = up != 0
    assert (
        int(nonzero.sum()) <= pooled.numel()
    )  # one value per pooled cell, the rest zeros
    flat = up.flatten(2).gather(2, idx.flatten(2))
    assert torch.equal(flat, pooled.flatten(2))  # each value sits at its switch


def test_cli_train_then_load(trained):
    out, model = trained
    assert model.spec == {
        "name": "segnet",
        "kwargs": {"num_classes": 3, "weights": None},
    }
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert all(
        torch.equal(v, ckpt["state_dict"][k]) for k, v in model.state_dict().items()
    )
    # the training step moved the weights: the classifier bias started at zero
    assert model.state_dict()["classifier.bias"].abs().sum() > 0
    with torch.no_grad():
        y = model(torch.randn(1, 3, 50, 70))
    assert y.shape == (1, 3, 50, 70) and torch.isfinite(y).all()


def test_onnx_export_matches_pytorch(model):
    assert_onnx_matches(model.eval(), torch.randn(1, 3, 45, 61))
