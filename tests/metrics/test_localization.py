"""Localization metric: the seeds' rule (class right AND IoU > 0.5), mean IoU, class accuracy, DDP sum."""

from __future__ import annotations

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from convision.metrics.localization import (
    LocalizationMetric,
    format_table,
    localization_correct,
    paired_iou,
)

torch.set_num_threads(1)


def test_iou_by_hand():
    true = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 4)
    pred = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # identical: 1
            [0.0, 0.0, 10.0, 5.0],  # half the area inside: 50/100 = 0.5
            [5.0, 0.0, 15.0, 10.0],  # 50 / 150 = 1/3
            [20.0, 20.0, 30.0, 30.0],  # disjoint: 0
        ]
    )
    assert torch.allclose(
        paired_iou(pred, true),
        torch.tensor([1.0, 0.5, 1 / 3, 0.0], dtype=torch.float64),
    )


def test_correct_needs_right_class_and_iou_strictly_above_half():
    true = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 4)
    pred = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 5.0],
            [0.0, 0.0, 10.0, 6.0],
            [1.0, 1.0, 10.0, 10.0],
        ]
    )
    labels = torch.tensor([1, 1, 1, 1])
    pred_labels = torch.tensor([1, 1, 1, 2])
    # exact box ok; IoU exactly 0.5 is not > 0.5; IoU 0.6 ok; IoU 0.81 but wrong class
    assert localization_correct(pred_labels, pred, labels, true).tolist() == [
        True,
        False,
        True,
        False,
    ]


def test_metric_counts_and_table():
    m = LocalizationMetric(3)
    logits = torch.tensor(
        [[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]]
    )  # classes 0, 1, 2, 0
    labels = torch.tensor([0, 1, 1, 0])
    true = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 4)
    pred = torch.tensor(
        [
            [0.0, 0.0, 1.0, 1.0],
            [0.0, 0.0, 1.0, 0.4],
            [0.0, 0.0, 1.0, 1.0],
            [0.0, 0.0, 1.0, 0.6],
        ]
    )
    m.update(logits[:2], pred[:2], labels[:2], true[:2])
    m.update(logits[2:], pred[2:], labels[2:], true[2:])
    r = m.compute()
    # correct: #0 (class ok, IoU 1) and #3 (class ok, IoU 0.6); #1 IoU 0.4; #2 wrong class
    assert r["accuracy"] == pytest.approx(0.5)
    assert r["class_accuracy"] == pytest.approx(0.75)
    assert r["box_accuracy"] == pytest.approx(0.75)
    assert r["mean_iou"] == pytest.approx((1 + 0.4 + 1 + 0.6) / 4)
    assert r["num_images"] == 4
    assert "0.5000" in format_table(r)
    assert math.isnan(LocalizationMetric(3).compute()["accuracy"])


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    m = LocalizationMetric(2)
    # rank 0: one correct image; rank 1: two images, one with the wrong class
    if rank == 0:
        m.update(
            torch.tensor([1]),
            torch.tensor([[0.0, 0, 1, 1]]),
            torch.tensor([1]),
            torch.tensor([[0.0, 0, 1, 1]]),
        )
    else:
        m.update(
            torch.tensor([0, 1]),
            torch.tensor([[0.0, 0, 1, 1]] * 2),
            torch.tensor([1, 1]),
            torch.tensor([[0.0, 0, 1, 1]] * 2),
        )
    m.reduce_()
    if rank == 0:
        torch.save(m.compute(), out)
    dist.destroy_process_group()


def test_reduce_sums_over_processes():
    with tempfile.TemporaryDirectory() as d:
        init = "file://" + os.path.join(d, "store")
        out = os.path.join(d, "r.pt")
        mp.start_processes(
            _worker, args=(2, init, out), nprocs=2, join=True, start_method="fork"
        )
        r = torch.load(out)
    assert r["num_images"] == 3
    assert r["accuracy"] == pytest.approx(2 / 3) and r[
        "class_accuracy"
    ] == pytest.approx(2 / 3)
    assert r["mean_iou"] == pytest.approx(1.0)
