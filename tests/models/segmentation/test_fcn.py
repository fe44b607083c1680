from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from convision.errors import ConfigError
from convision.models import MODELS, build_model
from convision.models.segmentation.fcn import (
    CAFFE_CROP_OFFSETS,
    FCN,
    fc_to_conv,
    fcn8s,
    fcn16s,
    fcn32s,
)
from convision.nn import BilinearUpsample

VARIANTS = ["fcn32s", "fcn16s", "fcn8s"]
SIZES = [(1, 1), (31, 33), (64, 64), (97, 131), (130, 65)]


def _meta_sizes_ok(model: nn.Module, sizes) -> list:
    """Shape-only forward passes on the meta device (no compute); returns the sizes that fail."""
    model = model.to("meta").eval()
    bad = []
    for h, w in sizes:
        y = model(torch.empty(1, 3, h, w, device="meta"))
        if tuple(y.shape) != (1, model.num_classes, h, w):
            bad.append((h, w, tuple(y.shape)))
    return bad


MANY_SIZES = [
    (h, 1 + (7 * h) % 523)
    for h in [*range(1, 70), *range(220, 230), 333, 499, 500, 512, 513]
]


# --- VGG16: fc6/fc7 convolutionalisation ---------------------------------------------------------


def test_fc6_fc7_conv_head_equals_vgg16_classifier():
    torch.manual_seed(0)
    tv = torchvision.models.vgg16().eval()
    torch.manual_seed(0)
    model = fcn32s(
        num_classes=3, backbone="vgg16"
    ).eval()  # same RNG stream -> same VGG16 weights
    assert torch.equal(model.backbone.stride8[0].weight, tv.features[0].weight)
    assert torch.equal(model.fc6.weight.flatten(1), tv.classifier[0].weight)
    assert (
        model.fc6.kernel_size == (7, 7)
        and model.fc6.padding == (3, 3)
        and model.fc7.kernel_size == (1, 1)
    )

    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = tv.classifier[:5](
            torch.flatten(tv.avgpool(tv.features(x)), 1)
        )  # fc6, relu, drop, fc7, relu
        pool5 = model.backbone(x)[32]
        assert pool5.shape == (1, 512, 7, 7)
        # unpadded (faithful) fc6: one 7x7 window -> a 1x1 map
        h = F.relu(F.conv2d(pool5, model.fc6.weight, model.fc6.bias))
        out = model.relu7(model.fc7(h))
        assert out.shape == (1, 4096, 1, 1)
        assert torch.allclose(out.flatten(1), ref, rtol=1e-4, atol=1e-5)
        # padded (default) fc6: its centre position sees the whole 7x7 map
        out_pad = model.relu7(model.fc7(model.relu6(model.fc6(pool5))))
        assert out_pad.shape == (1, 4096, 7, 7)
        assert torch.allclose(out_pad[..., 3, 3], ref, rtol=1e-4, atol=1e-5)
        assert ref.abs().max() > 0  # not a vacuous comparison


def test_vgg_feature_only_weights_get_random_fc6_fc7(monkeypatch):
    # torchvision's VGG16 IMAGENET1K_FEATURES ships a NaN classifier; fc6/fc7 must not inherit it
    import convision.models.segmentation.fcn as fcn_module

    real = fcn_module.build_backbone

    def nan_classifier(name, weights=None):
        bb = real(name, weights)
        with torch.no_grad():
            bb._classifier[0][0].weight.fill_(float("nan"))
        return bb

    monkeypatch.setattr(fcn_module, "build_backbone", nan_classifier)
    with pytest.warns(UserWarning, match="not finite"):
        model = fcn32s(num_classes=2, backbone="vgg16")
    for conv in (model.fc6, model.fc7):
        assert torch.isfinite(conv.weight).all() and 0.009 < conv.weight.std() < 0.011
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))


def test_fc_to_conv_checks_sizes():
    with pytest.raises(ValueError, match="expected 512\\*7\\*7"):
        fc_to_conv(nn.Linear(100, 10), 512, 7)


def _meta(name: str, **kwargs) -> FCN:
    """Build on the meta device: real layer structure, no memory or initialisation cost (VGG16)."""
    with torch.device("meta"):
        return build_model(name, **kwargs)


