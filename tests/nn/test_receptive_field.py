"""convision.nn.receptive_field: parameters, mult-adds, receptive field and stride, checked against
hand counts, the seeds' numbers and the receptive field measured by backpropagation."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from convision.nn import gradient_receptive_field, summarize
from convision.nn.upsampling import BilinearUpsample

torch.set_num_threads(1)


def last(summary):
    return summary[-1]


def test_alexnet_first_conv_torchvision_64_filters_and_paper_96():
    s = summarize(torchvision.models.alexnet(), (3, 224, 224))
    conv1 = s[0]
    assert (conv1.name, conv1.type) == ("features.0", "Conv2d")
    assert conv1.params == 11 * 11 * 3 * 64 + 64 == 23_296
    assert conv1.output_shape == (64, 55, 55)
    assert conv1.mult_adds == 11 * 11 * 3 * 64 * 55 * 55
    assert conv1.receptive_field == (11, 11) and conv1.stride == (4, 4)
    assert (
        s.total_params
        == sum(p.numel() for p in torchvision.models.alexnet().parameters())
        == 61_100_840
    )
    pool5 = next(layer for layer in s if layer.name == "features.12")
    assert pool5.rf == 195 and pool5.stride == (
        32,
        32,
    )  # AlexNet's conv5/pool5 receptive field
    # the paper's layer: 96 filters (two GPUs x 48), 224 -> 55 with stride 4 (on a 227 input)
    paper = summarize(nn.Conv2d(3, 96, 11, stride=4), (3, 227, 227))
    assert paper[0].params == 11 * 11 * 3 * 96 + 96 == 34_944
    assert paper[0].output_shape == (96, 55, 55) and paper[0].rf == 11


def test_two_3x3_see_5x5_with_fewer_parameters():
    c = 16
    two = nn.Sequential(
        nn.Conv2d(c, c, 3, bias=False), nn.ReLU(), nn.Conv2d(c, c, 3, bias=False)
    )
    one = nn.Conv2d(c, c, 5, bias=False)
    s2, s1 = summarize(two, (c, 16, 16)), summarize(one, (c, 16, 16))
    assert last(s2).rf == last(s1).rf == 5
    assert (
        gradient_receptive_field(two, (c, 16, 16))
        == gradient_receptive_field(one, (c, 16, 16))
        == (5, 5)
    )
    assert s2.total_params == 2 * 3 * 3 * c * c < s1.total_params == 5 * 5 * c * c
    assert last(s2).output_shape == last(s1).output_shape == (c, 12, 12)
    # and three 3x3 see 7x7: 27 C^2 against 49 C^2
    three = nn.Sequential(*[nn.Conv2d(c, c, 3) for _ in range(3)])
    assert (
        last(summarize(three, (c, 16, 16))).rf
        == 7
        == gradient_receptive_field(three, (c, 16, 16))[0]
    )


def test_vgg16_total_parameters_and_receptive_fields():
    vgg = torchvision.models.vgg16()
    s = summarize(
        vgg, (3, 32, 32)
    )  # 32x32: pool5 is 1x1; the adaptive pool replicates it to 7x7
    assert s.total_params == sum(p.numel() for p in vgg.parameters()) == 138_357_544
    assert s.trainable_params == s.total_params
    assert sum(layer.params for layer in s) == s.total_params
    rf = {layer.name: layer.rf for layer in s}
    assert (
        rf["features.3"] == 5 and rf["features.28"] == 196 and rf["features.30"] == 212
    )  # conv1_2, conv5_3, pool5
    assert s[30].stride == (32, 32)
    fc6 = next(layer for layer in s if layer.name == "classifier.0")
    assert (
        fc6.params == 512 * 7 * 7 * 4096 + 4096 and fc6.mult_adds == 512 * 7 * 7 * 4096
    )


def test_frozen_parameters_are_counted_apart_and_uncalled_ones_are_a_row():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.up = BilinearUpsample(4, 2)  # frozen bilinear kernel
            self.unused = nn.Linear(5, 5)

        def forward(self, x):
            return self.up(self.conv(x))

    net = Net()
    s = summarize(net, (3, 8, 8))
    assert s.total_params == sum(p.numel() for p in net.parameters())
    assert s.total_params - s.trainable_params == net.up.weight.numel() == 4 * 4 * 4 * 4
    assert s[-1].name == "(not called)" and s[-1].params == 30
    up = next(layer for layer in s if layer.name == "up")
    # transposed convolution: multiply-adds by input positions (8x8 of them)
    assert up.mult_adds == 4 * 4 * 4 * 4 * 8 * 8 and up.output_shape == (4, 16, 16)
    assert (
        up.stride == (0.5, 0.5) and up.rf == 3 + 1
    )  # kernel 4, stride 2: two input positions per output


def test_shared_module_counts_parameters_once():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    net = nn.Sequential(conv, nn.ReLU(), conv)
    s = summarize(net, (4, 8, 8))
    assert [layer.params for layer in s] == [conv.weight.numel() + 4, 0, 0]
    assert s.total_params == 4 * 4 * 9 + 4
    assert [layer.rf for layer in s] == [3, 3, 5]


@pytest.mark.parametrize(
    "layers",
    [
        # strides, dilation and average pooling
        [
            nn.Conv2d(2, 3, 3, stride=2),
            nn.AvgPool2d(2),
            nn.Conv2d(3, 3, 3, dilation=2),
            nn.Conv2d(3, 2, 5, stride=2),
        ],
        # transposed convolution and bilinear upsampling reduce the jump
        [
            nn.Conv2d(2, 3, 3, stride=2),
            nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1),
            nn.Conv2d(3, 2, 3),
        ],
        [
            nn.Conv2d(2, 3, 3, stride=2),
            nn.Upsample(scale_factor=2, mode="bilinear"),
            nn.Conv2d(3, 2, 3),
        ],
        # non-square kernels
        [nn.Conv2d(2, 3, (1, 7)), nn.Conv2d(3, 2, (5, 1), stride=(2, 1))],
    ],
)
def test_summary_matches_the_gradient(layers):
    net = nn.Sequential(*layers)
    size = (2, 48, 48)
    info = last(summarize(net, size))
    assert tuple(info.receptive_field) == gradient_receptive_field(net, size)


def test_branching_resnet_follows_the_data_flow_not_the_hook_order():
    """ResNet's 1x1 stride-2 shortcut fires after the main branch; the stride must not compound."""
    r = torchvision.models.resnet18()
    net = nn.Sequential(
        r.conv1, r.bn1, r.relu, nn.AvgPool2d(3, 2, 1), r.layer1, r.layer2, r.layer3
    )
    s = summarize(net, (3, 64, 64))
    out = last(s)
    assert out.stride == (16, 16) and out.output_shape == (256, 4, 4)
    assert out.rf == 211  # the known theoretical receptive field of ResNet-18's layer3
    assert gradient_receptive_field(net, (3, 288, 288)) == (
        211,
        211,
    )  # measured: the same
    downsample = next(layer for layer in s if layer.name == "5.0.downsample.0")
    assert downsample.stride == (8, 8)


