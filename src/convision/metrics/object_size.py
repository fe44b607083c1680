"""Segmentation quality by object size: recall and IoU of the ground truth's connected components,
bucketed by area.

Long, Shelhamer & Darrell's FCN (CVPR 2015) predicts at stride 32 (FCN-32s), 16 or 8; Noh, Hong &
Han (DeconvNet, ICCV 2015, section 1 and figure 1) point out the two failures a fixed receptive
field and coarse output cause: small objects are missed or labelled as background, and large
objects are fragmented (parts get other labels). A single mIoU hides both, since it is dominated
by the pixels of large regions. :class:`ObjectSizeMetric` measures them per object size.

Definitions
-----------
* **Objects**: the connected components (8-connectivity) of each class's ground-truth pixels in
  each image; pixels of ``ignore_index`` (VOC's outline bands, batch padding) belong to no object
  and are not counted anywhere. Classes in ``exclude`` (the background) are not objects. Where a
  data set has instance masks, two touching instances of a class count as one object here.
* **Area** of an object: its number of pixels (at the resolution the metric sees; ``convision
  segment eval`` scores at the images' original resolution). Buckets follow COCO: with
  thresholds ``(t1, t2)`` (default ``(32**2, 96**2)``) *small* is ``area < t1``, *medium*
  ``t1 <= area < t2``, *large* ``area >= t2``. Any increasing list of thresholds gives
  ``len + 1`` buckets.
* **Recall** of a bucket: the fraction of its objects that are *recalled*, i.e. with at least
  ``min_overlap`` (default 50 %) of their pixels predicted as their class.
* **IoU** of a bucket: ``TP / (TP + FN + FP)`` over pixels, pooled over the bucket's objects:
  ``TP`` the objects' pixels predicted as their class, ``FN`` their other pixels, ``FP`` the
  false-positive pixels of the predicted connected components (of the same class, on labelled
  pixels) attributed to the bucket: a predicted component belongs to the bucket of the
  ground-truth object it overlaps most, or, if it overlaps none (a hallucinated object), to the
  bucket of its own area. So every false-positive pixel of a non-excluded class lands in exactly
  one bucket, and the buckets' ``TP``, ``FN``, ``FP`` add up to the non-background classes'
  confusion-matrix totals.
* **Pieces**: the mean number of predicted connected components (of the right class) that
  overlap an object, over the objects that overlap any; 1.0 means every found object is found in
  one piece, more means fragmentation.

Counts are summed over the whole split (and all-reduced under ``torch.distributed``) and the
ratios taken once, as the confusion matrix does. Per class, the same numbers are in
``per_class``.

Cost: connected components by ``scipy.ndimage.label`` (C) for each class present in each
image's ground truth and prediction, then ``bincount``/``unique`` over the pixels -- about
3-8 ms for a 500x375 image with a few classes on one CPU thread (``bench/fcn_variants.py``
prints the measured time). The masks are copied to the CPU.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage

from convision.engine.distributed import all_reduce_sum_

COCO_THRESHOLDS: tuple[int, int] = (32**2, 96**2)
"""COCO's area thresholds: small < 32^2 <= medium < 96^2 <= large (pixels)."""

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity
# count fields, per (class, bucket)
_OBJECTS, _RECALLED, _TP, _FN, _FP, _PIECES, _FOUND = range(7)


def bucket_names(thresholds: Sequence[int]) -> list[str]:
    """``small / medium / large`` for two thresholds, else ``area<t1``, ``t1<=area<t2``, ..."""
    t = list(thresholds)
    if len(t) == 2:
        return ["small", "medium", "large"]
    edges = [None, *t, None]
    return [
        f"area<{hi}"
        if lo is None
        else (f"area>={lo}" if hi is None else f"{lo}<=area<{hi}")
        for lo, hi in zip(edges[:-1], edges[1:])
    ]


def parse_thresholds(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"1024,9216"`` (or a sequence) -> increasing positive ints; ``ValueError`` otherwise."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        raise ValueError(
            f"expected comma-separated whole pixel areas, got {text!r}"
        ) from None
    if not values or values[0] < 1 or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(
            f"expected increasing positive pixel areas like 1024,9216, got {text!r}"
        )
    return values