@pytest.mark.parametrize("name", VARIANTS)
def test_vgg16_faithful_reference_layers_and_output_size(name):
    model = _meta(name, num_classes=4, backbone="vgg16", faithful=True)
    assert model.backbone.stride8[0].padding == (100, 100)  # conv1_1 pad 100
    assert model.fc6.padding == (0, 0)
    assert all(
        m.ceil_mode for m in model.backbone.modules() if isinstance(m, nn.MaxPool2d)
    )
    ups = {n: m for n, m in model.named_modules() if isinstance(m, BilinearUpsample)}
    expected = {
        "fcn32s": {"upscore": 64},
        "fcn16s": {"upscore2": 4, "upscore16": 32},
        "fcn8s": {"upscore2": 4, "upscore_pool4": 4, "upscore8": 16},
    }[name]
    assert {n: m.kernel_size[0] for n, m in ups.items()} == expected
    assert all(
        m.padding == (0, 0) and m.stride[0] * 2 == m.kernel_size[0]
        for m in ups.values()
    )
    assert (
        CAFFE_CROP_OFFSETS[model.stride]
        == {
            32: {"upscore": 19},
            16: {"score_pool4": 5, "upscore16": 27},
            8: {"score_pool4": 5, "score_pool3": 9, "upscore8": 31},
        }[model.stride]
    )
    # shapes through PyTorch's real shape rules for ~80 sizes, odd ones included, 1x1 to 513 px
    assert _meta_sizes_ok(model, MANY_SIZES) == []


@pytest.mark.parametrize("name", VARIANTS)
def test_vgg16_default_output_size(name):
    model = _meta(name, num_classes=4, backbone="vgg16")
    assert model.backbone.stride8[0].padding == (1, 1) and model.fc6.padding == (3, 3)
    assert not any(
        m.ceil_mode for m in model.backbone.modules() if isinstance(m, nn.MaxPool2d)
    )
    assert _meta_sizes_ok(model, MANY_SIZES) == []


@pytest.mark.parametrize("faithful", [True, False])
def test_vgg16_fcn8s_real_forward_odd_size(faithful):
    model = fcn8s(num_classes=4, backbone="vgg16", faithful=faithful).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 33, 47))
    assert y.shape == (1, 4, 33, 47) and torch.equal(
        y, torch.zeros_like(y)
    )  # zero-init scores


def _coord(modules) -> tuple[float, float]:
    """Caffe-style coordinate map of a chain of conv/pool layers: input = a * output + b."""
    a, b = 1.0, 0.0
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)) and not isinstance(
            m, nn.ConvTranspose2d
        ):
            k, s, p = (
                v if isinstance(v, int) else v[0]
                for v in (m.kernel_size, m.stride, m.padding)
            )
            a, b = a * s, b + a * ((k - 1) / 2 - p)
    return a, b


def _deconv(m: nn.ConvTranspose2d) -> tuple[float, float]:
    """Transposed conv: output = s * input + ((k - 1) / 2 - p), so input = (output - b) / s."""
    return m.stride[0], (m.kernel_size[0] - 1) / 2 - m.padding[0]


