"""Tiled inference: windows cover the image; objects cut by a window edge come back once, whole."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from convision.errors import ConfigError
from convision.models.detection.tiling import detect_tiled, merge_tiles, tile_windows
from convision.tasks.detect import predict


def _scene(h: int, w: int, rects: list[tuple[int, int, int, int]]) -> np.ndarray:
    image = np.zeros((h, w, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in rects:
        image[y1:y2, x1:x2] = 255
    return image


def _oracle(window: np.ndarray) -> dict[str, torch.Tensor]:
    """A perfect detector of white rectangles (connected components), in window pixels."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(
        (window[..., 0] > 127).astype(np.uint8), connectivity=4
    )
    boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:n]]
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.full((len(boxes),), 0.9),
        "labels": torch.zeros(len(boxes), dtype=torch.long),
    }


def _iou(a: list[float], b: tuple[int, int, int, int]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (
        (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    )


def test_windows_cover_the_image_with_the_overlap() -> None:
    wins = tile_windows(300, 500, 128, 32)
    covered = np.zeros((300, 500), dtype=bool)
    for x1, y1, x2, y2 in wins:
        assert x2 - x1 == 128 and y2 - y1 == 128 and x2 <= 500 and y2 <= 300
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    xs = sorted({w[0] for w in wins})
    assert (
        xs[0] == 0
        and xs[-1] == 500 - 128
        and all(b - a <= 96 for a, b in zip(xs, xs[1:]))
    )
    assert tile_windows(100, 90, 128, 32) == [
        (0, 0, 90, 100)
    ]  # smaller than a tile: the image itself
    with pytest.raises(ValueError):
        tile_windows(100, 100, 64, 64)


def test_object_cut_by_a_window_edge_is_detected_once_whole() -> None:
    # windows at x = 0, 80, 160 (tile 128, overlap 48); the middle object crosses x = 128 (edge of window 0)
    truth = [(110, 40, 150, 70), (20, 20, 50, 45), (230, 150, 270, 190)]
    image = _scene(200, 288, truth)
    found = detect_tiled(
        lambda b: _oracle(image[b[1] : b[3], b[0] : b[2]]),
        200,
        288,
        128,
        48,
        nms_thresh=0.5,
    )
    boxes = found["boxes"].tolist()
    assert len(boxes) == len(truth)
    for t in truth:
        assert max(_iou(b, t) for b in boxes) > 0.99


def test_object_larger_than_the_overlap_is_joined_across_windows() -> None:
    truth = [(60, 30, 200, 60)]  # 140 px wide: no window of 128 holds it whole
    image = _scene(100, 260, truth)
    found = detect_tiled(
        lambda b: _oracle(image[b[1] : b[3], b[0] : b[2]]),
        100,
        260,
        128,
        32,
        nms_thresh=0.5,
    )
    assert (
        len(found["boxes"]) == 1 and _iou(found["boxes"][0].tolist(), truth[0]) > 0.99
    )


def test_merge_keeps_separate_objects_of_other_classes() -> None:
    # windows [0, 100] and [60, 160] share x in [60, 100]; the whole box lies in the second window,
    # the pieces (cut at x = 100) in the first; only the class-0 piece is the whole box's object
    boxes = torch.tensor([[70.0, 0, 120, 40], [70, 0, 100, 40], [70, 0, 100, 40]])
    windows = torch.tensor([[60.0, 0, 160, 100], [0, 0, 100, 100], [0, 0, 100, 100]])
    out = merge_tiles(
        boxes,
        torch.tensor([0.9, 0.8, 0.7]),
        torch.tensor([0, 0, 1]),
        windows,
        torch.tensor([False, True, True]),
        nms_thresh=0.5,
    )
    assert sorted(out[2].tolist()) == [0, 1] and out[0][out[2] == 0].tolist() == [
        [70.0, 0, 120, 40]
    ]


class _OracleNet(nn.Module):
    """The oracle behind the detector contract that ``predict`` expects."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.min_size = self.max_size = side
        self.task, self.classes = "detect", ["square"]
        self.windows: list[tuple[int, int]] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.windows.append(tuple(images[0].shape[-2:]))
        return [_oracle((images[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))]


def test_predict_tiles_a_large_image() -> None:
    truth = [(100, 100, 140, 130), (300, 20, 330, 60)]
    net = _OracleNet(128)
    pred = predict(
        net, _scene(256, 384, truth), device="cpu", tile=128, tile_overlap=48
    )[0]
    assert len(net.windows) > 1 and all(w == (128, 128) for w in net.windows)
    assert len(pred["boxes"]) == 2 and all(
        max(_iou(b, t) for b in pred["boxes"]) > 0.99 for t in truth
    )
    with pytest.raises(ConfigError, match="tile_overlap"):
        predict(net, _scene(256, 384, truth), device="cpu", tile=128, tile_overlap=128)
