"""Detection metrics: VOC AP on hand-computed cases, devkit matching rules, COCO evaluation backends."""

from __future__ import annotations

import json
import math
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from convision.errors import ConfigError, DataError
from convision.metrics.detection import (
    COCO_STAT_NAMES,
    DetectionMetric,
    coco_evaluate,
    format_table,
    plot_pr_curves,
    to_coco_results,
    voc_ap,
    write_coco_results,
)

A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 40.0, 30.0]
FAR = [100.0, 100.0, 110.0, 110.0]


def pred(boxes, labels, scores):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


def target(boxes, labels, difficult=None, **extra):
    t = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if difficult is not None:
        t["difficult"] = torch.tensor(difficult, dtype=torch.bool)
    t.update(extra)
    return t


def evaluate(preds, targets, classes=("a",), **kw):
    m = DetectionMetric(list(classes), **kw)
    m.update(preds, targets)
    return m, m.compute()


# ---------------------------------------------------------------- voc_ap
def test_voc_ap_envelope_and_11_point_by_hand():
    rec, prec = [0.2, 0.4, 0.4, 0.6], [0.5, 1.0, 0.5, 0.75]
    # envelope (max to the right): 1, 1, .75, .75 -> .2*1 + .2*1 + .2*.75
    assert voc_ap(rec, prec) == pytest.approx(0.55)
    # t = 0 .. .4: 1 (5 points); t = .5, .6: .75; t = .7 .. 1: nothing reaches that recall -> 0
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(
        (5 * 1 + 2 * 0.75) / 11
    )
    assert voc_ap(np.array(rec), torch.tensor(prec)) == pytest.approx(0.55)


def test_voc_ap_11_point_thresholds_are_exact_tenths_and_empty_curve_is_zero():
    # recall exactly 0.3 reaches the thresholds 0, .1, .2 and .3 (not missed by 3 * 0.1 = 0.30000000000000004)
    assert voc_ap([0.3], [1.0], use_07_metric=True) == pytest.approx(4 / 11)
    assert voc_ap([0.3], [1.0]) == pytest.approx(0.3)
    assert voc_ap([], []) == 0.0 and voc_ap([], [], use_07_metric=True) == 0.0
    with pytest.raises(ValueError):
        voc_ap([0.1, 0.2], [1.0])


# ---------------------------------------------------------------- VOC matching
def test_perfect_detections_give_ap_one():
    targets = [target([A, B], [0, 1]), target([B], [0])]
    preds = [pred([B, A], [1, 0], [0.3, 0.9]), pred([B], [0], [0.1])]
    _, r = evaluate(preds, targets, classes=("a", "b"))
    assert r["mAP"] == 1.0 and r["mAP_07"] == 1.0
    assert r["AP"] == {"a": 1.0, "b": 1.0} and r["recall"] == {"a": 1.0, "b": 1.0}
    assert r["num_gt"] == {"a": 2, "b": 1} and r["num_det"] == {"a": 2, "b": 1}
    json.dumps(r)  # serialisable as the trainer stores it


def test_false_positive_ranked_first():
    # ranking FP, TP, TP over 2 gts: recall 0, .5, 1; precision 0, .5, 2/3 -> both APs 2/3
    targets = [target([A], [0]), target([B], [0])]
    preds = [pred([FAR, A], [0, 0], [0.9, 0.8]), pred([B], [0], [0.7])]
    m, r = evaluate(preds, targets)
    assert r["AP"]["a"] == pytest.approx(2 / 3) and r["AP_07"]["a"] == pytest.approx(
        2 / 3
    )
    rec, prec = m.pr_curves["a"]
    assert rec == pytest.approx([0, 0.5, 1]) and prec == pytest.approx([0, 0.5, 2 / 3])


