"""bench/naive_vs_encoder_decoder.py's counters: the live-bytes peak and the multiply-adds of the
pooling-free stack, against hand counts."""

from __future__ import annotations

import torch
from torch import nn

from bench.naive_vs_encoder_decoder import (
    full_resolution_stack,
    mult_adds,
    peak_bytes,
)

torch.set_num_threads(1)


def test_peak_activation_bytes_match_a_hand_count():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 4, 1)
    )
    # inference: conv1's output (8 x 16 x 16 floats) is alive while conv2 writes its 4 x 16 x 16
    # (the in-place ReLU allocates nothing)
    assert peak_bytes(net, 16, train=False) == (8 + 4) * 16 * 16 * 4
    # training keeps more alive (what autograd saves, the loss)
    assert peak_bytes(net, 16, train=True) > (8 + 4) * 16 * 16 * 4


def test_full_resolution_stack_counts_and_receptive_field():
    macs, rf = mult_adds(full_resolution_stack(), 32)
    channels = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    per_pixel = sum(9 * a * b for a, b in zip(channels, channels[1:])) + 512 * 21
    assert (
        macs == per_pixel * 32 * 32 and rf == 27
    )  # 13 stride-1 3x3 layers: 2 * 13 + 1
