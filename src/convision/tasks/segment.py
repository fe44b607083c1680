"""Semantic segmentation as a task for the shared engine: data, loss, metric and prediction."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from convision.data import IGNORE_INDEX
from convision.data.transforms import pad_collate
from convision.losses import segmentation_cross_entropy
from convision.metrics.boundary import BoundaryF
from convision.metrics.segmentation import ConfusionMatrix


class SegmentationMetric:
    """The confusion-matrix metrics and the boundary F-score, updated and reduced together;
    ``compute()`` merges both dicts (``miou``, ..., ``boundary_f``, ``per_class_boundary_f``)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, boundary_tolerance: int = 2) -> None:
        self.confusion = ConfusionMatrix(num_classes, ignore_index=ignore_index)
        self.boundary = BoundaryF(num_classes, tolerance=boundary_tolerance, ignore_index=ignore_index)

    def reset(self) -> None:
        self.confusion.reset()
        self.boundary.reset()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.confusion.update(pred, target)
        self.boundary.update(pred, target)

    def reduce_(self) -> None:
        self.confusion.reduce_()
        self.boundary.reduce_()

    def compute(self) -> dict[str, Any]:
        return {**self.confusion.compute(), **self.boundary.compute()}


class SegmentationTask:
    """Per-pixel classification: cross-entropy with ``ignore_index``; metric: confusion matrix + boundary F."""

    name = "segment"
    main_metric = "miou"

    def __init__(self, num_classes: int, class_weights: Sequence[float] | None = None, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.class_weights = list(class_weights) if class_weights else None
        self.ignore_index = ignore_index

    def collate(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_collate(batch, ignore_index=self.ignore_index)

    def loss(self, model: torch.nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        images, masks = batch
        logits = model(images.to(device, non_blocking=True))
        weights = None if self.class_weights is None else torch.tensor(self.class_weights, device=logits.device)
        return segmentation_cross_entropy(logits, masks.to(device, non_blocking=True), weights, self.ignore_index)

    def new_metric(self) -> SegmentationMetric:
        return SegmentationMetric(self.num_classes, ignore_index=self.ignore_index)

    @torch.no_grad()
    def eval_step(self, model: torch.nn.Module, batch: Any, device: torch.device, metric: SegmentationMetric) -> None:
        images, masks = batch
        pred = model(images.to(device, non_blocking=True)).argmax(1)
        # counted where the prediction is (GPU or CPU); the metrics keep their totals on the CPU
        metric.update(pred, masks.to(pred.device, non_blocking=True))


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float normalised with the checkpoint's mean/std."""
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, image: np.ndarray, normalization: dict, device: torch.device) -> torch.Tensor:
    """Softmax probabilities [C,H,W] for one RGB uint8 image [H,W,3] at its own resolution."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].to(device)
    logits = model(normalize(x, normalization["mean"], normalization["std"]))
    return F.softmax(logits.float(), dim=1)[0]