def test_duplicate_is_false_positive_and_11_point_differs_from_area():
    # TP (A), duplicate of A, TP (B): recall .5, .5, 1; precision 1, .5, 2/3
    targets = [target([A], [0]), target([B], [0])]
    preds = [
        pred([A, [0.0, 0.0, 10.0, 9.0]], [0, 0], [0.9, 0.8]),
        pred([B], [0], [0.7]),
    ]
    m, r = evaluate(preds, targets)
    assert m.pr_curves["a"][1] == pytest.approx([1, 0.5, 2 / 3])
    assert r["AP"]["a"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # 5/6
    assert r["AP_07"]["a"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)  # 28/33
    assert r["mAP"] != pytest.approx(r["mAP_07"])
    assert r["num_det"]["a"] == 3 and r["recall"]["a"] == 1.0


def test_only_boxes_of_the_same_class_match():
    # a class-a detection exactly on a class-b box is a FP for a, and does not take b's box
    targets = [target([A], [0]), target([B], [1])]
    preds = [pred([A], [0], [0.8]), pred([B, B], [0, 1], [0.9, 0.7])]
    m, r = evaluate(preds, targets, classes=("a", "b"))
    assert m.pr_curves["a"] == (pytest.approx([0.0, 1.0]), pytest.approx([0.0, 0.5]))
    assert r["AP"] == {"a": pytest.approx(0.5), "b": 1.0}


def test_devkit_rule_best_overlap_already_taken_is_false_positive():
    # the second detection overlaps A (0.905, taken) more than the free box B2 (0.739): the devkit says FP
    b2 = [0.0, 2.0, 10.0, 12.0]
    targets = [target([A, b2], [0, 0])]
    preds = [pred([A, [0.0, 0.5, 10.0, 10.5]], [0, 0], [0.9, 0.8])]
    m, r = evaluate(preds, targets)
    assert m.pr_curves["a"] == (pytest.approx([0.5, 0.5]), pytest.approx([1.0, 0.5]))
    assert r["AP"]["a"] == pytest.approx(0.5)


def test_difficult_ground_truth_is_ignored():
    d = [50.0, 50.0, 60.0, 60.0]
    targets = [target([A, d], [0, 0], difficult=[False, True])]
    # a detection of the difficult box ranked first: neither TP nor FP
    preds = [pred([d, A], [0, 0], [0.9, 0.8])]
    m, r = evaluate(preds, targets)
    assert r["AP"]["a"] == 1.0 and r["recall"]["a"] == 1.0
    assert r["num_gt"]["a"] == 1 and r["num_det"]["a"] == 2
    assert m.pr_curves["a"] == ([1.0], [1.0])
    # missing the difficult box costs nothing either
    _, r = evaluate([pred([A], [0], [0.8])], targets)
    assert r["AP"]["a"] == 1.0


def test_iou_threshold_boundary():
    targets = [target([A], [0])]
    half = [0.0, 0.0, 10.0, 5.0]  # IoU exactly 0.5: matches (>=)
    assert evaluate([pred([half], [0], [1.0])], targets)[1]["AP"]["a"] == 1.0
    below = [0.0, 0.0, 10.0, 4.9]
    assert evaluate([pred([below], [0], [1.0])], targets)[1]["AP"]["a"] == 0.0
    assert (
        evaluate([pred([half], [0], [1.0])], targets, iou_threshold=0.7)[1]["AP"]["a"]
        == 0.0
    )


def test_class_without_ground_truth_is_excluded_from_the_mean():
    targets = [target([A], [0])]
    preds = [pred([A, B], [0, 1], [0.9, 0.8])]
    _, r = evaluate(preds, targets, classes=("a", "b"))
    assert r["AP"]["b"] is None and r["AP_07"]["b"] is None and r["recall"]["b"] is None
    assert r["num_det"]["b"] == 1 and r["num_gt"]["b"] == 0
    assert r["mAP"] == 1.0
    table = format_table(r)
    assert "a" in table and "100.00" in table and "-" in table.splitlines()[2]


def test_empty_predictions_and_empty_set():
    _, r = evaluate([pred([], [], [])], [target([A], [0])])
    assert (
        r["AP"]["a"] == 0.0
        and r["mAP_07"] == 0.0
        and r["recall"]["a"] == 0.0
        and r["num_det"]["a"] == 0
    )
    _, r = evaluate([], [])
    assert math.isnan(r["mAP"]) and r["num_images"] == 0


def test_image_ids_make_ties_independent_of_order():
    # equal scores: the TP of image 0 before the FP of image 1 -> AP 1; the other way round -> AP .5
    imgs = [
        (pred([A], [0], [0.5]), target([A], [0], image_id=0)),
        (pred([FAR], [0], [0.5]), target([], [], image_id=1)),
    ]
    for order in (imgs, imgs[::-1]):
        _, r = evaluate([p for p, _ in order], [t for _, t in order])
        assert r["AP"]["a"] == 1.0
    no_ids = [
        ({**p}, {k: v for k, v in t.items() if k != "image_id"}) for p, t in imgs[::-1]
    ]
    assert evaluate([p for p, _ in no_ids], [t for _, t in no_ids])[1]["AP"][
        "a"
    ] == pytest.approx(0.5)


def test_bad_inputs():
    m = DetectionMetric(["a", "b"])
    with pytest.raises(DataError, match="outside 0..1"):
        m.update([pred([], [], [])], [target([A], [2])])
    with pytest.raises(DataError, match="N x 4"):
        m.update(
            [pred([], [], [])],
            [{"boxes": torch.zeros(3), "labels": torch.zeros(3, dtype=torch.long)}],
        )
    with pytest.raises(ValueError):
        m.update([pred([A], [5], [0.1])], [target([A], [0])])
    with pytest.raises(ConfigError):
        DetectionMetric(["a"], iou_threshold=0)


def test_plot_pr_curves(tmp_path):
    m, _ = evaluate([pred([FAR, A], [0, 0], [0.9, 0.8])], [target([A], [0])])
    path = plot_pr_curves(m, tmp_path / "pr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _worker(rank: int, world: int, init: str, out: str, preds, targets) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    m = DetectionMetric(["a", "b"])
    m.update(
        preds[rank::world], targets[rank::world]
    )  # the trainer's shards: rank, rank + world, ...
    m.reduce_()
    torch.save(m.compute(), f"{out}.{rank}")
    dist.destroy_process_group()


def test_reduce_gathers_all_images():
    preds, targets = _random_set(8, seed=1)
    targets = [{**t, "image_id": i} for i, t in enumerate(targets)]
    whole = DetectionMetric(["a", "b"])
    whole.update(preds, targets)
    expected = whole.compute()
    with tempfile.TemporaryDirectory() as d:
        init = "file://" + os.path.join(d, "store")
        out = os.path.join(d, "r.pt")
        mp.start_processes(
            _worker,
            args=(2, init, out, preds, targets),
            nprocs=2,
            join=True,
            start_method="fork",
        )
        results = [torch.load(f"{out}.{r}") for r in range(2)]
    assert results[0] == results[1] == expected
    assert expected["num_images"] == 8 and 0 < expected["mAP"] < 1


# ---------------------------------------------------------------- COCO
def _random_set(n: int, seed: int, k: int = 2):
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for i in range(n):
        m = int(torch.randint(1, 5, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * 200
        boxes = torch.cat([xy, xy + torch.rand(m, 2, generator=g) * 150 + 4], 1)
        labels = torch.randint(0, k, (m,), generator=g)
        targets.append(
            {
                "boxes": boxes,
                "labels": labels,
                "difficult": torch.rand(m, generator=g) < 0.15,
                "orig_size": torch.tensor([400, 360]),
            }
        )
        extra = int(torch.randint(0, 4, (1,), generator=g))
        xy = torch.rand(extra, 2, generator=g) * 200
        noise = torch.cat([xy, xy + torch.rand(extra, 2, generator=g) * 150 + 4], 1)
        pb = torch.cat([boxes + torch.randn(m, 4, generator=g) * 6, noise])
        pl = torch.cat([labels, torch.randint(0, k, (extra,), generator=g)])
        preds.append(
            {"boxes": pb, "labels": pl, "scores": torch.rand(m + extra, generator=g)}
        )
    return preds, targets


def test_coco_backends_agree():
    preds, targets = _random_set(12, seed=0)
    ref = coco_evaluate(preds, targets, ["a", "b"], backend="pycocotools")
    fast = coco_evaluate(preds, targets, ["a", "b"], backend="faster_coco_eval")
    for name in COCO_STAT_NAMES:
        assert (ref[name] is None) == (fast[name] is None), name
        if ref[name] is not None:
            assert fast[name] == pytest.approx(ref[name], abs=1e-6), name
    assert 0 < ref["mAP"] < ref["AP50"] <= 1
    for c in ("a", "b"):
        assert fast["AP_per_class"][c] == pytest.approx(
            ref["AP_per_class"][c], abs=1e-6
        )
    assert np.mean(list(ref["AP_per_class"].values())) == pytest.approx(ref["mAP"])
    assert (
        "Average Precision" in ref["summary"] and "Average Precision" in fast["summary"]
    )
    json.dumps(ref)


def test_coco_perfect_and_empty(capsys):
    _, targets = _random_set(5, seed=3)
    perfect = [
        {
            "boxes": t["boxes"],
            "labels": t["labels"],
            "scores": torch.ones(len(t["labels"])),
        }
        for t in targets
    ]
    for backend in ("pycocotools", "faster_coco_eval"):
        r = coco_evaluate(perfect, targets, ["a", "b"], backend=backend)
        assert r["AP50"] == pytest.approx(1.0) and r["mAP"] == pytest.approx(1.0)
        empty = [
            {
                "boxes": torch.zeros(0, 4),
                "labels": torch.zeros(0, dtype=torch.long),
                "scores": torch.zeros(0),
            }
        ] * 5
        r = coco_evaluate(empty, targets, ["a", "b"], backend=backend)
        assert r["mAP"] == 0.0 and r["AP50"] == 0.0 and r["AR100"] == 0.0
    assert (
        "Average" not in capsys.readouterr().out
    )  # the backends' printout is captured


def test_coco_difficult_is_crowd_and_sizes_argument():
    # the difficult (crowd) box is not detected: it is not missed either, AP50 stays 1
    r = coco_evaluate(
        [pred([A], [0], [0.9])],
        [target([A, FAR], [0, 0], difficult=[False, True])],
        ["a"],
        sizes=[(120, 120)],
    )
    assert r["AP50"] == pytest.approx(1.0) and r["AR100"] == pytest.approx(1.0)
    # the same box without the flag is missed: recall 1/2
    r = coco_evaluate([pred([A], [0], [0.9])], [target([A, FAR], [0, 0])], ["a"])
    assert r["AR100"] == pytest.approx(0.5) and r["AP50"] < 0.6


def test_coco_unknown_backend():
    with pytest.raises(ConfigError, match="pycocotools"):
        coco_evaluate([], [], ["a"], backend="detectron")


def test_to_coco_results_and_file(tmp_path):
    preds = [pred([[1.0, 2.0, 4.0, 8.0]], [1], [0.5]), pred([], [], [])]
    rows = to_coco_results(preds, [7, 9])
    assert rows == [
        {"image_id": 7, "category_id": 2, "bbox": [1.0, 2.0, 3.0, 6.0], "score": 0.5}
    ]
    assert to_coco_results(preds, [7, 9], category_ids=[5, 11])[0]["category_id"] == 11
    path = write_coco_results(tmp_path / "res.json", preds, [7, 9])
    assert json.loads(path.read_text()) == rows