def test_fcn8s_reports_the_vgg_geometry():
    from convision.models import build_model

    fcn = build_model("fcn8s", weights=None)
    s = summarize(fcn, (3, 64, 64))
    by_name = {layer.name: layer for layer in s}
    assert by_name["fc6"].rf == 404 and by_name["fc7"].stride == (32, 32)
    assert (
        by_name["score_pool4"].stride == (16, 16) and by_name["score_pool4"].rf == 100
    )
    assert by_name["score_pool3"].stride == (8, 8) and by_name["score_pool3"].rf == 44
    # the fused path: upscore2 (k 4, s 2) adds one stride-32 step, upscore_pool4 one stride-16 step, upscore8 one stride-8 step
    assert (
        by_name["upscore2"].rf == 404 + 32
        and by_name["upscore_pool4"].rf == 404 + 32 + 16
    )
    final = by_name["upscore8"]
    assert (
        final.stride == (1, 1)
        and final.rf == 404 + 32 + 16 + 8
        and final.output_shape == (21, 64, 64)
    )
    assert s.total_params == sum(p.numel() for p in fcn.parameters())
    frozen = sum(p.numel() for p in fcn.parameters() if not p.requires_grad)
    assert (
        s.total_params - s.trainable_params == frozen > 0
    )  # the fixed bilinear upsampling


def test_mult_adds_of_linear_and_grouped_convolution():
    net = nn.Sequential(
        nn.Conv2d(8, 16, 3, padding=1, groups=4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    s = summarize(net, (8, 10, 10))
    assert s[0].mult_adds == 3 * 3 * (8 // 4) * 16 * 10 * 10
    assert s[-1].mult_adds == 16 * 10 and s[-1].output_shape == (10,)
    assert s.total_mult_adds == s[0].mult_adds + s[-1].mult_adds
    assert s[1].rf == 3 + 9  # global pooling over 10x10 at stride 1
    assert math.isclose(s[-1].rf, 12)


def test_summary_restores_training_mode_and_rejects_bad_sizes():
    net = nn.Sequential(nn.Conv2d(3, 3, 3), nn.Dropout())
    net.train()
    summarize(net, (3, 8, 8))
    assert net.training
    with pytest.raises(ValueError):
        summarize(net, (8, 8))


def test_padding_channels_last_linear_and_attention_parameters():
    class ToNHWC(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1)

    class ToNCHW(nn.Module):
        def forward(self, x):
            return x.permute(0, 3, 1, 2)

    # ConvNeXt-style: a Linear over channels between permutes is point-wise; padding changes nothing
    net = nn.Sequential(
        nn.ZeroPad2d(2),
        nn.Conv2d(3, 8, 3),
        ToNHWC(),
        nn.Linear(8, 8),
        ToNCHW(),
        nn.Conv2d(8, 4, 3, stride=2),
    )
    s = summarize(net, (3, 16, 16))
    assert [layer.rf for layer in s] == [1, 3, 3, 3, 3, 5]
    assert (
        s[-1].stride == (2, 2) and s[3].mult_adds == 8 * 8 * 18 * 18
    )  # 16 + 2*2 padding - 2

    class Attn(
        nn.Module
    ):  # MultiheadAttention uses out_proj's weight without calling out_proj
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            t = x.flatten(2).transpose(1, 2)
            return self.attn(t, t, t)[0]

    m = Attn()
    s = summarize(m, (8, 4, 4))
    assert [layer.name for layer in s] == ["attn"]
    assert s[0].params == s.total_params == sum(p.numel() for p in m.parameters())
