"""Boundary F-score (BF) of a semantic segmentation, per class and averaged over classes.

The measure of Csurka, Larlus & Perronnin, "What is a good evaluation measure for semantic
segmentation?" (BMVC 2013), reported by SegNet (Badrinarayanan et al., TPAMI 2017) next to mIoU:
for each class c, take the boundary pixels of the binary map "pixel is c" in the prediction and
in the ground truth;

- precision P_c = predicted boundary pixels within ``tolerance`` px of a ground-truth boundary pixel
  / predicted boundary pixels,
- recall    R_c = ground-truth boundary pixels within ``tolerance`` px of a predicted boundary pixel
  / ground-truth boundary pixels,
- F_c = 2 P_c R_c / (P_c + R_c)  (0 when P_c + R_c = 0).

Choices made here (the paper leaves them open or differs):

- **Boundary pixel**: a pixel of class c with at least one of its 8 neighbours inside the image
  not of class c (the inner boundary, 1 px thick). The image border is not a boundary.
- **Distance**: chessboard (L-infinity): "within t px" means inside the (2t+1)x(2t+1) square
  centred on the pixel (tested by looking up the other map's boundary classes at the
  (2t+1)^2 offsets of each boundary pixel; no per-class maps). It accepts a little more than the
  Euclidean disc of radius t (diagonal offsets up to t*sqrt(2)). Csurka et al. use Euclidean
  distance with a tolerance relative to the image diagonal (MATLAB's ``bfscore``: 0.75%);
  ``tolerance=2`` px is ~1.1% of a 128x128 image's diagonal.
- **Accumulation**: the four counts (matched predicted, predicted, matched ground-truth,
  ground-truth boundary pixels) are summed per class over the whole set, then P, R and F are
  computed once, as the confusion matrix does for IoU. Csurka et al. compute F per image and
  average over images, which weighs small and large images equally; summed counts weigh every
  boundary pixel equally and all-reduce exactly under torch.distributed.
- **Ignored pixels** (``ignore_index``, also the padding of mixed-size batches) are unknown
  labels: they are never boundary pixels, and as neighbours they count as "same class", like the
  outside of the image. So a boundary is scored only where two labelled pixels of different
  classes meet, and results do not depend on batch padding. Consequence: on VOC, whose objects
  are outlined by 5-px ignore bands, only the boundaries where labelled classes touch directly
  are scored.
- **Mean**: over the classes that have boundary pixels in the ground truth or the prediction;
  a class with none in either (absent, or covering whole images) is ``None`` and left out.
  A class with ground-truth boundaries but no predicted ones scores 0, and vice versa.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from convision.engine.distributed import all_reduce_sum_
from convision.errors import DataError

# counts rows: matched predicted, predicted, matched ground truth, ground truth boundary pixels
_MATCHED_PRED, _PRED, _MATCHED_GT, _GT = range(4)


class BoundaryF:
    """Accumulates boundary-pixel counts per class; ``compute()`` gives BF per class and its mean."""

    def __init__(
        self,
        num_classes: int,
        tolerance: int = 2,
        ignore_index: int = 255,
        device: str | torch.device = "cpu",
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if int(tolerance) != tolerance or tolerance < 0:
            raise ValueError(
                f"tolerance must be a whole number of pixels >= 0, got {tolerance}"
            )
        self.num_classes = int(num_classes)
        self.tolerance = int(tolerance)
        self.ignore_index = ignore_index
        self.counts = torch.zeros(4, self.num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.counts.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of integer class maps ``pred`` and ``target`` ([N,H,W] or [H,W], same shape)."""
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError(
                "BoundaryF.update expects integer class maps (use logits.argmax(1))"
            )
        if target.dim() == 2:
            pred, target = pred[None], target[None]
        if target.dim() != 3:
            raise ValueError(
                f"expected class maps [N,H,W] or [H,W], got shape {tuple(target.shape)}"
            )
        if target.numel() == 0:
            return
        n = self.num_classes
        target = target.long()
        pred = pred.long().to(target.device)
        valid = target != self.ignore_index
        bad = valid & ((target < 0) | (target >= n))
        if bool(bad.any()):
            value = int(target[bad][0])
            raise DataError(
                f"mask: class value {value} is outside 0..{n - 1} and is not the ignore value {self.ignore_index}"
            )
        if bool((valid & ((pred < 0) | (pred >= n))).any()):
            raise ValueError(f"predicted class outside 0..{n - 1}")
        self.counts += _boundary_counts(pred, target, valid, n, self.tolerance).to(
            self.counts.device
        )

    def reduce_(self) -> None:
        """Sum the counts over all processes (in place); a no-op without torch.distributed."""
        all_reduce_sum_(self.counts)

    def compute(self) -> dict[str, Any]:
        """``{"boundary_f": mean over classes with boundaries (NaN if none), "per_class_boundary_f": [...]}``
        with ``None`` for classes that have no boundary pixels in the prediction or the ground truth."""
        c = self.counts.double().cpu()
        matched_pred, predicted, matched_gt, gt = (
            c[_MATCHED_PRED],
            c[_PRED],
            c[_MATCHED_GT],
            c[_GT],
        )
        precision = torch.where(
            predicted > 0,
            matched_pred / predicted.clamp_min(1),
            torch.zeros_like(predicted),
        )
        recall = torch.where(gt > 0, matched_gt / gt.clamp_min(1), torch.zeros_like(gt))
        denom = precision + recall
        f = torch.where(
            denom > 0,
            2 * precision * recall / denom.clamp_min(1e-12),
            torch.zeros_like(denom),
        )
        present = (predicted > 0) | (gt > 0)
        per_class = [
            float(v) if p else None for v, p in zip(f.tolist(), present.tolist())
        ]
        values = [v for v in per_class if v is not None]
        return {
            "boundary_f": sum(values) / len(values) if values else float("nan"),
            "per_class_boundary_f": per_class,
        }


