"""ConfusionMatrix: FCN metrics (Long et al. 2015, sec. 5), ignore pixels, absent classes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from convision.errors import DataError
from convision.metrics import ConfusionMatrix, format_table

# target / prediction of 10 pixels, the last one ignored
TARGET = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 2, 2, 255]])
PRED = torch.tensor([[0, 0, 1, 2, 1, 1, 0, 2, 1, 0]])


def test_hand_computed_three_classes():
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    # rows = ground truth, columns = prediction
    assert cm.mat.tolist() == [[2, 1, 1], [1, 2, 0], [0, 1, 1]]
    m = cm.compute()
    # t = (4, 3, 2), predicted = (3, 4, 2), n_ii = (2, 2, 1)
    assert m["pixel_accuracy"] == pytest.approx(5 / 9)
    assert m["mean_accuracy"] == pytest.approx((2 / 4 + 2 / 3 + 1 / 2) / 3)
    iou = [2 / (4 + 3 - 2), 2 / (3 + 4 - 2), 1 / (2 + 2 - 1)]
    assert m["per_class_iou"] == pytest.approx(iou)
    assert m["per_class_accuracy"] == pytest.approx([2 / 4, 2 / 3, 1 / 2])
    assert m["miou"] == pytest.approx(sum(iou) / 3)
    assert m["fwiou"] == pytest.approx((4 * iou[0] + 3 * iou[1] + 2 * iou[2]) / 9)


def test_batches_accumulate_like_one_update():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 5, (6, 9, 9), generator=g)
    target = torch.randint(0, 5, (6, 9, 9), generator=g)
    target[:, 0] = 255
    whole = ConfusionMatrix(5)
    whole.update(pred, target)
    parts = ConfusionMatrix(5)
    for i in range(6):
        parts.update(pred[i : i + 1], target[i : i + 1])
    assert torch.equal(whole.mat, parts.mat)
    assert whole.mat.sum() == 6 * 8 * 9  # the ignored row is not counted


def test_ignored_pixels_do_not_count_whatever_is_predicted():
    a = ConfusionMatrix(3)
    a.update(PRED, TARGET)
    b = ConfusionMatrix(3)
    pred = torch.cat([PRED, torch.full((1, 10), 2)], 1)
    target = torch.cat([TARGET, torch.full((1, 10), 255)], 1)
    b.update(pred, target)
    assert torch.equal(a.mat, b.mat)
    # a custom ignore value
    c = ConfusionMatrix(3, ignore_index=-1)
    c.update(PRED, torch.where(TARGET == 255, -1, TARGET))
    assert torch.equal(a.mat, c.mat)


def test_class_absent_from_prediction_and_truth_is_left_out():
    cm3 = ConfusionMatrix(3)
    cm3.update(PRED, TARGET)
    cm4 = ConfusionMatrix(4)  # class 3 appears nowhere
    cm4.update(PRED, TARGET)
    m3, m4 = cm3.compute(), cm4.compute()
    assert m4["per_class_iou"][3] is None and m4["per_class_accuracy"][3] is None
    for key in ("pixel_accuracy", "mean_accuracy", "miou", "fwiou"):
        assert m4[key] == pytest.approx(m3[key])
    json.dumps(m4)  # JSON-friendly: None, not NaN, in the lists


def test_class_only_predicted_counts_as_zero_iou_but_not_in_mean_accuracy():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 0, 0]))
    m = cm.compute()
    assert m["per_class_iou"] == pytest.approx([0.25, 0.0])
    assert m["per_class_accuracy"][1] is None  # t_1 = 0
    assert m["miou"] == pytest.approx(0.125)
    assert m["mean_accuracy"] == pytest.approx(0.25)
    assert m["fwiou"] == pytest.approx(0.25)


def test_empty_matrix_gives_nan_not_an_exception():
    m = ConfusionMatrix(3).compute()
    assert math.isnan(m["miou"]) and math.isnan(m["pixel_accuracy"])
    assert m["per_class_iou"] == [None, None, None]


def test_out_of_range_values_are_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(DataError, match="class value 7"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(TypeError):
        cm.update(torch.rand(2), torch.tensor([0, 1]))
    assert cm.mat.sum() == 0  # nothing was added by the failed updates


def test_agrees_with_torchmetrics_macro_jaccard():
    """torchmetrics' macro Jaccard gives classes with no prediction and no target zero weight,
    i.e. leaves them out of the mean, exactly like FCN's rule here; so the mIoUs agree also with
    an absent class. (Per class, torchmetrics reports 0 for such a class; we report None.)"""
    from torchmetrics.classification import MulticlassJaccardIndex

    g = torch.Generator().manual_seed(1)
    num_classes = 6
    pred = torch.randint(0, 5, (4, 16, 16), generator=g)  # class 5 never predicted ...
    target = torch.randint(0, 5, (4, 16, 16), generator=g)  # ... nor present
    target[torch.rand(target.shape, generator=g) < 0.1] = 255
    ours = ConfusionMatrix(num_classes)
    tm = MulticlassJaccardIndex(
        num_classes=num_classes, average="macro", ignore_index=255
    )
    for i in range(4):
        ours.update(pred[i : i + 1], target[i : i + 1])
        tm.update(pred[i : i + 1], target[i : i + 1])
    m = ours.compute()
    assert m["per_class_iou"][5] is None
    assert m["miou"] == pytest.approx(float(tm.compute()), abs=1e-6)
    per_class = MulticlassJaccardIndex(
        num_classes=num_classes, average="none", ignore_index=255
    )
    per_class.update(pred, target)
    assert m["per_class_iou"][:5] == pytest.approx(
        per_class.compute()[:5].tolist(), abs=1e-6
    )


def test_reduce_is_a_no_op_without_distributed():
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    before = cm.mat.clone()
    cm.reduce_()
    assert torch.equal(cm.mat, before)


def test_format_table_lists_classes_and_summary():
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    text = format_table(cm.compute(), ["background", "cat", "dog", "bird"])
    lines = text.splitlines()
    assert lines[0].split() == ["class", "IoU", "acc"]
    assert lines[1].split() == ["background", "40.00", "50.00"]
    assert lines[4].split() == ["bird", "-", "-"]
    assert any(
        line.startswith("mean IoU")
        and line.split()[-1] == f"{100 * (0.8 + 1 / 3) / 3:.2f}"
        for line in lines
    )
    assert "pixel accuracy" in text and "f.w. IoU" in text and "mean accuracy" in text