@pytest.mark.parametrize("faithful", [True, False])
def test_crop_offsets_follow_from_the_layer_geometry(faithful):
    """Recompute every crop offset from the layers' kernel/stride/padding, as Caffe's coord_map
    does: the reference offsets (19; 5, 27; 5, 9, 31) in faithful mode, 0 everywhere by default."""
    m = _meta("fcn8s", num_classes=2, backbone="vgg16", faithful=faithful)
    bb = m.backbone
    a3, b3 = _coord([*bb.stride8])  # data = a3 * pool3 + b3
    a4, b4 = _coord([*bb.stride8, *bb.stride16])
    a5, b5 = _coord(
        [*bb.stride8, *bb.stride16, *bb.stride32, m.fc6]
    )  # data = a5 * score_fr + b5
    assert (a3, a4, a5) == (8, 16, 32)

    def up(
        a, b, layer
    ):  # data = a * x + b for the layer's input x -> the same for its output
        s, c = _deconv(layer)
        return a / s, b - a * c / s

    # A skip map with data = a_skip * q + b_skip is cropped at o (fused u <-> skip q = u + o):
    # aligned when a_skip * (u + o) + b_skip = a * u + b, i.e. o = (b - b_skip) / a_skip.
    # The output is cropped at o (pixel y <-> u = y + o, data = y + o + b): aligned when o = -b.
    m32 = _meta("fcn32s", num_classes=2, backbone="vgg16", faithful=faithful)
    a, b = up(a5, b5, m32.upscore)
    assert a == 1 and -b == (19 if faithful else 0)

    m16 = _meta("fcn16s", num_classes=2, backbone="vgg16", faithful=faithful)
    a, b = up(a5, b5, m16.upscore2)
    assert a == a4 and (b - b4) / a4 == (5 if faithful else 0)  # score_pool4 crop
    a, b = up(a, b, m16.upscore16)
    assert a == 1 and -b == (27 if faithful else 0)

    a, b = up(a5, b5, m.upscore2)
    assert a == a4 and (b - b4) / a4 == (5 if faithful else 0)  # score_pool4 crop
    a, b = up(a, b, m.upscore_pool4)
    assert a == a3 and (b - b3) / a3 == (9 if faithful else 0)  # score_pool3 crop
    a, b = up(a, b, m.upscore8)
    assert a == 1 and -b == (31 if faithful else 0)
    if faithful:
        assert CAFFE_CROP_OFFSETS == {
            32: {"upscore": 19},
            16: {"score_pool4": 5, "upscore16": 27},
            8: {"score_pool4": 5, "score_pool3": 9, "upscore8": 31},
        }


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "mobilenet_v2"])
def test_default_alignment_is_exact_on_corner_grid_backbones(backbone):
    m = _meta("fcn8s", num_classes=2, backbone=backbone)
    stages = [m.backbone.stride8, m.backbone.stride16, m.backbone.stride32]
    chain = [
        [mod for n, mod in stage.named_modules() if "downsample" not in n]
        for stage in stages
    ]
    a3, b3 = _coord(chain[0])
    a4, b4 = _coord(chain[0] + chain[1])
    a5, b5 = _coord(chain[0] + chain[1] + chain[2] + [m.score_fr])
    assert (a3, a4, a5) == (8, 16, 32)

    def up(a, b, layer):
        s, c = _deconv(layer)
        return a / s, b - a * c / s

    a, b = up(a5, b5, m.upscore2)
    assert (a, (b - b4) / a4) == (a4, 0)
    a, b = up(a, b, m.upscore_pool4)
    assert (a, (b - b3) / a3) == (a3, 0)
    assert up(a, b, m.upscore8) == (1, 0)


def test_faithful_needs_caffe_ceil_pooling():
    # with floor rounding the reference crops run out of pixels for many sizes
    model = _meta("fcn32s", num_classes=2, faithful=True)
    for m in model.modules():
        if isinstance(m, nn.MaxPool2d):
            m.ceil_mode = False
    with pytest.raises(RuntimeError, match="too small"):
        model(torch.empty(1, 3, 50, 50, device="meta"))


@pytest.mark.parametrize("name", VARIANTS)
def test_output_size_any_input(name):
    for backbone in ["resnet18", "mobilenet_v2"]:
        model = build_model(name, num_classes=5, backbone=backbone).eval()
        with torch.no_grad():
            for h, w in SIZES:
                assert model(torch.randn(2, 3, h, w)).shape == (2, 5, h, w)
    assert (
        _meta_sizes_ok(_meta(name, num_classes=5, backbone="resnet18"), MANY_SIZES[::2])
        == []
    )


def test_default_upsampling_follows_the_backbone_grid():
    def geometry(model):
        return {
            n: (m.factor, m.kernel_size[0], m.padding[0], m.output_padding[0])
            for n, m in model.named_modules()
            if isinstance(m, BilinearUpsample)
        }

    # ResNet / MobileNetV2: cell i at s*i -> kernel 2f-1, padding f-1, output padding f-1
    for bb in ["resnet18", "mobilenet_v2"]:
        assert geometry(_meta("fcn8s", num_classes=3, backbone=bb)) == {
            "upscore2": (2, 3, 1, 1),
            "upscore_pool4": (2, 3, 1, 1),
            "upscore8": (8, 15, 7, 7),
        }
    # VGG: cell i at s*i + (s-1)/2 -> kernel 2f, padding f/2
    assert geometry(_meta("fcn8s", num_classes=3, backbone="vgg16")) == {
        "upscore2": (2, 4, 1, 0),
        "upscore_pool4": (2, 4, 1, 0),
        "upscore8": (8, 16, 4, 0),
    }


