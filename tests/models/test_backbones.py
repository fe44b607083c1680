from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from convision.errors import CheckpointError, ConfigError
from convision.models.backbones import BACKBONES, Backbone, build_backbone

MOBILENET_CACHE = (
    Path(torch.hub.get_dir()) / "checkpoints" / "mobilenet_v2-b0353104.pth"
)


@pytest.mark.parametrize(
    "name, channels",
    [
        ("mobilenet_v2", {8: 32, 16: 96, 32: 1280}),
        ("resnet18", {8: 128, 16: 256, 32: 512}),
        ("resnet50", {8: 512, 16: 1024, 32: 2048}),
    ],
)
def test_feature_strides_and_channels(name, channels):
    bb = build_backbone(name).eval()
    assert isinstance(bb, Backbone) and bb.channels == channels
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 64, 96))
    assert sorted(feats) == [8, 16, 32]
    for s, f in feats.items():
        assert f.shape == (1, channels[s], 64 // s, 96 // s)


def test_resnet_uses_every_pretrained_layer_but_fc():
    bb = build_backbone("resnet18")
    names = {n.split(".")[1] for n, _ in bb.named_parameters()}
    assert names == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}
    assert bb.take_classifier() is None


def test_mobilenet_v2_includes_final_1x1_conv():
    bb = build_backbone("mobilenet_v2")
    n_feat = sum(
        p.numel() for p in torchvision.models.mobilenet_v2().features.parameters()
    )
    assert sum(p.numel() for p in bb.parameters()) == n_feat
    assert bb.dropout == pytest.approx(
        0.2
    )  # torchvision's classifier dropout, for the head


def test_vgg16_stages_and_classifier():
    bb = build_backbone("vgg16")
    assert bb.channels == {8: 256, 16: 512, 32: 512}
    # the classifier is kept aside: not in the backbone's parameters or state dict
    assert not any("classifier" in k for k in bb.state_dict())
    assert (
        sum(p.numel() for p in bb.parameters()) == 14_714_688
    )  # VGG16 conv layers only
    cls = bb.take_classifier()
    assert (
        isinstance(cls, torch.nn.Sequential)
        and cls[0].in_features == 25088
        and cls[3].out_features == 4096
    )
    assert bb.take_classifier() is None
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 64, 64))
    assert {s: tuple(f.shape[1:]) for s, f in feats.items()} == {
        8: (256, 8, 8),
        16: (512, 4, 4),
        32: (512, 2, 2),
    }


def test_unknown_backbone_lists_known():
    with pytest.raises(ConfigError, match="backbone: unknown backbone 'vgg13'") as e:
        build_backbone("vgg13")
    for name in BACKBONES:
        assert name in str(e.value)


def test_unknown_weights_name_lists_known():
    with pytest.raises(
        ConfigError, match=r"IMAGENET1K_V3.*known: IMAGENET1K_V1, DEFAULT"
    ):
        build_backbone("resnet18", weights="IMAGENET1K_V3")


@pytest.mark.parametrize("none", [None, "none", "None", ""])
def test_none_weights_means_random_init(none):
    torch.manual_seed(0)
    a = build_backbone("resnet18", weights=none)
    torch.manual_seed(1)
    b = build_backbone("resnet18", weights=none)
    assert not torch.equal(a.stride8.conv1.weight, b.stride8.conv1.weight)


