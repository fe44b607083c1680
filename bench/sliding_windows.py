"""OverFeat-style sliding windows: one pass of the convolutionalized classifier over a large
image vs classifying every window crop by crop, in one run: same scores, speed-up printed.

Two classifiers: a padding-free VGG-like net (valid convolutions: the score map equals the
crop-by-crop outputs exactly) and torchvision's VGG11 (padded convolutions: a dense evaluation,
close to but not equal to the crops; see convision.nn.convolutionalize).

    .venv/bin/python bench/sliding_windows.py [--small-image 256] [--vgg-image 448]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision
from torch import nn

from convision.nn.convolutionalize import convolutionalize


def padding_free_net(num_classes: int = 10) -> nn.Sequential:
    """64x64 input: 64 -conv3-> 62 -pool-> 31 -conv3-> 29 -pool-> 14 -conv3-> 12 -pool-> 6."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 6 * 6, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    ).eval()


@torch.no_grad()
def compare(name: str, model: nn.Module, window: int, image_side: int) -> None:
    conv = convolutionalize(model, input_size=window).eval()
    image = torch.randn(1, 3, image_side, image_side)
    t = time.perf_counter()
    scores = conv(image)[0]  # [K, n, n]
    t_conv = time.perf_counter() - t
    n = scores.shape[-1]
    t = time.perf_counter()
    crops = torch.empty_like(scores)
    for i in range(n):
        for j in range(n):
            y, x = i * conv.stride, j * conv.stride
            crops[:, i, j] = model(image[:, :, y : y + window, x : x + window])[0]
    t_crops = time.perf_counter() - t
    diff = (scores - crops).abs().max().item()
    scale = crops.abs().max().item()
    print(
        f"{name:34s} {n}x{n}={n * n:4d} windows of {window}px on {image_side}px, stride {conv.stride}: "
        f"one pass {t_conv * 1e3:8.1f} ms, crop by crop {t_crops * 1e3:9.1f} ms, "
        f"speed-up {t_crops / t_conv:6.1f}x, max |diff| {diff:.2e} (scores up to {scale:.2e})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--small-image", type=int, default=256)
    ap.add_argument("--vgg-image", type=int, default=448)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    compare("padding-free VGG-like (exact)", padding_free_net(), 64, args.small_image)
    vgg = torchvision.models.vgg11(weights=None, num_classes=10).eval()
    compare("torchvision VGG11 (dense eval)", vgg, 224, args.vgg_image)


if __name__ == "__main__":
    main()