def test_faithful_rejected_for_other_backbones():
    for bb in ["resnet18", "mobilenet_v2", "vgg16_bn"]:
        with pytest.raises(ConfigError, match="faithful: .*'vgg16' only"):
            fcn8s(backbone=bb, faithful=True)


# --- initialisation ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_zero_init_scores_give_zero_logits(name):
    model = build_model(name, num_classes=6, backbone="mobilenet_v2").eval()
    for layer in ["score_fr", "score_pool4", "score_pool3"]:
        conv = getattr(model, layer, None)
        if conv is not None:
            assert conv.weight.abs().sum() == 0 and conv.bias.abs().sum() == 0
    with torch.no_grad():
        y = model(torch.randn(2, 3, 64, 80))
    assert torch.equal(y, torch.zeros_like(y))


def test_upsampling_frozen_by_default_and_learnable_options():
    def flags(model):
        return {
            n: m.weight.requires_grad
            for n, m in model.named_modules()
            if isinstance(m, BilinearUpsample)
        }

    assert flags(fcn8s(num_classes=3, backbone="resnet18")) == {
        "upscore2": False,
        "upscore_pool4": False,
        "upscore8": False,
    }
    assert flags(
        fcn8s(num_classes=3, backbone="resnet18", learnable_upsampling=True)
    ) == {"upscore2": True, "upscore_pool4": True, "upscore8": True}
    # the CVPR paper's text: 2x layers learned, the final interpolation fixed
    assert flags(
        fcn16s(num_classes=3, backbone="resnet18", learnable_upsampling="2x")
    ) == {"upscore2": True, "upscore16": False}
    with pytest.raises(ConfigError, match="learnable_upsampling"):
        fcn8s(num_classes=3, backbone="resnet18", learnable_upsampling="sometimes")


def test_gradients_reach_score_layers_then_backbone():
    torch.manual_seed(0)
    model = fcn8s(num_classes=4, backbone="resnet18").train()
    x, target = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    F.cross_entropy(model(x), target).backward()
    for layer in ["score_fr", "score_pool4", "score_pool3"]:
        assert getattr(model, layer).weight.grad.abs().sum() > 0, (
            layer
        )  # zero init still learns
    # ... but the zero score weights pass no gradient down: the backbone's first step is zero
    assert all(
        p.grad is None or p.grad.abs().sum() == 0 for p in model.backbone.parameters()
    )
    assert all(
        m.weight.grad is None
        for m in model.modules()
        if isinstance(m, BilinearUpsample)
    )
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    model.zero_grad()
    F.cross_entropy(model(x), target).backward()
    assert model.backbone.stride8.conv1.weight.grad.abs().sum() > 0
    assert model.backbone.stride32.layer4[1].conv2.weight.grad.abs().sum() > 0


# --- staged training: FCN-32s -> FCN-16s -> FCN-8s -------------------------------------------------


def _trained_fcn32s(backbone: str) -> FCN:
    torch.manual_seed(0)
    m = fcn32s(num_classes=5, backbone=backbone).eval()
    with torch.no_grad():  # stand-in for training: non-zero class scores
        m.score_fr.weight.normal_(0, 1.0)
        m.score_fr.bias.zero_()
    return m


