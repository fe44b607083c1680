"""convolutionalize(): the same outputs at the training size, and a score map whose cells are the
classifier's outputs on the crops (exactly, for networks without zero padding)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from convision.models.classification import build_classifier
from convision.nn.convolutionalize import (
    ConvolutionalClassifier,
    convolutionalize,
    total_stride,
)

torch.set_num_threads(1)


def seeds_toy_fc(classes: int = 3) -> nn.Sequential:
    """The seeds' toy network, FC version: 14x14 -> 5x5 conv -> 10x10 -> 2x2 pool -> 5x5 ->
    (flatten, FC = 5x5 conv) -> 1x1 -> FC (1x1 conv) -> FC (1x1 conv) -> scores."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 16),
        nn.ReLU(),
        nn.Linear(16, 16),
        nn.ReLU(),
        nn.Linear(16, classes),
    )


class PadFreeVGG(nn.Module):
    """VGG's layout (features, AdaptiveAvgPool2d, 3 FC layers with dropout) without zero padding."""

    def __init__(self, pool: int = 2, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Linear(8 * pool * pool, 32),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(32, 32),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(32, classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def test_seeds_toy_network_14_to_16():
    torch.manual_seed(0)
    fc = seeds_toy_fc().eval()
    conv = convolutionalize(fc, input_size=14)
    assert isinstance(conv, ConvolutionalClassifier)
    kinds = [
        (m.kernel_size, m.in_channels) for m in conv.head if isinstance(m, nn.Conv2d)
    ]
    assert kinds == [((5, 5), 8), ((1, 1), 16), ((1, 1), 16)]
    assert conv.stride == 2 and conv.input_size == 14
    x14 = torch.randn(2, 3, 14, 14)
    out14 = conv(x14)
    assert out14.shape == (2, 3, 1, 1)
    torch.testing.assert_close(out14[:, :, 0, 0], fc(x14), rtol=1e-5, atol=1e-6)
    x16 = torch.randn(2, 3, 16, 16)
    out16 = conv(x16)
    assert out16.shape == (2, 3, 2, 2)
    for i in range(2):
        for j in range(2):
            crop = x16[:, :, 2 * i : 2 * i + 14, 2 * j : 2 * j + 14]
            torch.testing.assert_close(
                out16[:, :, i, j], fc(crop), rtol=1e-5, atol=1e-6
            )
            assert conv.window(i, j) == (2 * j, 2 * i, 2 * j + 14, 2 * i + 14)
    # the four cells differ (the test would pass trivially on a constant map otherwise)
    assert (out16[0, :, 0, 0] - out16[0, :, 1, 1]).abs().max() > 1e-4


@pytest.mark.parametrize(
    "pool", [2, 3]
)  # 2: the pool is the identity at 28x28; 3: it is folded in
def test_pad_free_vgg_cells_equal_crops(pool):
    torch.manual_seed(1)
    model = PadFreeVGG(pool=pool).eval()
    size = 28  # 28 -> 26 -> 13 -> 11 -> 5 ... features 5x5 at the training size
    conv = convolutionalize(model, input_size=size)
    assert conv.stride == 4 and conv.kernel == 5
    x = torch.randn(1, 3, size, size)
    torch.testing.assert_close(conv(x)[:, :, 0, 0], model(x), rtol=1e-5, atol=1e-6)
    big = torch.randn(1, 3, size + 8, size + 4)
    scores = conv(big)
    assert scores.shape == (1, 5, 3, 2)
    for i in range(3):
        for j in range(2):
            crop = big[:, :, 4 * i : 4 * i + size, 4 * j : 4 * j + size]
            torch.testing.assert_close(
                scores[:, :, i, j], model(crop), rtol=1e-5, atol=1e-6
            )


def test_vgg11_same_output_at_training_size_and_score_map():
    torch.manual_seed(0)
    vgg = torchvision.models.vgg11(weights=None).eval()
    # a 32x32 training size: features 1x1, which AdaptiveAvgPool2d((7,7)) replicates; folded exactly
    conv = convolutionalize(vgg, input_size=32)
    assert conv.stride == 32 and conv.kernel == 1
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(conv(x)[:, :, 0, 0], vgg(x), rtol=1e-4, atol=1e-5)
        big = torch.randn(1, 3, 96, 64)
        scores = conv(big)
    assert scores.shape == (1, 1000, 3, 2)
    # VGG pads its convolutions, so cells are the dense evaluation, not exactly the crops' outputs;
    # for a 1x1 feature window the score map is still the FC head applied to each feature cell
    with torch.no_grad():
        feats = vgg.features(big)
        cell = vgg.classifier(torch.flatten(vgg.avgpool(feats[:, :, 1:2, 0:1]), 1))
    torch.testing.assert_close(scores[:, :, 1, 0], cell, rtol=1e-4, atol=1e-5)


def test_convision_classifier_alexnet_and_original_untouched():
    torch.manual_seed(0)
    model = build_classifier("alexnet", 4, weights=None).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    conv = convolutionalize(
        model, input_size=64
    )  # AlexNet at 64: 1x1 features, pool to 6x6 folded
    assert total_stride(model.net.features) == 32
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(conv(x)[:, :, 0, 0], model(x), rtol=1e-4, atol=1e-5)
        assert conv(torch.randn(1, 3, 128, 96)).shape == (1, 4, 3, 2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_mobilenet_v2_global_pool_folds_into_an_f_by_f_convolution():
    torch.manual_seed(0)
    model = build_classifier("mobilenet_v2", 4).eval()
    conv = convolutionalize(
        model, input_size=96
    )  # 3x3 features, averaged: a 3x3 kernel
    assert conv.kernel == 3 and conv.stride == 32
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(conv(x)[:, :, 0, 0], model(x), rtol=1e-4, atol=1e-5)
        assert conv(torch.randn(1, 3, 160, 128)).shape == (1, 4, 3, 2)
    plain = torchvision.models.mobilenet_v2(num_classes=5).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            convolutionalize(plain, 64)(x[:, :, :64, :64])[:, :, 0, 0],
            plain(x[:, :, :64, :64]),
            rtol=1e-4,
            atol=1e-5,
        )


def test_unsupported_models_and_small_inputs_are_refused():
    with pytest.raises(ValueError, match="VGG/AlexNet/MobileNetV2"):
        convolutionalize(build_classifier("resnet18", 3))
    with pytest.raises(ValueError, match="VGG/AlexNet/MobileNetV2"):
        convolutionalize(torchvision.models.resnet18())
    conv = convolutionalize(seeds_toy_fc().eval(), input_size=14)
    with pytest.raises(ValueError, match="at least its window"):
        conv(torch.randn(1, 3, 12, 20))
