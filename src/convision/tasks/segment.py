"""Semantic segmentation as a task for the shared engine: data, loss, metric and prediction."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from convision.data import IGNORE_INDEX
from convision.data.transforms import pad_collate
from convision.losses import segmentation_cross_entropy
from convision.metrics.segmentation import ConfusionMatrix


class SegmentationTask:
    """Per-pixel classification: cross-entropy with ``ignore_index`` and a confusion-matrix metric."""

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

    def new_metric(self) -> ConfusionMatrix:
        return ConfusionMatrix(self.num_classes, ignore_index=self.ignore_index)

    @torch.no_grad()
    def eval_step(self, model: torch.nn.Module, batch: Any, device: torch.device, metric: ConfusionMatrix) -> None:
        images, masks = batch
        pred = model(images.to(device, non_blocking=True)).argmax(1)
        metric.update(pred.cpu(), masks)


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
