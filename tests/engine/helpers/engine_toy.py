"""A tiny segmentation problem for the engine tests: in-memory data, a small conv net, a Task."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from torch import nn

from convision.config import TrainConfig
from convision.losses import segmentation_cross_entropy
from convision.metrics import ConfusionMatrix

NUM_CLASSES = 3


class ToyNet(nn.Module):
    def __init__(
        self, num_classes: int = NUM_CLASSES, dropout: float = 0.0, bn: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.drop = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.bn(self.conv1(x)))))


class ToySegmentation(torch.utils.data.Dataset):
    """Images [3,8,8]; the label of a pixel is its brightest channel. ``augment`` adds random noise
    drawn from the global torch RNG (like a random transform would)."""

    def __init__(
        self, n: int, seed: int = 0, augment: bool = False, size: int = 8
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, size, size, generator=g)
        self.masks = self.images.argmax(1)
        self.augment = augment
        self.classes = ["a", "b", "c"]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.augment:
            image = image + 0.05 * torch.randn_like(image)
        return image, self.masks[i]


class Interrupt(Exception):
    """Raised by ToyTask(stop_at=k) to simulate a crash at global step k."""


class ToyTask:
    main_metric = "miou"

    def __init__(
        self,
        nan_at: int | None = None,
        stop_at: int | None = None,
        sleep: float = 0.0,
        nan_rank: int | None = None,
    ) -> None:
        self.nan_at = nan_at
        self.nan_rank = nan_rank
        self.stop_at = stop_at
        self.sleep = sleep
        self.steps = 0

    def collate(self, batch):
        return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])

    def loss(self, model, batch, device):
        self.steps += 1
        if self.stop_at is not None and self.steps == self.stop_at:
            raise Interrupt(f"interrupted at step {self.steps}")
        if self.sleep:
            time.sleep(self.sleep)
        x, y = batch
        loss = segmentation_cross_entropy(model(x.to(device)), y.to(device))
        if self.nan_at is not None and self.steps >= self.nan_at:
            if self.nan_rank is None or (
                torch.distributed.is_initialized()
                and torch.distributed.get_rank() == self.nan_rank
            ):
                loss = loss * float("nan")
        return loss

    def new_metric(self):
        return ConfusionMatrix(NUM_CLASSES)

    def eval_step(self, model, batch, device, metric):
        x, y = batch
        metric.update(model(x.to(device)).argmax(1), y.to(device))


def make_cfg(out: str | Path, **overrides) -> TrainConfig:
    values = dict(
        epochs=3,
        batch_size=4,
        optimizer="sgd",
        lr=0.5,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="poly",
        warmup_epochs=0.5,
        amp=False,
        seed=0,
        device="cpu",
        out=str(out),
    )
    values.update(overrides)
    return TrainConfig(**values)


def make_meta(cfg: TrainConfig) -> dict:
    return {
        "task": "segment",
        "model": {"name": "toynet", "kwargs": {"num_classes": NUM_CLASSES}},
        "classes": ["a", "b", "c"],
        "colors": [[0, 0, 0], [128, 0, 0], [0, 128, 0]],
        "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "config": {"train": dataclasses.asdict(cfg)},
    }


def make_trainer(
    cfg: TrainConfig,
    task: ToyTask | None = None,
    *,
    n_train: int = 12,
    n_val: int = 7,
    augment: bool = False,
    dropout: float = 0.0,
    bn: bool = False,
    workers: int = 0,
    dist=None,
    log=None,
):
    from convision.engine import Trainer, seed_everything

    seed_everything(cfg.seed)
    model = ToyNet(dropout=dropout, bn=bn)
    return Trainer(
        task=task or ToyTask(),
        model=model,
        train_set=ToySegmentation(n_train, seed=1, augment=augment),
        val_set=ToySegmentation(n_val, seed=2),
        cfg=cfg,
        meta=make_meta(cfg),
        workers=workers,
        dist=dist,
        progress=False,
        log=log or (lambda msg: None),
    )
