"""COCO mask AP (``iou_type="segm"``) equals pycocotools run by hand on the same predictions."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from convision.metrics.detection import coco_evaluate, masks_to_rles


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.uint8)


def _box(m):
    ys, xs = np.nonzero(m)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_mask_ap_equals_pycocotools_by_hand():
    rng = np.random.default_rng(0)
    h, w = 60, 80
    preds, targets = [], []
    gt_json = {"images": [], "annotations": [], "categories": [], "info": {}}
    gt_json["categories"] = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    results = []
    for i in range(4):
        gts = [
            _disc(h, w, rng.integers(10, 50), rng.integers(10, 70), rng.integers(4, 20))
            for _ in range(3)
        ]
        labels = rng.integers(0, 2, 3)
        # predictions: shifted / shrunk copies of the truth, one miss-labelled, one spurious
        dets = [np.roll(g, int(rng.integers(-3, 4)), axis=1) for g in gts]
        dets.append(_disc(h, w, 30, 40, 6))
        det_labels = np.concatenate([labels[:2], 1 - labels[2:], [0]])
        scores = rng.uniform(0.1, 1.0, len(dets))
        targets.append(
            {
                "boxes": torch.tensor([_box(g) for g in gts]),
                "labels": torch.from_numpy(labels),
                "orig_size": torch.tensor([h, w]),
                "image_id": i,
                "rles": masks_to_rles(torch.from_numpy(np.stack(gts))),
            }
        )
        preds.append(
            {
                "boxes": torch.tensor([_box(d) for d in dets]),
                "labels": torch.from_numpy(det_labels),
                "scores": torch.from_numpy(scores),
                "rles": masks_to_rles(torch.from_numpy(np.stack(dets))),
            }
        )
        gt_json["images"].append({"id": i, "width": w, "height": h})
        for g, c in zip(gts, labels):
            rle = mask_utils.encode(np.asfortranarray(g))
            gt_json["annotations"].append(
                {
                    "id": len(gt_json["annotations"]) + 1,
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "segmentation": rle,
                    "area": float(g.sum()),
                    "bbox": list(mask_utils.toBbox(rle)),
                    "iscrowd": 0,
                }
            )
        for d, c, s in zip(dets, det_labels, scores):
            results.append(
                {
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "segmentation": mask_utils.encode(np.asfortranarray(d)),
                    "score": float(s),
                }
            )
    ours = coco_evaluate(preds, targets, ["a", "b"], iou_type="segm")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_json
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
    for name, ref in zip(names, ev.stats[:6]):
        got = ours[name]
        assert (got is None and ref < 0) or got == pytest.approx(ref, abs=1e-12), name
    assert 0.2 < ours["AP50"] < 1.0  # the spurious and mislabelled masks cost something
    # the box AP of the same predictions differs (masks and boxes are scored apart)
    box = coco_evaluate(preds, targets, ["a", "b"])
    assert box["mAP"] != ours["mAP"]
    assert set(ours["AP_per_class"]) == {"a", "b"}


def test_segm_needs_masks():
    p = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}
    t = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}
    with pytest.raises(ValueError, match="rles"):
        coco_evaluate([p], [t], ["a"], iou_type="segm")
