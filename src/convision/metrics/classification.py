"""Image-classification metrics from one confusion matrix plus a top-k counter.

``mat[t, p]`` counts images of true class ``t`` predicted as ``p``. Per class ``c``:
precision = mat[c,c] / sum_t mat[t,c] (None when nothing was predicted as ``c``),
recall = mat[c,c] / sum_p mat[c,p] (None when the class has no images),
F1 = 2PR / (P + R) = 2TP / (2TP + FP + FN) (None only when the class is neither present nor
predicted; 0 when present but never predicted). Macro means skip None.
Accuracy is the trace over the total; top-5 (only with more than 5 classes) counts an image as
right when its class is among the 5 highest scores.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from convision.engine.distributed import all_reduce_sum_
from convision.errors import DataError


class ClassificationMetric:
    """``update(logits[N,K], target[N])``; ``reduce_()`` all-reduces; ``compute() -> dict``.

    With ``keep_predictions`` it also stores, per image in update order, the prediction, its
    softmax probability and the target (``predictions``, ``confidences``, ``targets``) -- for the
    misclassified-examples grid; these are local to the process.
    """

    def __init__(
        self, num_classes: int, topk: int = 5, keep_predictions: bool = False
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.topk = int(topk)
        self.mat = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.topk_correct = torch.zeros((), dtype=torch.int64)
        self.keep_predictions = keep_predictions
        self.predictions: list[int] = []
        self.confidences: list[float] = []
        self.targets: list[int] = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"expected logits [N,{self.num_classes}], got {tuple(logits.shape)}"
            )
        target = target.reshape(-1).long().cpu()
        logits = logits.detach().float().cpu()
        if len(target) != len(logits):
            raise ValueError(f"{len(logits)} predictions for {len(target)} targets")
        n = self.num_classes
        if len(target) and (int(target.min()) < 0 or int(target.max()) >= n):
            bad = int(target[(target < 0) | (target >= n)][0])
            raise DataError(f"label: class {bad} is outside 0..{n - 1}")
        pred = logits.argmax(1)
        self.mat += torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)
        if n > self.topk:
            top = logits.topk(self.topk, dim=1).indices
            self.topk_correct += (top == target[:, None]).any(1).sum()
        if self.keep_predictions:
            probs = logits.softmax(1)
            self.predictions += pred.tolist()
            self.confidences += probs.gather(1, pred[:, None])[:, 0].tolist()
            self.targets += target.tolist()

    def reduce_(self) -> None:
        """Sum the counts over all processes (in place); a no-op without torch.distributed."""
        flat = all_reduce_sum_(
            torch.cat([self.mat.reshape(-1), self.topk_correct.reshape(1)])
        )
        self.mat.copy_(flat[:-1].reshape(self.mat.shape))
        self.topk_correct.copy_(flat[-1])

    def compute(self) -> dict[str, Any]:
        h = self.mat.double()
        total = float(h.sum())
        tp = h.diag()
        support = h.sum(1)
        predicted = h.sum(0)
        precision = [
            float(tp[c] / predicted[c]) if predicted[c] > 0 else None
            for c in range(self.num_classes)
        ]
        recall = [
            float(tp[c] / support[c]) if support[c] > 0 else None
            for c in range(self.num_classes)
        ]
        # F1 = 2TP / (2TP + FP + FN): defined whenever the class was present or predicted
        denom = support + predicted
        f1 = [
            float(2 * tp[c] / denom[c]) if denom[c] > 0 else None
            for c in range(self.num_classes)
        ]
        out: dict[str, Any] = {
            "accuracy": float(tp.sum() / total) if total else math.nan,
            "macro_f1": _mean(f1),
            "macro": {
                "precision": _mean(precision),
                "recall": _mean(recall),
                "f1": _mean(f1),
            },
            "per_class_precision": precision,
            "per_class_recall": recall,
            "per_class_f1": f1,
            "support": [int(v) for v in support.tolist()],
            "confusion_matrix": self.mat.tolist(),
        }
        if self.num_classes > self.topk:
            out[f"top{self.topk}"] = (
                float(self.topk_correct) / total if total else math.nan
            )
        return out


def _mean(values: Sequence[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else math.nan


def format_table(metrics: dict[str, Any], classes: Sequence[str]) -> str:
    """A plain-text report: accuracy, top-5, then precision/recall/F1/support per class."""

    def f(v: Any) -> str:
        return (
            "   -  "
            if v is None or (isinstance(v, float) and math.isnan(v))
            else f"{v:6.3f}"
        )

    lines = [
        f"accuracy {f(metrics['accuracy']).strip()}  ({metrics.get('num_images', int(sum(metrics['support'])))} images)"
    ]
    topk = [k for k in metrics if k.startswith("top") and k[3:].isdigit()]
    for k in topk:
        lines.append(f"{k.replace('top', 'top-')} accuracy {f(metrics[k]).strip()}")
    width = max([len("class"), *(len(c) for c in classes)])
    lines.append(f"{'class':<{width}}  precision  recall      F1  support")
    for c, name in enumerate(classes):
        lines.append(
            f"{name:<{width}}     {f(metrics['per_class_precision'][c])}  {f(metrics['per_class_recall'][c])}  "
            f"{f(metrics['per_class_f1'][c])}  {metrics['support'][c]:7d}"
        )
    lines.append(
        f"{'macro':<{width}}     {f(metrics['macro']['precision'])}  {f(metrics['macro']['recall'])}  {f(metrics['macro']['f1'])}"
    )
    return "\n".join(lines)