def boundary_labels(labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[N,H,W] map holding the class of each boundary pixel of ``labels`` and -1 elsewhere (the
    definition of the module docstring: a valid pixel with a valid 8-neighbour of another class)."""
    lab = torch.where(valid, labels, torch.full_like(labels, -1))
    padded = F.pad(
        lab, (1, 1, 1, 1), value=-1
    )  # outside the image: like an ignored pixel
    H, W = lab.shape[-2:]
    edge = torch.zeros_like(valid)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                nb = padded[:, 1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W]
                edge |= (nb != lab) & (nb >= 0)
    edge &= valid
    return torch.where(edge, lab, torch.full_like(lab, -1))


def _matched(a: torch.Tensor, b: torch.Tensor, t: int) -> torch.Tensor:
    """Classes of the boundary pixels of ``a`` that have a boundary pixel of ``b`` of the same class
    within chessboard distance t (only ``a``'s boundary pixels are visited)."""
    N, H, W = a.shape
    Hp, Wp = H + 2 * t, W + 2 * t
    flat_b = F.pad(b, (t, t, t, t), value=-1).reshape(-1)
    n, y, x = torch.nonzero(a >= 0, as_tuple=True)
    cls = a[n, y, x]
    at = n * (Hp * Wp) + (y + t) * Wp + (x + t)
    hit = torch.zeros_like(cls, dtype=torch.bool)
    for dy in range(-t, t + 1):
        for dx in range(-t, t + 1):
            hit |= flat_b[at + (dy * Wp + dx)] == cls
    return cls[hit]


def _boundary_counts(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, n: int, t: int
) -> torch.Tensor:
    dtype = torch.int16 if n < 32000 else torch.int32
    pb = boundary_labels(pred.to(dtype), valid)
    gb = boundary_labels(target.to(dtype), valid)

    def count(labels: torch.Tensor) -> torch.Tensor:
        return torch.bincount(labels.reshape(-1).long(), minlength=n)[:n]

    return torch.stack(
        [
            count(_matched(pb, gb, t)),
            count(pb[pb >= 0]),
            count(_matched(gb, pb, t)),
            count(gb[gb >= 0]),
        ]
    )