def test_weights_from_local_pth(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    bb = build_backbone("resnet18", weights=str(path))
    assert torch.equal(bb.stride8.layer2[0].conv1.weight, ref.layer2[0].conv1.weight)
    assert torch.equal(
        bb.stride32.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var
    )
    assert not torch.equal(
        build_backbone("resnet18").stride8.layer2[0].conv1.weight,
        ref.layer2[0].conv1.weight,
    )
    # a Path works too, and so does a DDP-saved ("module." prefixed) state dict
    ddp = tmp_path / "ddp.pth"
    torch.save({"module." + k: v for k, v in ref.state_dict().items()}, ddp)
    assert torch.equal(
        build_backbone("resnet18", weights=ddp).stride16.layer3[0].conv2.weight,
        ref.layer3[0].conv2.weight,
    )


def test_weights_from_classifier_finetuned_to_other_classes(tmp_path):
    # the last classification layer is never used by a backbone, so its shape may differ
    ref = torchvision.models.resnet18(num_classes=10)
    path = tmp_path / "r18_10.pth"
    torch.save(ref.state_dict(), path)
    bb = build_backbone("resnet18", weights=path)
    assert torch.equal(bb.stride32.layer4[0].conv1.weight, ref.layer4[0].conv1.weight)


def _one_line_error(exc_info, path: Path) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    return msg


def test_bad_weights_files(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="not found") as e:
        build_backbone("resnet18", weights=str(missing))
    _one_line_error(e, missing)

    garbage = tmp_path / "garbage.pth"
    garbage.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="cannot be read") as e:
        build_backbone("resnet18", weights=garbage)
    _one_line_error(e, garbage)

    wrapped = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "model": {"w": torch.zeros(1)}}, wrapped)
    with pytest.raises(
        CheckpointError, match="expected a state dict.*keys 'epoch', 'model'"
    ) as e:
        build_backbone("resnet18", weights=wrapped)
    _one_line_error(e, wrapped)

    other = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), other)
    with pytest.raises(
        CheckpointError,
        match="not a state dict of torchvision resnet18: keys .* missing",
    ) as e:
        build_backbone("resnet18", weights=other)
    _one_line_error(e, other)

    r34 = torchvision.models.resnet18().state_dict()
    r34["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    shape = tmp_path / "shape.pth"
    torch.save(r34, shape)
    with pytest.raises(CheckpointError, match=r"wrong shape \(e.g. conv1.weight") as e:
        build_backbone("resnet18", weights=shape)
    _one_line_error(e, shape)


@pytest.mark.skipif(
    not MOBILENET_CACHE.is_file(),
    reason=f"{MOBILENET_CACHE} not seeded (make install does it)",
)
def test_mobilenet_v2_imagenet_weights_offline():
    bb = build_backbone("mobilenet_v2", weights="IMAGENET1K_V1")
    state = torch.load(MOBILENET_CACHE, map_location="cpu", weights_only=True)
    assert torch.equal(bb.stride8[0][0].weight, state["features.0.0.weight"])
    assert torch.equal(
        bb.stride32[-1][0].weight, state["features.18.0.weight"]
    )  # positional: features[18]
    assert torch.equal(
        bb.stride16[3].conv[0][1].running_mean,
        state["features.10.conv.0.1.running_mean"],
    )  # features[10]
    rand = build_backbone("mobilenet_v2")
    assert not torch.equal(rand.stride8[0][0].weight, bb.stride8[0][0].weight)
    # the enum's qualified name is accepted as well
    q = build_backbone("mobilenet_v2", weights="MobileNet_V2_Weights.IMAGENET1K_V1")
    assert torch.equal(q.stride8[0][0].weight, bb.stride8[0][0].weight)


def _coord(modules) -> tuple[float, float]:
    """Coordinate map of a chain of conv/pool layers (as Caffe's coord_map): input = a * output + b."""
    a, b = 1.0, 0.0
    for m in modules:
        if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
            k, s, p = (
                v if isinstance(v, int) else v[0]
                for v in (m.kernel_size, m.stride, m.padding)
            )
            a, b = a * s, b + a * ((k - 1) / 2 - p)
    return a, b


@pytest.mark.parametrize(
    "name", ["vgg16", "vgg16_bn", "mobilenet_v2", "resnet18", "resnet50"]
)
def test_declared_grid_matches_the_layers(name):
    with torch.device("meta"):
        bb = build_backbone(name)
    chain = []
    for stride, stage in ((8, bb.stride8), (16, bb.stride16), (32, bb.stride32)):
        # the main path: a ResNet block's "downsample" shortcut runs in parallel, not in series
        chain += [m for n, m in stage.named_modules() if "downsample" not in n]
        a, b = _coord(chain)
        assert a == stride
        assert b == ((stride - 1) / 2 if bb.grid == "center" else 0.0), (stride, b)
    assert bb.grid == ("center" if name.startswith("vgg") else "corner")
