"""ObjectSizeMetric on hand-made masks whose components, areas and overlaps are known."""

from __future__ import annotations

import pytest
import torch

from convision.metrics.object_size import ObjectSizeMetric, parse_thresholds
from convision.metrics.segmentation import ConfusionMatrix


def _scene() -> tuple[torch.Tensor, torch.Tensor]:
    gt = torch.zeros(40, 40, dtype=torch.long)
    pred = torch.zeros(40, 40, dtype=torch.long)
    gt[1:4, 1:4] = 1  # A: class 1, 9 px (small), entirely missed
    gt[10:20, 10:20] = 1  # B: class 1, 100 px (large)
    pred[10:20, 10:20] = 1
    pred[10:20, 15] = (
        2  # B cut in two pieces by a 10-px column of class 2 (no class-2 object)
    )
    pred[20, 10:15] = 1  # 5 false-positive px joined to B's left piece
    gt[25:30, 2:6] = 2  # C: class 2, 20 px minus one ignored = 19 (medium)
    gt[25, 2] = 255
    pred[25:30, 2:6] = 2
    pred[25, 2] = 1  # on an ignored pixel: not counted
    pred[35:37, 35:37] = 1  # a hallucinated 4-px class-1 blob (small)
    return pred, gt


def test_buckets_of_hand_made_components():
    pred, gt = _scene()
    metric = ObjectSizeMetric(3, thresholds=(10, 100), exclude=[0])
    metric.update(pred[None], gt[None])
    b = metric.compute()["buckets"]
    assert list(b) == ["small", "medium", "large"]
    assert b["small"] == {
        "range": [0, 10],
        "objects": 1,
        "recall": 0.0,
        "iou": 0.0,  # 0 TP / (9 FN + 4 FP)
        "pieces": None,
    }
    assert b["medium"] == {
        "range": [10, 100],
        "objects": 1,
        "recall": 1.0,
        "iou": pytest.approx(19 / (19 + 10)),  # the class-2 column: its own area, 10 px
        "pieces": 1.0,
    }
    assert b["large"] == {
        "range": [100, None],
        "objects": 1,
        "recall": 1.0,  # 90 of 100 px
        "iou": pytest.approx(90 / (90 + 10 + 5)),
        "pieces": 2.0,
    }
    per_class = metric.compute()["per_class"]
    assert per_class[0] is None
    assert (
        per_class[1]["small"]["objects"] == 1 and per_class[2]["small"]["objects"] == 0
    )


def test_pixels_add_up_to_the_confusion_matrix():
    pred, gt = _scene()
    metric = ObjectSizeMetric(3, thresholds=(10, 100), exclude=[0])
    metric.update(pred, gt)  # [H, W] works too
    counts = metric.counts.sum((0, 1))
    cm = ConfusionMatrix(3)
    cm.update(pred[None], gt[None])
    m = cm.mat[1:]
    assert int(counts[2]) == int(m.diagonal(offset=1).sum())  # TP of classes 1, 2
    assert int(counts[2] + counts[3]) == int(m.sum())  # objects' pixels: TP + FN
    assert int(counts[4]) == int(cm.mat[:, 1:].sum() - m.diagonal(offset=1).sum())  # FP


def test_thresholds_recall_threshold_and_batches():
    pred, gt = _scene()
    metric = ObjectSizeMetric(3, thresholds=parse_thresholds("1000"), exclude=[0])
    metric.update(torch.stack([pred, pred]), torch.stack([gt, gt]))
    buckets = metric.compute()["buckets"]
    assert list(buckets) == ["area<1000", "area>=1000"]
    assert (
        buckets["area>=1000"]["objects"] == 0
        and buckets["area>=1000"]["recall"] is None
    )
    only = buckets["area<1000"]
    assert only["objects"] == 6 and only["recall"] == pytest.approx(4 / 6)
    strict = ObjectSizeMetric(3, thresholds=(1000,), exclude=[0], min_overlap=0.95)
    strict.update(pred, gt)
    assert strict.compute()["buckets"]["area<1000"]["recall"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="increasing"):
        parse_thresholds("9216,1024")


def test_no_overlap_anywhere():
    gt = torch.zeros(1, 20, 20, dtype=torch.long)
    pred = torch.zeros(1, 20, 20, dtype=torch.long)
    gt[0, 2:6, 2:6] = 1  # 16 px, missed
    pred[0, 10:13, 10:13] = 1  # 9 px elsewhere
    metric = ObjectSizeMetric(2, thresholds=(10,), exclude=[0])
    metric.update(pred, gt)
    b = metric.compute()["buckets"]
    assert b["area<10"]["objects"] == 0 and b["area<10"]["iou"] == 0.0  # 9 FP px
    assert b["area>=10"]["recall"] == 0.0 and b["area>=10"]["iou"] == 0.0


def test_instances_replace_connected_components():
    gt = torch.zeros(1, 20, 20, dtype=torch.long)
    inst = torch.zeros(1, 20, 20, dtype=torch.long)
    gt[0, 2:6, 2:12] = 1  # two touching class-1 instances: one component
    inst[0, 2:6, 2:6], inst[0, 2:6, 6:12] = 7, 3  # 16 px and 24 px
    gt[0, 10:12, 10:12], inst[0, 10:12, 10:12] = 2, 5  # a class-2 instance, 4 px
    pred = gt.clone()
    pred[0, 2:6, 6:12] = 0  # the 24-px instance missed
    by_components = ObjectSizeMetric(3, thresholds=(20,), exclude=[0])
    by_components.update(pred, gt)
    b = by_components.compute()["buckets"]
    assert b["area<20"]["objects"] == 1 and b["area>=20"]["objects"] == 1  # 4 px; 40 px
    assert b["area>=20"]["recall"] == 0.0  # 16 of 40 px
    by_instances = ObjectSizeMetric(3, thresholds=(20,), exclude=[0])
    by_instances.update(pred, gt, instances=inst)
    b = by_instances.compute()["buckets"]
    assert (
        b["area<20"]["objects"] == 2 and b["area<20"]["recall"] == 1.0
    )  # 16 px and 4 px
    assert (
        b["area>=20"]["objects"] == 1 and b["area>=20"]["recall"] == 0.0
    )  # 24 px missed