class ObjectSizeMetric:
    """Accumulates per-(class, size bucket) object counts; see the module notes for the definitions."""

    def __init__(
        self,
        num_classes: int,
        thresholds: Sequence[int] = COCO_THRESHOLDS,
        ignore_index: int = 255,
        exclude: Sequence[int] = (),
        min_overlap: float = 0.5,
    ) -> None:
        self.num_classes = int(num_classes)
        self.thresholds = parse_thresholds(thresholds)
        self.ignore_index = ignore_index
        self.exclude = sorted({int(c) for c in exclude})
        if not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
        self.min_overlap = float(min_overlap)
        self.counts = torch.zeros(
            self.num_classes, len(self.thresholds) + 1, 7, dtype=torch.int64
        )

    def reset(self) -> None:
        self.counts.zero_()

    @torch.no_grad()
    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        instances: torch.Tensor | None = None,
    ) -> None:
        """Add a batch of integer class maps (``[N,H,W]`` or ``[H,W]``, same shape). With
        ``instances`` (same shape, 0 = no instance, ids per image) the objects are the instances
        instead of the connected components (each takes the class most of its pixels have)."""
        p = torch.as_tensor(pred).detach().cpu().numpy()
        t = torch.as_tensor(target).detach().cpu().numpy()
        if p.shape != t.shape:
            raise ValueError(f"prediction shape {p.shape} != target shape {t.shape}")
        inst = None if instances is None else torch.as_tensor(instances).cpu().numpy()
        if inst is not None and inst.shape != t.shape:
            raise ValueError(f"instances shape {inst.shape} != target shape {t.shape}")
        if t.ndim == 2:
            p, t = p[None], t[None]
            inst = None if inst is None else inst[None]
        counts = np.zeros(tuple(self.counts.shape), dtype=np.int64)
        for k, (pi, ti) in enumerate(zip(p, t)):
            ii = None if inst is None else inst[k].astype(np.int64)
            self._add_image(pi.astype(np.int64), ti.astype(np.int64), counts, ii)
        self.counts += torch.from_numpy(counts)

    def _add_image(
        self,
        pred: np.ndarray,
        target: np.ndarray,
        counts: np.ndarray,
        instances: np.ndarray | None = None,
    ) -> None:
        valid = target != self.ignore_index
        if instances is None:
            gt, gt_cls = self._components(target, valid)
        else:
            gt, gt_cls = self._instances(instances, target, valid)
        pr, pr_cls = self._components(pred, valid)
        n_gt, n_pr = len(gt_cls), len(pr_cls)
        area = np.bincount(gt.ravel(), minlength=n_gt + 1)[1:]
        hit = valid & (pred == target) & (gt > 0)
        tp = np.bincount(gt[hit], minlength=n_gt + 1)[1:]
        bucket = np.searchsorted(self.thresholds, area, side="right")
        # which predicted components overlap which objects (same class, by construction)
        codes = gt[hit] * (n_pr + 1) + pr[hit]
        if (n_gt + 1) * (n_pr + 1) <= 1 << 22:  # a bincount is faster than sorting
            overlap = np.bincount(codes, minlength=(n_gt + 1) * (n_pr + 1))
            pairs = np.flatnonzero(overlap)
            overlap = overlap[pairs]
        else:
            pairs, overlap = np.unique(codes, return_counts=True)
        g, q = pairs // (n_pr + 1), pairs % (n_pr + 1)
        pieces = np.bincount(g, minlength=n_gt + 1)[1:]
        np.add.at(counts, (gt_cls, bucket, _OBJECTS), 1)
        np.add.at(
            counts,
            (gt_cls, bucket, _RECALLED),
            (tp >= self.min_overlap * area).astype(np.int64),
        )
        np.add.at(counts, (gt_cls, bucket, _TP), tp)
        np.add.at(counts, (gt_cls, bucket, _FN), area - tp)
        np.add.at(counts, (gt_cls, bucket, _PIECES), pieces)
        np.add.at(counts, (gt_cls, bucket, _FOUND), (pieces > 0).astype(np.int64))
        if n_pr == 0:
            return
        # each predicted component: the object it overlaps most (0 = none)
        best = np.zeros(n_pr + 1, dtype=np.int64)
        order = np.lexsort((overlap, q))
        qs = q[order]
        last = np.r_[qs[1:] != qs[:-1], True][: len(qs)]
        best[qs[last]] = g[order][last]
        fp = np.bincount(pr[valid & (pred != target)], minlength=n_pr + 1)[1:]
        pr_area = np.bincount(pr.ravel(), minlength=n_pr + 1)[1:]
        own = np.searchsorted(self.thresholds, pr_area, side="right")
        # bucket of the best object; own area where none (index 0 of np.r_[-1, bucket])
        pr_bucket = np.where(best[1:] > 0, np.r_[-1, bucket][best[1:]], own)
        np.add.at(counts, (pr_cls, pr_bucket, _FP), fp)

    def _instances(
        self, instances: np.ndarray, target: np.ndarray, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`_components`, from given instance ids (renumbered 1..K per image)."""
        keep = valid & (instances > 0) & (target >= 0) & (target < self.num_classes)
        _, inverse = np.unique(instances[keep], return_inverse=True)
        k = int(inverse.max()) + 1 if inverse.size else 0
        votes = np.bincount(
            inverse * self.num_classes + target[keep],
            minlength=k * self.num_classes,
        ).reshape(k, self.num_classes)
        cls = votes.argmax(1)
        kept = ~np.isin(cls, self.exclude)
        new_id = np.zeros(
            k + 1, dtype=np.int64
        )  # 0 stays 0; excluded instances become 0
        new_id[1:][kept] = np.arange(1, int(kept.sum()) + 1)
        ids = np.zeros(target.shape, dtype=np.int64)
        ids[keep] = new_id[inverse + 1]
        return ids, cls[kept].astype(np.int64)

    def _components(
        self, labels: np.ndarray, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One id per connected component of each non-excluded class on valid pixels (0 = none),
        and the class of component ``k`` at index ``k - 1``."""
        ids = np.zeros(labels.shape, dtype=np.int64)
        classes: list[np.ndarray] = []
        offset = 0
        inside = labels[valid]
        inside = inside[(inside >= 0) & (inside < self.num_classes)]
        present = np.flatnonzero(np.bincount(inside, minlength=self.num_classes))
        for c in present:
            if c in self.exclude:
                continue
            lab, n = ndimage.label((labels == c) & valid, structure=_EIGHT)
            lab[lab > 0] += offset
            ids += lab
            offset += n
            classes.append(np.full(n, c, dtype=np.int64))
        cls = np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64)
        return ids, cls

    def reduce_(self) -> None:
        """Sum the counts over all processes (in place); a no-op without torch.distributed."""
        all_reduce_sum_(self.counts)

    def compute(self) -> dict[str, Any]:
        """``{"thresholds", "min_overlap", "buckets": {name: {...}}, "per_class": [{name: {...}}]}``;
        each bucket has ``range`` (``[lo, hi)``, hi None = unbounded), ``objects``, ``recall``,
        ``iou``, ``pieces`` (None where undefined)."""
        names = bucket_names(self.thresholds)
        edges = [0, *self.thresholds, None]
        c = self.counts.numpy()

        def summary(rows: np.ndarray) -> dict[str, dict[str, Any]]:
            out = {}
            for b, name in enumerate(names):
                v = rows[b]
                pixels = v[_TP] + v[_FN] + v[_FP]
                out[name] = {
                    "range": [edges[b], edges[b + 1]],
                    "objects": int(v[_OBJECTS]),
                    "recall": _ratio(v[_RECALLED], v[_OBJECTS]),
                    "iou": _ratio(v[_TP], pixels),
                    "pieces": _ratio(v[_PIECES], v[_FOUND]),
                }
            return out

        return {
            "thresholds": list(self.thresholds),
            "min_overlap": self.min_overlap,
            "excluded_classes": list(self.exclude),
            "buckets": summary(c.sum(0)),
            "per_class": [
                None if k in self.exclude else summary(c[k])
                for k in range(self.num_classes)
            ],
        }


def _ratio(num: int, den: int) -> float | None:
    return float(num) / float(den) if den > 0 else None


def format_size_table(by_size: dict[str, Any]) -> str:
    """The buckets of :meth:`ObjectSizeMetric.compute` as a plain-text table."""

    def show(v: float | None, pct: bool = True) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{100 * v:.2f}" if pct else f"{v:.2f}"

    lines = [
        f"by object size (connected components; recalled = >= {100 * by_size['min_overlap']:.0f}% "
        "of the pixels right)",
        f"{'size':<18}  {'area (px)':>13}  {'objects':>7}  {'recall':>7}  {'IoU':>7}  {'pieces':>6}",
    ]
    for name, b in by_size["buckets"].items():
        lo, hi = b["range"]
        span = f"{lo}-{hi - 1}" if hi is not None else f">={lo}"
        lines.append(
            f"{name:<18}  {span:>13}  {b['objects']:>7}  {show(b['recall']):>7}  "
            f"{show(b['iou']):>7}  {show(b['pieces'], pct=False):>6}"
        )
    return "\n".join(lines)
