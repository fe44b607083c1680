"""Object-detection metrics: PASCAL VOC average precision and COCO evaluation.

**VOC** (Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010, and
the devkit's ``VOCevaldet.m`` / ``VOCap.m``). Per class, over the whole set:

* the detections of the class from all images are sorted by score, descending (stable: ties keep
  the order in which images and detections were given; images carrying an ``image_id`` are put in
  id order first, so the result does not depend on the number of processes);
* each detection takes the ground-truth box of its image and class with the highest IoU (over
  *all* of them, taken or not, difficult or not: the devkit's rule). If that IoU is ``>=`` the
  threshold: a ``difficult`` box makes the detection neither TP nor FP (it is dropped from the
  curve); a box not yet taken makes it a TP and is taken; a box already taken makes it a FP
  (duplicate). Below the threshold, or with no box of the class in the image: FP;
* recall = TP / (non-difficult boxes), precision = TP / (TP + FP), cumulated down the ranking.

Two APs from that curve (:func:`voc_ap`): ``AP`` the VOC2010+ area under the precision envelope
(precision made monotone by taking the maximum to the right), the main metric ``mAP`` being its
mean over classes; ``AP_07`` the VOC2007 11-point interpolated AP (mean over recall thresholds
0, 0.1, ..., 1 of the best precision at recall >= the threshold). A class with no non-difficult
box has no AP (``None``) and is left out of the means.

IoU is computed on **continuous** boxes (``torchvision.ops.box_iou``: area ``(x2-x1)(y2-y1)``),
not with the devkit's ``+1`` pixel convention for integer pixel boxes, so numbers can differ very
slightly from the official devkit on small boxes.

**COCO** (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014): :func:`coco_evaluate`
builds the ground truth in memory and runs the bbox evaluation of ``pycocotools`` (or of
``faster_coco_eval``, which gives the same numbers faster): AP averaged over IoU 0.50:0.05:0.95
(``mAP``), AP50, AP75, AP by object size and the average recalls.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from convision.engine.distributed import all_gather_objects, rank_world
from convision.errors import ConfigError, DataError

IOU_THRESHOLD = 0.5
COCO_BACKENDS = ("pycocotools", "faster_coco_eval")
COCO_STAT_NAMES = (
    "mAP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


# --------------------------------------------------------------------------------------------
# VOC
# --------------------------------------------------------------------------------------------
def voc_ap(
    recall: Sequence[float] | np.ndarray | torch.Tensor,
    precision: Sequence[float] | np.ndarray | torch.Tensor,
    use_07_metric: bool = False,
) -> float:
    """AP of a precision/recall curve (points in ranking order, recall non-decreasing), as in VOC ``VOCap.m``.

    ``use_07_metric=False``: VOC2010+ area: pad recall with 0 and 1 and precision with 0 and 0,
    replace each precision by the maximum to its right, sum ``(r_i - r_{i-1}) p_i`` where recall
    changes. ``use_07_metric=True``: VOC2007 11-point: mean over ``t = k/10, k = 0..10`` of the
    maximum precision at recall ``>= t`` (0 if none). An empty curve gives 0.
    """
    rec = np.asarray(
        torch.as_tensor(recall, dtype=torch.float64).cpu(), dtype=np.float64
    ).reshape(-1)
    prec = np.asarray(
        torch.as_tensor(precision, dtype=torch.float64).cpu(), dtype=np.float64
    ).reshape(-1)
    if rec.shape != prec.shape:
        raise ValueError(f"recall has {rec.size} points, precision {prec.size}")
    if use_07_metric:
        best = [prec[rec >= k / 10] for k in range(11)]
        return float(sum(float(b.max()) if b.size else 0.0 for b in best) / 11)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the envelope: max to the right
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def _get(d: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in d:
        raise DataError(f"{what}: missing key {key!r} (has {sorted(d)})")
    return d[key]


def _boxes(x: Any, what: str) -> torch.Tensor:
    b = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if b.numel() == 0:
        return b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise DataError(
            f"{what}: boxes must be N x 4 (x1, y1, x2, y2), got shape {tuple(b.shape)}"
        )
    return b


def _image_id(target: Mapping[str, Any]) -> int | None:
    v = target.get("image_id")
    return None if v is None else int(torch.as_tensor(v).reshape(-1)[0])


class DetectionMetric:
    """PASCAL VOC AP per class. ``update(preds, targets)``; ``reduce_()``; ``compute()``.

    ``preds``: the detectors' eval-mode dicts (``boxes`` M x 4 xyxy, ``labels`` 0..K-1, ``scores``);
    ``targets``: dicts with ``boxes`` (N x 4, same frame as the predictions), ``labels`` (0..K-1),
    optional ``difficult`` (N bool) and ``image_id``. Everything is kept per image on the CPU.
    After :meth:`compute`, :attr:`pr_curves` holds ``{class: (recall, precision)}`` (lists) for
    plotting (:func:`plot_pr_curves`); the returned dict itself is JSON-serialisable.
    """

    main_metric = "mAP"

    def __init__(
        self, classes: Sequence[str], iou_threshold: float = IOU_THRESHOLD
    ) -> None:
        if len(classes) < 1:
            raise ConfigError("detection metric: at least one class name is needed")
        if not 0.0 < float(iou_threshold) <= 1.0:
            raise ConfigError(
                f"detection metric: iou_threshold must be in (0, 1], got {iou_threshold}"
            )
        self.classes = [str(c) for c in classes]
        self.iou_threshold = float(iou_threshold)
        self._local: list[dict[str, Any]] = []
        self._gathered: list[dict[str, Any]] | None = None
        self.pr_curves: dict[str, tuple[list[float], list[float]]] = {}

    def reset(self) -> None:
        self._local = []
        self._gathered = None
        self.pr_curves = {}

    @property
    def records(self) -> list[dict[str, Any]]:
        """The per-image records (all processes' after :meth:`reduce_`)."""
        return self._local if self._gathered is None else self._gathered

    @torch.no_grad()
    def update(
        self, preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
    ) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
        k = len(self.classes)
        for pred, target in zip(preds, targets):
            p_boxes = _boxes(_get(pred, "boxes", "prediction"), "prediction")
            p_labels = (
                torch.as_tensor(_get(pred, "labels", "prediction"))
                .detach()
                .to("cpu", torch.int64)
                .reshape(-1)
            )
            scores = (
                torch.as_tensor(_get(pred, "scores", "prediction"))
                .detach()
                .to("cpu", torch.float64)
                .reshape(-1)
            )
            if not len(p_boxes) == len(p_labels) == len(scores):
                raise ValueError(
                    f"prediction: {len(p_boxes)} boxes, {len(p_labels)} labels, {len(scores)} scores"
                )
            if bool(((p_labels < 0) | (p_labels >= k)).any()):
                raise ValueError(f"predicted label outside 0..{k - 1}")
            g_boxes = _boxes(_get(target, "boxes", "target"), "target")
            g_labels = (
                torch.as_tensor(_get(target, "labels", "target"))
                .detach()
                .to("cpu", torch.int64)
                .reshape(-1)
            )
            if len(g_labels) != len(g_boxes):
                raise DataError(
                    f"target: {len(g_boxes)} boxes but {len(g_labels)} labels"
                )
            bad = (g_labels < 0) | (g_labels >= k)
            if bool(bad.any()):
                raise DataError(
                    f"target: class id {int(g_labels[bad][0])} is outside 0..{k - 1} ({k} classes)"
                )
            difficult = target.get("difficult")
            difficult = (
                torch.zeros(len(g_labels), dtype=torch.bool)
                if difficult is None
                else torch.as_tensor(difficult).detach().to("cpu").bool().reshape(-1)
            )
            if len(difficult) != len(g_labels):
                raise DataError(
                    f"target: {len(g_labels)} boxes but {len(difficult)} difficult flags"
                )
            self._local.append(
                {
                    "pred_boxes": p_boxes,
                    "pred_labels": p_labels,
                    "scores": scores,
                    "gt_boxes": g_boxes,
                    "gt_labels": g_labels,
                    "difficult": difficult,
                    "image_id": _image_id(target),
                }
            )
        self._gathered = None

    def reduce_(self) -> None:
        """Gather every process's per-image records so all ranks compute the same numbers; a no-op without torch.distributed."""
        if rank_world()[1] == 1:
            return
        self._gathered = [r for part in all_gather_objects(self._local) for r in part]

    def _ordered(self) -> list[dict[str, Any]]:
        recs = self.records
        if recs and all(r["image_id"] is not None for r in recs):
            return sorted(recs, key=lambda r: r["image_id"])
        return recs

    def _best_matches(self, recs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Every detection's best ground-truth box of its image and class (global index, -1 if none) and IoU."""
        labels, scores, best, best_iou, gt_labels, gt_diff = [], [], [], [], [], []
        offset = 0
        for r in recs:
            pl, gl = r["pred_labels"].numpy(), r["gt_labels"].numpy()
            g = np.full(len(pl), -1, dtype=np.int64)
            ov = np.full(len(pl), -1.0)
            if len(pl) and len(gl):
                iou = np.where(
                    pl[:, None] == gl[None, :],
                    box_iou(r["pred_boxes"], r["gt_boxes"]).numpy(),
                    -1.0,
                )
                g = iou.argmax(1)  # the first of equal maxima, as MATLAB's max
                ov = iou[np.arange(len(pl)), g]
                g = np.where(ov >= 0, g + offset, -1)
            (
                labels.append(pl),
                scores.append(r["scores"].numpy()),
                best.append(g),
                best_iou.append(ov),
            )
            gt_labels.append(gl), gt_diff.append(r["difficult"].numpy())
            offset += len(gl)

        def cat(xs: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype=dtype)

        return {
            "labels": cat(labels, np.int64),
            "scores": cat(scores, np.float64),
            "best": cat(best, np.int64),
            "iou": cat(best_iou, np.float64),
            "gt_labels": cat(gt_labels, np.int64),
            "difficult": cat(gt_diff, bool),
        }

    def _class_curve(
        self, m: dict[str, np.ndarray], c: int
    ) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(recall, precision) over the ranked, non-ignored detections of class ``c``; #non-difficult gt; #detections."""
        npos = int(((m["gt_labels"] == c) & ~m["difficult"]).sum())
        sel = np.flatnonzero(m["labels"] == c)
        order = sel[np.argsort(-m["scores"][sel], kind="stable")]
        best, ov = m["best"][order].tolist(), m["iou"][order].tolist()
        difficult = m["difficult"]
        taken: set[int] = set()
        tp, fp, keep = (
            np.zeros(len(order)),
            np.zeros(len(order)),
            np.ones(len(order), dtype=bool),
        )
        for rank, (g, iou) in enumerate(zip(best, ov)):
            if g < 0 or iou < self.iou_threshold:
                fp[rank] = 1  # no box of the class in the image, or too little overlap
            elif difficult[g]:
                keep[rank] = False  # matched a difficult box: neither TP nor FP
            elif g not in taken:
                tp[rank] = 1
                taken.add(g)
            else:
                fp[rank] = 1  # duplicate detection
        tp, fp = np.cumsum(tp[keep]), np.cumsum(fp[keep])
        recall = tp / npos if npos else np.zeros_like(tp)
        precision = tp / np.maximum(tp + fp, 1.0)
        return recall, precision, npos, len(order)

    def compute(self) -> dict[str, Any]:
        """``mAP`` (area), ``mAP_07`` (11-point), per class ``AP``, ``AP_07``, ``num_gt``, ``num_det``, ``recall`` (max)."""
        recs = self._ordered()
        matches = self._best_matches(recs)
        ap: dict[str, float | None] = {}
        ap07: dict[str, float | None] = {}
        num_gt: dict[str, int] = {}
        num_det: dict[str, int] = {}
        max_recall: dict[str, float | None] = {}
        self.pr_curves = {}
        for c, name in enumerate(self.classes):
            rec, prec, npos, ndet = self._class_curve(matches, c)
            num_gt[name], num_det[name] = npos, ndet
            if npos == 0:
                ap[name] = ap07[name] = max_recall[name] = None
                continue
            ap[name] = voc_ap(rec, prec)
            ap07[name] = voc_ap(rec, prec, use_07_metric=True)
            max_recall[name] = float(rec[-1]) if rec.size else 0.0
            self.pr_curves[name] = (rec.tolist(), prec.tolist())

        def mean(d: dict[str, float | None]) -> float:
            v = [x for x in d.values() if x is not None]
            return float(np.mean(v)) if v else math.nan

        return {
            "mAP": mean(ap),
            "mAP_07": mean(ap07),
            "AP": ap,
            "AP_07": ap07,
            "num_gt": num_gt,
            "num_det": num_det,
            "recall": max_recall,
            "num_images": len(recs),
            "iou_threshold": self.iou_threshold,
        }


def format_table(metrics: Mapping[str, Any]) -> str:
    """Per-class AP, AP_07, #gt, #det and max recall (in %), then the means."""

    def pct(v: float | None) -> str:
        return (
            "-"
            if v is None or (isinstance(v, float) and math.isnan(v))
            else f"{100 * v:.2f}"
        )

    names = list(metrics["AP"])
    width = max([len("class"), len("mean")] + [len(n) for n in names])
    head = f"{'class':<{width}}  {'AP':>7}  {'AP_07':>7}  {'#gt':>7}  {'#det':>7}  {'recall':>7}"
    lines = [head]
    for n in names:
        lines.append(
            f"{n:<{width}}  {pct(metrics['AP'][n]):>7}  {pct(metrics['AP_07'][n]):>7}  "
            f"{metrics['num_gt'][n]:>7}  {metrics['num_det'][n]:>7}  {pct(metrics['recall'][n]):>7}"
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'mean':<{width}}  {pct(metrics['mAP']):>7}  {pct(metrics['mAP_07']):>7}  "
        f"{sum(metrics['num_gt'].values()):>7}  {sum(metrics['num_det'].values()):>7}"
    )
    thr = metrics.get("iou_threshold", IOU_THRESHOLD)
    lines.append(
        f"mAP (area, VOC2010+) {pct(metrics['mAP'])}, mAP_07 (11-point) {pct(metrics['mAP_07'])} at IoU >= {thr:g}"
    )
    return "\n".join(lines)


def plot_pr_curves(metric: DetectionMetric, path: str | Path) -> Path:
    """Write a PNG with one precision/recall curve per class (classes with ground truth), AP in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = metric.compute()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 6))
    try:
        for name, (rec, prec) in metric.pr_curves.items():
            ax.plot(rec, prec, label=f"{name} (AP {100 * result['AP'][name]:.1f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(
            f"mAP {100 * result['mAP']:.1f} (IoU >= {metric.iou_threshold:g})"
            if metric.pr_curves
            else "no class with ground truth"
        )
        if metric.pr_curves:
            ax.legend(loc="best", fontsize="small")
        ax.grid(True, alpha=0.3)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------
def masks_to_rles(masks: Any) -> list[dict[str, Any]]:
    """COCO run-length encodings (pycocotools, ``counts`` as str so that they are JSON) of
    ``N x H x W`` binary masks (tensor or array)."""
    from pycocotools import mask as mask_utils

    m = np.asarray(torch.as_tensor(masks).cpu().numpy(), dtype=np.uint8)
    if m.ndim != 3:
        raise ValueError(f"masks: expected N x H x W, got shape {m.shape}")
    if m.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def to_coco_results(
    preds: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    category_ids: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """COCO results entries ``{image_id, category_id, bbox: [x, y, w, h], score}`` for every detection
    (plus ``segmentation``, an RLE, where the prediction has ``"rles"``, one per box).

    ``category_ids[k]`` is the COCO category of user class ``k``; by default ``k + 1`` (COCO ids
    start at 1). Pass the data set's own ids (e.g. COCO's 1..90 with gaps) to write a file for it.
    """
    if len(preds) != len(image_ids):
        raise ValueError(f"{len(preds)} predictions for {len(image_ids)} image ids")
    out: list[dict[str, Any]] = []
    for pred, image_id in zip(preds, image_ids):
        boxes = _boxes(_get(pred, "boxes", "prediction"), "prediction")
        labels = (
            torch.as_tensor(_get(pred, "labels", "prediction")).reshape(-1).tolist()
        )
        scores = (
            torch.as_tensor(_get(pred, "scores", "prediction")).reshape(-1).tolist()
        )
        rles = pred.get("rles")
        for j, ((x1, y1, x2, y2), label, score) in enumerate(
            zip(boxes.tolist(), labels, scores)
        ):
            cat = (
                int(category_ids[label]) if category_ids is not None else int(label) + 1
            )
            entry = {
                "image_id": int(image_id),
                "category_id": cat,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
            }
            if rles is not None:
                entry["segmentation"] = rles[j]
            out.append(entry)
    return out


def write_coco_results(
    path: str | Path,
    preds: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    category_ids: Sequence[int] | None = None,
) -> Path:
    """Write :func:`to_coco_results` as a JSON results file (what COCO's evaluation server and ``loadRes`` read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_coco_results(preds, image_ids, category_ids)))
    return path


def _coco_ground_truth(
    targets: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    sizes: Sequence[tuple[int, int]] | None,
    segm: bool = False,
) -> tuple[dict[str, Any], list[int]]:
    if sizes is not None and len(sizes) != len(targets):
        raise ValueError(f"{len(sizes)} sizes for {len(targets)} targets")
    images, anns, ids = [], [], []
    k = len(classes)
    for i, t in enumerate(targets):
        image_id = _image_id(t)
        image_id = i if image_id is None else image_id
        ids.append(image_id)
        boxes = _boxes(_get(t, "boxes", "target"), "target")
        labels = torch.as_tensor(_get(t, "labels", "target")).reshape(-1).tolist()
        if len(labels) != len(boxes):
            raise DataError(f"target: {len(boxes)} boxes but {len(labels)} labels")
        diff = t.get("difficult")
        diff = (
            [False] * len(labels)
            if diff is None
            else torch.as_tensor(diff).reshape(-1).bool().tolist()
        )
        if "orig_size" in t:
            h, w = (
                int(v) for v in torch.as_tensor(t["orig_size"]).reshape(-1)[:2].tolist()
            )
        elif sizes is not None:
            h, w = (int(v) for v in sizes[i])
        else:  # width/height do not enter the bbox evaluation; the boxes' extent keeps the record valid
            h = max([1] + [math.ceil(b[3]) for b in boxes.tolist()])
            w = max([1] + [math.ceil(b[2]) for b in boxes.tolist()])
        images.append({"id": image_id, "width": w, "height": h})
        rles = t.get("rles")
        for j, ((x1, y1, x2, y2), label, d) in enumerate(
            zip(boxes.tolist(), labels, diff)
        ):
            if not 0 <= label < k:
                raise DataError(
                    f"target: class id {label} is outside 0..{k - 1} ({k} classes)"
                )
            wb, hb = x2 - x1, y2 - y1
            ann = {
                "id": len(anns) + 1,
                "image_id": image_id,
                "category_id": int(label) + 1,
                "bbox": [x1, y1, wb, hb],
                "area": wb * hb,
                "iscrowd": int(bool(d)),
            }
            if segm:  # COCO's instance ground truth: the mask's pixel count is the area
                from pycocotools import mask as mask_utils

                ann["segmentation"] = rles[j]
                ann["area"] = float(mask_utils.area(rles[j]))
            anns.append(ann)
    if len(set(ids)) != len(ids):
        raise DataError("targets: image_id values are not unique")
    cats = [{"id": c + 1, "name": str(n)} for c, n in enumerate(classes)]
    return {"images": images, "annotations": anns, "categories": cats}, ids


def coco_evaluate(
    preds: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    backend: str = "pycocotools",
    sizes: Sequence[tuple[int, int]] | None = None,
    iou_type: str = "bbox",
) -> dict[str, Any]:
    """COCO bbox evaluation (Lin et al. 2014) of ``preds`` against ``targets`` (same frame), in memory.

    ``iou_type="segm"``: mask AP instead (He et al. 2017 report it for Mask R-CNN): predictions and
    targets then carry ``"rles"`` (one COCO RLE per box, :func:`masks_to_rles`, in the frame of
    ``orig_size``); the ground truth's ``area`` (the size buckets) is then its mask's pixel count.

    Ground truth: one image per target (``image_id`` from the target, else its position; width and
    height from ``target["orig_size"]`` = (h, w), else ``sizes[i]`` = (h, w), else the boxes'
    extent: they do not affect bbox scores), ``bbox`` xywh, ``area = w * h``, ``iscrowd = difficult``
    (COCO ignores detections matched to crowd boxes, as VOC does for difficult ones).
    ``backend``: ``"pycocotools"`` (the reference) or ``"faster_coco_eval"``.

    Returns the 12 standard numbers under :data:`COCO_STAT_NAMES` (``mAP`` is AP@[.5:.95]; ``None``
    where COCO reports -1, e.g. no object of that size), ``AP_per_class`` ({class: AP@[.5:.95] or
    None}) and ``summary`` (the backend's printout, captured instead of printed).
    """
    if backend not in COCO_BACKENDS:
        raise ConfigError(
            f"unknown COCO evaluation backend {backend!r}; choose one of {', '.join(COCO_BACKENDS)}"
        )
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    if iou_type not in ("bbox", "segm"):
        raise ConfigError(f"iou_type: expected bbox | segm, got {iou_type!r}")
    segm = iou_type == "segm"
    if segm and any("rles" not in x for x in (*preds, *targets)):
        raise ValueError("iou_type='segm' needs 'rles' in every prediction and target")
    gt_dict, image_ids = _coco_ground_truth(targets, classes, sizes, segm)
    k = len(classes)
    for p in preds:
        labels = torch.as_tensor(_get(p, "labels", "prediction")).reshape(-1)
        if bool(((labels < 0) | (labels >= k)).any()):
            raise ValueError(f"predicted label outside 0..{k - 1}")
    results = to_coco_results(preds if segm else _no_rles(preds), image_ids)
    if (
        segm
    ):  # loadRes would take a result's area from its bbox, not its mask (size buckets)
        for r in results:
            r.pop("bbox")
    printed: list[str] = []
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        if results:
            dt = gt.loadRes(copy.deepcopy(results))
        else:  # pycocotools' loadRes cannot take an empty list: an empty result set scores 0
            dt = COCO()
            dt.dataset = {
                "images": copy.deepcopy(gt_dict["images"]),
                "categories": copy.deepcopy(gt_dict["categories"]),
                "annotations": [],
            }
            dt.createIndex()
        if backend == "pycocotools":
            ev = COCOeval(gt, dt, iouType=iou_type)
        else:
            ev = COCOeval(gt, dt, iouType=iou_type, print_function=printed.append)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [
        float(s) for s in np.asarray(ev.stats, dtype=np.float64)[: len(COCO_STAT_NAMES)]
    ]
    result: dict[str, Any] = {
        n: (None if s < 0 else s) for n, s in zip(COCO_STAT_NAMES, stats)
    }
    # precision[T, R, K, A, M]: all IoUs, all recall points, class k, area "all", maxDets 100
    precision = np.asarray(ev.eval["precision"])
    cat_ids = list(ev.params.catIds)
    per_class: dict[str, float | None] = {}
    for c, name in enumerate(classes):
        p = precision[:, :, cat_ids.index(c + 1), 0, -1]
        p = p[p > -1]
        per_class[str(name)] = float(p.mean()) if p.size else None
    result["AP_per_class"] = per_class
    summary = "\n".join(
        line for line in out.getvalue().splitlines() + printed if "Average" in line
    )
    result["summary"] = summary
    result["backend"] = backend
    return result


def _no_rles(preds: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The predictions without masks (a bbox evaluation must not read the segmentation of results)."""
    return [{k: v for k, v in p.items() if k != "rles"} for p in preds]
