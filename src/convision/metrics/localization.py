"""Single-object localization metrics.

The seeds' (ILSVRC / OverFeat) rule: a prediction is **correct when its class is right AND the
IoU of its box with the true box is greater than 0.5** (``torchvision.ops.box_iou``; exactly 0.5
is not enough). Reported over all images:

``accuracy``        share of correct predictions (the main metric; 1 - the localization error)
``mean_iou``        mean IoU of the predicted box with the true box, whatever the class
``class_accuracy``  share of right classes
``box_accuracy``    share of boxes with IoU > 0.5, whatever the class

Boxes may be in any frame as long as prediction and truth share it (IoU does not change when
both are scaled, even with different x and y factors). Under torch.distributed,
:meth:`LocalizationMetric.reduce_` sums the counts over the processes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchvision.ops import box_iou

from convision.engine.distributed import all_reduce_sum_

IOU_THRESHOLD = 0.5


def paired_iou(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """IoU of ``pred[i]`` with ``true[i]`` (xyxy ``[N,4]``) -> ``[N]``: the diagonal of ``box_iou``."""
    if len(pred) == 0:
        return torch.zeros(0, dtype=torch.float64)
    return box_iou(pred.double(), true.double()).diagonal()


def localization_correct(
    pred_labels: torch.Tensor,
    pred_boxes: torch.Tensor,
    labels: torch.Tensor,
    boxes: torch.Tensor,
    threshold: float = IOU_THRESHOLD,
) -> torch.Tensor:
    """Boolean ``[N]``: class right and IoU > ``threshold``."""
    return (pred_labels.reshape(-1).cpu() == labels.reshape(-1).cpu()) & (
        paired_iou(pred_boxes.cpu(), boxes.cpu()) > threshold
    )


class LocalizationMetric:
    """``update(logits[N,K] or labels[N], pred_boxes[N,4], labels[N], boxes[N,4])``; ``reduce_()``; ``compute()``."""

    def __init__(self, num_classes: int, threshold: float = IOU_THRESHOLD) -> None:
        self.num_classes = int(num_classes)
        self.threshold = float(threshold)
        # [images, correct, class right, box right, IoU sum]
        self.counts = torch.zeros(5, dtype=torch.float64)

    @torch.no_grad()
    def update(
        self,
        scores: torch.Tensor,
        pred_boxes: torch.Tensor,
        labels: torch.Tensor,
        boxes: torch.Tensor,
    ) -> None:
        scores = scores.detach().cpu()
        pred = scores.argmax(1) if scores.ndim == 2 else scores.reshape(-1).long()
        labels = labels.reshape(-1).long().cpu()
        if not (len(pred) == len(labels) == len(pred_boxes) == len(boxes)):
            raise ValueError(
                f"{len(pred)} predictions, {len(pred_boxes)} boxes for {len(labels)} labels, {len(boxes)} boxes"
            )
        iou = paired_iou(
            pred_boxes.detach().float().cpu(), boxes.detach().float().cpu()
        )
        cls_ok = pred == labels
        box_ok = iou > self.threshold
        self.counts += torch.tensor(
            [
                len(labels),
                float((cls_ok & box_ok).sum()),
                float(cls_ok.sum()),
                float(box_ok.sum()),
                float(iou.sum()),
            ],
            dtype=torch.float64,
        )

    def reduce_(self) -> None:
        """Sum the counts over all processes (in place); a no-op without torch.distributed."""
        all_reduce_sum_(self.counts)

    def compute(self) -> dict[str, Any]:
        n, correct, cls_ok, box_ok, iou = (float(v) for v in self.counts)
        div = (lambda v: v / n) if n else (lambda v: math.nan)
        return {
            "accuracy": div(correct),
            "mean_iou": div(iou),
            "class_accuracy": div(cls_ok),
            "box_accuracy": div(box_ok),
            "num_images": int(n),
        }


def format_table(metrics: dict[str, Any]) -> str:
    rows = [
        ("accuracy (class right and IoU > 0.5)", metrics["accuracy"]),
        ("mean IoU", metrics["mean_iou"]),
        ("class accuracy", metrics["class_accuracy"]),
        ("box accuracy (IoU > 0.5)", metrics["box_accuracy"]),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{name:<{width}}  {value:.4f}" for name, value in rows]
    lines.append(f"{'images':<{width}}  {metrics['num_images']}")
    return "\n".join(lines)
