"""Semantic-segmentation metrics from one confusion matrix.

The four summary numbers are those of Long, Shelhamer & Darrell, "Fully Convolutional Networks
for Semantic Segmentation" (CVPR 2015), section 5. With n_ij the number of pixels of class i
predicted as class j, t_i = sum_j n_ij the pixels of class i and n_cl the number of classes:

- pixel accuracy:      sum_i n_ii / sum_i t_i
- mean accuracy:       (1/n_cl) sum_i n_ii / t_i
- mean IU:             (1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)
- frequency-weighted:  (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

Absent classes: a class that appears neither in the ground truth nor in the prediction has no
IoU (its union is empty) and is left out of the means; mean accuracy leaves out classes with
t_i = 0. This is what ``torchmetrics.classification.MulticlassJaccardIndex(average="macro")``
does too (it gives such classes zero weight), so the two mIoUs agree.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from convision.engine.distributed import all_reduce_sum_
from convision.errors import DataError


class ConfusionMatrix:
    """Accumulates ``mat[target, prediction]`` (int64) over any number of batches."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        device: str | torch.device = "cpu",
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = torch.zeros(
            self.num_classes, self.num_classes, dtype=torch.int64, device=device
        )

    def reset(self) -> None:
        self.mat.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` and ``target`` are integer class maps of the same shape ([N,H,W])."""
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError(
                "ConfusionMatrix.update expects integer class maps (use logits.argmax(1))"
            )
        n = self.num_classes
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).long().to(target.device)
        keep = target != self.ignore_index
        target = target[keep]
        pred = pred[keep]
        bad = (target < 0) | (target >= n)
        if bool(bad.any()):
            value = int(target[bad][0])
            raise DataError(
                f"mask: class value {value} is outside 0..{n - 1} and is not the ignore value {self.ignore_index}"
            )
        if bool(((pred < 0) | (pred >= n)).any()):
            raise ValueError(f"predicted class outside 0..{n - 1}")
        counts = torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)
        self.mat += counts.to(self.mat.device)

    def reduce_(self) -> None:
        """Sum the matrix over all processes (in place); a no-op without torch.distributed."""
        all_reduce_sum_(self.mat)

    def compute(self) -> dict[str, Any]:
        """The four FCN metrics (floats, NaN if there are no pixels) and per-class lists (None = absent)."""
        h = self.mat.double().cpu()
        tp = h.diag()
        gt = h.sum(1)  # t_i
        predicted = h.sum(0)  # sum_j n_ji
        union = gt + predicted - tp
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
        acc = torch.where(gt > 0, tp / gt.clamp_min(1), nan)
        total = gt.sum()
        present = union > 0
        if total > 0:
            pixel_accuracy = float(tp.sum() / total)
            fwiou = float((gt[present] * iou[present]).sum() / total)
        else:
            pixel_accuracy = fwiou = float("nan")
        return {
            "pixel_accuracy": pixel_accuracy,
            "mean_accuracy": _nanmean(acc),
            "miou": _nanmean(iou),
            "fwiou": fwiou,
            "per_class_iou": _to_list(iou),
            "per_class_accuracy": _to_list(acc),
        }


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")


def _to_list(x: torch.Tensor) -> list[float | None]:
    return [None if math.isnan(v) else v for v in x.tolist()]


def format_table(metrics: dict[str, Any], class_names: Sequence[str]) -> str:
    """A per-class table (IoU and accuracy in %) followed by the four summary metrics."""

    def pct(v: float | None) -> str:
        return (
            "-"
            if v is None or (isinstance(v, float) and math.isnan(v))
            else f"{100 * v:.2f}"
        )

    ious = metrics.get("per_class_iou", [])
    accs = metrics.get("per_class_accuracy", [])
    names = list(class_names) + [
        f"class {i}" for i in range(len(class_names), len(ious))
    ]
    width = max(
        [len("class")] + [len(n) for n in names[: len(ious)]] + [len("pixel accuracy")]
    )
    lines = [f"{'class':<{width}}  {'IoU':>7}  {'acc':>7}"]
    for name, iou, acc in zip(names, ious, accs):
        lines.append(f"{name:<{width}}  {pct(iou):>7}  {pct(acc):>7}")
    lines.append("-" * (width + 18))
    for key, label in (
        ("pixel_accuracy", "pixel accuracy"),
        ("mean_accuracy", "mean accuracy"),
        ("miou", "mean IoU"),
        ("fwiou", "f.w. IoU"),
    ):
        lines.append(f"{label:<{width}}  {pct(metrics.get(key)):>7}")
    if "boundary_f" in metrics:  # convision.metrics.boundary.BoundaryF
        lines.append(f"{'boundary F':<{width}}  {pct(metrics.get('boundary_f')):>7}")
    return "\n".join(lines)