@pytest.mark.parametrize("backbone", ["resnet18", "vgg16"])
def test_shared_parameter_names_across_variants(backbone):
    m32 = _meta("fcn32s", num_classes=5, backbone=backbone)
    m16 = _meta("fcn16s", num_classes=5, backbone=backbone)
    r = m16.load_state_dict(m32.state_dict(), strict=False)
    assert sorted(r.missing_keys) == [
        "score_pool4.bias",
        "score_pool4.weight",
        "upscore16.weight",
        "upscore2.weight",
    ]
    assert r.unexpected_keys == ["upscore.weight"]
    m8 = _meta("fcn8s", num_classes=5, backbone=backbone)
    r = m8.load_state_dict(m16.state_dict(), strict=False)
    assert sorted(r.missing_keys) == [
        "score_pool3.bias",
        "score_pool3.weight",
        "upscore8.weight",
        "upscore_pool4.weight",
    ]
    assert r.unexpected_keys == ["upscore16.weight"]
    if backbone == "vgg16":
        assert {"fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"} <= set(
            m8.state_dict()
        )


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_fcn16s_initialised_from_fcn32s_predicts_the_same(backbone):
    m32 = _trained_fcn32s(backbone)
    m16 = fcn16s(num_classes=5, backbone=backbone).eval()
    m16.load_state_dict(m32.state_dict(), strict=False)
    m8 = fcn8s(num_classes=5, backbone=backbone).eval()
    m8.load_state_dict(m16.state_dict(), strict=False)
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        y32, y16, y8 = m32(x), m16(x), m8(x)
    # The zero-initialised skips add nothing, and on these backbones' "corner" grid linear
    # interpolation 2x then 16x (or 2x, 2x, 8x) is exactly linear interpolation 32x: the knots of
    # the coarse map are samples of the finer one. So the logits, not only the class map, agree.
    assert y32.abs().max() > 0 and y32.argmax(1).unique().numel() > 1
    assert torch.allclose(y16, y32, atol=1e-5)
    assert torch.allclose(y8, y32, atol=1e-5)
    assert torch.equal(y16.argmax(1), y32.argmax(1))


def test_center_grid_2x_then_16x_is_close_to_32x_but_not_equal():
    """VGG's grid (cells centred in their blocks): the coarse knots fall between the fine samples,
    so an FCN-16s initialised from an FCN-32s predicts the same classes only approximately.
    Measured on white-noise scores (the worst case, a class boundary at every cell): 93-95% of
    pixels agree; smooth real score maps agree more."""
    torch.manual_seed(0)
    scores = torch.randn(1, 5, 6, 8)
    y32 = BilinearUpsample(5, 32)(scores)
    y16 = BilinearUpsample(5, 16)(BilinearUpsample(5, 2)(scores))
    assert y32.shape == y16.shape
    assert (y32.argmax(1) == y16.argmax(1)).float().mean() >= 0.9
    assert not torch.allclose(y32, y16, atol=1e-2)


# --- registry and builders -----------------------------------------------------------------------


def test_registry_and_build_model_errors():
    assert set(VARIANTS) <= set(MODELS) and isinstance(MODELS, dict)
    with pytest.raises(
        ConfigError,
        match=r"model: unknown model 'fcn4s' \(known: .*fcn32s.*fcn16s.*fcn8s",
    ):
        build_model("fcn4s")
    with pytest.raises(
        ConfigError,
        match=r"model fcn8s: unknown argument\(s\) dropout, classes \(accepted: num_classes",
    ):
        build_model("fcn8s", num_classes=3, dropout=0.1, classes=4)
    with pytest.raises(ConfigError, match="num_classes: must be a positive integer"):
        build_model("fcn8s", num_classes=0, backbone="resnet18")
    with pytest.raises(ConfigError, match="backbone: unknown backbone 'resnet152'"):
        build_model("fcn8s", backbone="resnet152")


def test_spec_rebuilds_the_model():
    model = build_model(
        "fcn16s", num_classes=7, backbone="mobilenet_v2", learnable_upsampling=True
    )
    spec = json.loads(json.dumps(model.spec))  # JSON-serialisable
    assert spec == {
        "name": "fcn16s",
        "kwargs": {
            "num_classes": 7,
            "backbone": "mobilenet_v2",
            "weights": None,
            "faithful": False,
            "learnable_upsampling": True,
        },
    }
    again = build_model(spec["name"], **spec["kwargs"])
    again.load_state_dict(model.state_dict())  # strict: identical architecture
    assert again.num_classes == 7 and again.stride == 16


def test_mobilenet_head_dropout_and_no_fc_layers():
    model = fcn32s(num_classes=3, backbone="mobilenet_v2")
    assert model.fc6 is None and model.fc7 is None
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == pytest.approx(
        0.2
    )
    assert model.score_fr.in_channels == 1280
    assert isinstance(fcn32s(num_classes=3, backbone="resnet18").dropout, nn.Identity)
