"""OverFeat's pieces: the greedy merge on hand-made boxes, multi-scale dense evaluation equal to
classifying the crops, and a localizer's box head slid over an image."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convision.models.localization import build_localizer, to_pixels
from convision.nn.convolutionalize import convolutionalize
from convision.nn.overfeat import (
    BoxRegressorMap,
    dense_scores,
    match_scores,
    merge_boxes,
    resize_by,
)
from tests.nn.test_convolutionalize import seeds_toy_fc

torch.set_num_threads(1)


def test_match_score_is_relative_centre_distance_plus_one_minus_iou():
    b = torch.tensor([[0, 0, 8, 8], [2, 0, 10, 8], [4, 0, 12, 8], [20, 0, 28, 8.0]])
    m = match_scores(b)
    assert m[0, 0] == 0 and torch.allclose(m, m.T)
    assert m[0, 1].item() == pytest.approx(0.25 + 1 - 6 / 10)  # a quarter side apart
    assert m[0, 2].item() == pytest.approx(0.5 + 1 - 4 / 12)  # half a side apart
    assert m[0, 3].item() == pytest.approx(2.5 + 1)  # disjoint


def test_greedy_merge_on_hand_made_boxes():
    boxes = torch.tensor(
        [
            [0, 0, 10, 10],
            [1, 0, 11, 10],
            [0, 1, 10, 11],  # three views of one object
            [50, 50, 60, 60],
            [52, 50, 62, 60],  # a second object
            [0, 0, 40, 40.0],  # a large box over the first: too different to merge
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    merged, total, count = merge_boxes(boxes, scores, threshold=1.0)
    assert count.tolist() == [3, 2, 1]
    assert torch.allclose(total, torch.tensor([2.4, 1.1, 0.4], dtype=torch.float64))
    expected = torch.tensor(
        [[1 / 3, 1 / 3, 31 / 3, 31 / 3], [51, 50, 61, 60], [0, 0, 40, 40]],
        dtype=torch.float64,
    )
    assert torch.allclose(merged, expected)
    # threshold 0: only identical boxes merge; a huge threshold: everything becomes one mean box
    same = torch.cat([boxes, boxes[:1]])
    m0, s0, c0 = merge_boxes(same, torch.cat([scores, scores[:1]]), threshold=0.0)
    assert len(m0) == 6 and c0[0] == 2 and s0[0].item() == pytest.approx(1.8)
    one, s1, c1 = merge_boxes(boxes, scores, threshold=1e9)
    assert c1.tolist() == [6] and torch.allclose(one[0], boxes.double().mean(0))
    assert s1.item() == pytest.approx(scores.sum().item())
    empty = merge_boxes(torch.zeros(0, 4), torch.zeros(0))
    assert [len(t) for t in empty] == [0, 0, 0]


def test_multiscale_dense_evaluation_equals_the_classifier_on_the_crops():
    torch.manual_seed(0)
    model = seeds_toy_fc().eval()  # padding-free: 14x14 windows, stride 2
    conv = convolutionalize(model, input_size=14).eval()
    image = torch.randn(3, 26, 31)
    scales = [1.0, 0.6, 1.7]
    maps = dense_scores(conv, image, scales)
    assert [m.scale for m in maps] == scales
    for m in maps:
        x = resize_by(image, m.scale)
        rows, cols = m.probs.shape[1:]
        assert (rows, cols) == ((x.shape[1] - 14) // 2 + 1, (x.shape[2] - 14) // 2 + 1)
        for k, (i, j) in enumerate([(0, 0), (rows - 1, cols - 1), (rows // 2, 1)]):
            crop = x[None, :, 2 * i : 2 * i + 14, 2 * j : 2 * j + 14]
            with torch.no_grad():
                want = model(crop).softmax(1)[0]
            assert torch.allclose(m.probs[:, i, j], want, atol=1e-5)
            window = (
                m.windows[i * cols + j]
                * torch.tensor([m.factor_x, m.factor_y] * 2).double()
            )
            assert torch.allclose(
                window, torch.tensor([2 * j, 2 * i, 2 * j + 14, 2 * i + 14.0]).double()
            )


def test_box_regressor_map_is_the_localizer_at_its_size_and_slides_by_its_stride():
    torch.manual_seed(0)
    loc = build_localizer("resnet18", 3, hidden=8).eval()
    nn.init.normal_(loc.box_head[-1].weight, std=0.05)  # boxes away from the centre
    reg = BoxRegressorMap(loc, 64)
    assert reg.stride == 32
    x = torch.randn(1, 3, 64, 64)
    boxes, grid = reg(x)
    with torch.no_grad():
        want = to_pixels(loc(x)["boxes"], 64, 64)
    assert grid == (1, 1) and torch.allclose(boxes.float(), want, atol=1e-4)
    big = torch.randn(1, 3, 128, 160)
    boxes, grid = reg(big)
    assert grid == (3, 4) and boxes.shape == (12, 4)
    # each box sits around its own window: window centres step by the stride
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert (centres[1:4, 0] - centres[0:3, 0]).sub(32).abs().max() < 20
    pooled = build_localizer("resnet18", 3, hidden=8, box_input="pooled")
    with pytest.raises(ValueError, match="pooled"):
        BoxRegressorMap(pooled, 64)
