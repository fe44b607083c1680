"""Single-object localization (classification + one box): settings, data, model, loss, metric,
prediction and drawing.

    import convision
    run = convision.train(convision.LocalizeConfig())  # built-in one-shape scenes, ImageNet MobileNetV2
    model = convision.load(run["best"])
    metrics = convision.evaluate(model)               # accuracy (class right and IoU > 0.5), mean IoU, ...
    preds = convision.predict(model, ["a.jpg"])       # [{"class", "score", "box": [x1, y1, x2, y2] pixels}]

Model: :class:`convision.models.localization.Localizer` (``"localizer"`` in the registry), a
classifier backbone with a class head and a box head (OverFeat's classification + localization).
Loss: ``cross_entropy + box_weight * box_loss`` with the box loss on the normalised
``(cx, cy, w, h)`` the head predicts, averaged over the 4 coordinates and the batch: ``mse``
(default; the negative log-likelihood of a Gaussian with fixed variance, up to constants) or
``smooth_l1`` (beta 1/9 in normalised units, i.e. quadratic below ~11 % of the image side).
Strategies and learning-rate groups as classification (:class:`GroupedTrainer`); both heads train at
``lr * head_lr_mult``. No feature caching (the box head would learn nothing new from it, but the
augmentation flips the boxes, so it is simply not offered).

Checkpoint extras (besides the engine's): ``"task": "localize"``, ``"model": {"name": "localizer",
"kwargs": {arch, num_classes, weights, strategy, hidden, box_input}}``, ``"image_size"``, ``"head_lr_mult"``,
``"box_loss"``, ``"box_weight"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert

from convision.config import Settings, setting
from convision.data.images import to_image
from convision.data.localization import (
    build_localization_dataset,
    localization_collate,
    localization_eval_transforms,
    localization_train_transforms,
)
from convision.engine.distributed import DistInfo
from convision.engine.trainer import evaluate as run_evaluation
from convision.engine.trainer import seed_everything
from convision.errors import ConfigError, DataError
from convision.metrics.localization import LocalizationMetric
from convision.models import build_model
from convision.models.localization import to_pixels
from convision.tasks import base
from convision.tasks.classify import (  # on_load: the same image_size
    GroupedTrainer,
    TransferDataSection,
    TransferModelSection,
    TransferTrainSection,
    on_load,  # noqa: F401
    resolve_settings,
)
from convision.viz import draw_box

NAME = "localize"

BOX_LOSSES = ("mse", "smooth_l1")
SMOOTH_L1_BETA = 1.0 / 9.0


@dataclass
class LocalizeDataConfig(TransferDataSection):
    data: str = setting(
        "synthetic",
        "'synthetic', a .csv (path,class,x1,y1,x2,y2) or a .json ([{image, class, box}]) annotation file",
    )
    val_data: str = setting(
        "", "validation annotation file (empty: a hold-out of the training file)"
    )
    box_format: str = setting(
        "xyxy",
        "boxes in the annotation files: xyxy (corners) | xywh (top-left, width, height) | cxcywh",
    )


@dataclass
class LocalizeModelConfig(TransferModelSection):
    hidden: int = setting(256, "hidden units of the box head (0 = one linear layer)", 0)
    box_input: str = setting(
        "spatial",
        "box head input: spatial (last feature map, as OverFeat) | pooled (the class head's vector)",
    )


@dataclass
class LocalizeTrainConfig(TransferTrainSection):
    out: str = setting(
        "runs/localize", "output folder for checkpoints, metrics and pictures"
    )
    head_lr_mult: float = setting(
        1.0,
        "heads' lr / backbone lr (0 = classification's auto, 10; 10 blew the box loss up in bench/localization.py)",
        0,
    )
    box_loss: str = setting("mse", "mse (Gaussian log-likelihood) | smooth_l1")
    box_weight: float = setting(
        1.0, "lambda: loss = cross-entropy + lambda x box loss", 0
    )


@dataclass
class LocalizeConfig(Settings):
    data: LocalizeDataConfig = field(default_factory=LocalizeDataConfig)
    model: LocalizeModelConfig = field(default_factory=LocalizeModelConfig)
    train: LocalizeTrainConfig = field(default_factory=LocalizeTrainConfig)


# ---------------------------------------------------------------------------------------------- task


def box_loss(
    pred_cxcywh: torch.Tensor, true_xyxy: torch.Tensor, kind: str = "mse"
) -> torch.Tensor:
    """Box loss on normalised ``(cx, cy, w, h)``, mean over coordinates and images."""
    target = box_convert(true_xyxy.float(), "xyxy", "cxcywh")
    if kind == "mse":
        return F.mse_loss(pred_cxcywh.float(), target)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred_cxcywh.float(), target, beta=SMOOTH_L1_BETA)
    raise ConfigError(f"box_loss: unknown {kind!r} (expected {' | '.join(BOX_LOSSES)})")


class LocalizationTask:
    """``cross_entropy(logits, label) + box_weight * box_loss``; metric :class:`LocalizationMetric`."""

    name = "localize"
    main_metric = "accuracy"

    def __init__(
        self, num_classes: int, box_loss: str = "mse", box_weight: float = 1.0
    ) -> None:
        if box_loss not in BOX_LOSSES:
            raise ConfigError(
                f"box_loss: unknown {box_loss!r} (expected {' | '.join(BOX_LOSSES)})"
            )
        if box_weight < 0:
            raise ConfigError(f"box_weight: must be >= 0, got {box_weight}")
        self.num_classes = int(num_classes)
        self.box_loss = box_loss
        self.box_weight = float(box_weight)

    def collate(self, batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return localization_collate(batch)

    def losses(
        self, model: nn.Module, batch: Any, device: torch.device
    ) -> dict[str, torch.Tensor]:
        x, boxes, labels = batch
        out = model(x.to(device, non_blocking=True))
        ce = F.cross_entropy(
            out["logits"].float(), labels.to(device, non_blocking=True)
        )
        bl = box_loss(
            out["boxes_cxcywh"], boxes.to(device, non_blocking=True), self.box_loss
        )
        return {"loss": ce + self.box_weight * bl, "cls_loss": ce, "box_loss": bl}

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        return self.losses(model, batch, device)["loss"]

    def new_metric(self) -> LocalizationMetric:
        return LocalizationMetric(self.num_classes)

    @torch.no_grad()
    def eval_step(
        self,
        model: nn.Module,
        batch: Any,
        device: torch.device,
        metric: LocalizationMetric,
    ) -> None:
        x, boxes, labels = batch
        out = model(x.to(device, non_blocking=True))
        metric.update(
            out["logits"].float().cpu(), out["boxes"].float().cpu(), labels, boxes
        )


# ---------------------------------------------------------------------------------------------- entry points


def build_datasets(
    cfg: LocalizeConfig, image_size: int, mean: Sequence[float], std: Sequence[float]
):
    """(train, val) with the training / evaluation transforms; val may be empty."""
    d = cfg.data
    train_tf = localization_train_transforms(
        image_size, mean, std, hflip=d.hflip, color_jitter=d.color_jitter
    )
    train_set = build_localization_dataset(d, "train", transforms=train_tf)
    val_set = build_localization_dataset(
        d,
        "val",
        transforms=localization_eval_transforms(image_size, mean, std),
        classes=train_set.classes,
    )
    return train_set, val_set


def train(
    cfg: LocalizeConfig | None = None,
    *,
    progress: bool = True,
    validate_data: bool = True,
) -> dict[str, Any]:
    """Train a localizer as configured; works under ``torchrun``. Returns ``{"best", "last",
    "best_metric", "best_epoch", "history"}``."""
    cfg = cfg if cfg is not None else LocalizeConfig()
    s = resolve_settings(
        cfg
    )  # same rules as classification: strategy/weights, image size, head lr
    if cfg.train.box_loss not in BOX_LOSSES:
        raise ConfigError(
            f"box_loss: unknown {cfg.train.box_loss!r} (expected {' | '.join(BOX_LOSSES)})"
        )
    cfg.data.image_size = s["image_size"]

    def prepare(dist: DistInfo) -> dict[str, Any]:
        train_set, val_set = build_datasets(cfg, s["image_size"], s["mean"], s["std"])
        base.check_splits(
            train_set,
            val_set,
            cfg.data.data,
            validate=validate_data,
            progress=progress,
            is_main=dist.is_main,
        )
        classes = list(train_set.classes)
        if len(classes) < 2:
            raise DataError(
                f"{cfg.data.data}: localization needs at least 2 classes, found {len(classes)}"
            )
        seed_everything(cfg.train.seed)
        kwargs = {
            "arch": cfg.model.backbone,
            "num_classes": len(classes),
            "weights": s["weights"],
            "strategy": cfg.model.strategy,
            "hidden": int(cfg.model.hidden),
            "box_input": cfg.model.box_input,
        }
        model = build_model("localizer", **kwargs)
        meta = base.checkpoint_meta(
            NAME,
            "localizer",
            kwargs,
            classes,
            cfg,
            mean=s["mean"],
            std=s["std"],
            image_size=s["image_size"],
            head_lr_mult=s["head_lr_mult"],
            box_loss=cfg.train.box_loss,
            box_weight=float(cfg.train.box_weight),
        )
        task = LocalizationTask(
            len(classes), box_loss=cfg.train.box_loss, box_weight=cfg.train.box_weight
        )
        return {
            "trainer": GroupedTrainer,
            "task": task,
            "model": model,
            "train_set": train_set,
            "val_set": val_set if len(val_set) else None,
            "meta": meta,
            "workers": cfg.data.workers,
            "trainer_kwargs": {"head_lr_mult": s["head_lr_mult"]},
        }

    return base.train_on_engine(cfg, prepare, progress=progress)


# this task's checkpoints only: another task's is a one-line CheckpointError
load = partial(base.load, task=NAME)


def evaluate(
    model: nn.Module | str | os.PathLike,
    data: str | LocalizeDataConfig | None = None,
    *,
    split: str = "val",
    box_format: str | None = None,
    batch_size: int = 32,
    workers: int = 2,
    device: str | None = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Accuracy (class right and IoU > 0.5), mean IoU, class and box accuracy over a split (eval
    transforms). ``data`` defaults to what the model was trained on; a file given here is
    evaluated whole (``split`` is ignored for it). ``box_format`` (xyxy | xywh | cxcywh) is that of
    the annotation file; None keeps the training setting."""
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)
    if isinstance(data, LocalizeDataConfig):
        data_cfg = data
    else:
        data_cfg = base.trained_section(net, "data", LocalizeDataConfig)
        if data is not None:
            data_cfg.data, data_cfg.val_data = (
                str(data),
                (str(data) if str(data) != "synthetic" else ""),
            )
        if box_format is not None:
            data_cfg.box_format = box_format
    tf = localization_eval_transforms(
        net.image_size, net.normalization["mean"], net.normalization["std"]
    )
    dataset = build_localization_dataset(
        data_cfg, split, transforms=tf, classes=net.classes
    )
    if len(dataset) == 0:
        raise DataError(f"{data_cfg.data}: the {split} split holds no images")
    task = LocalizationTask(len(net.classes))
    metrics = run_evaluation(
        task,
        net,
        dataset,
        batch_size=batch_size,
        workers=workers,
        device=dev,
        progress=progress,
    )
    metrics["classes"] = list(net.classes)
    metrics["split"] = split
    return metrics


@torch.no_grad()
def predict(
    model: nn.Module | str | os.PathLike,
    images: Any,
    *,
    device: str | None = "auto",
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """For each image (paths, folder, glob or HxW[x3] uint8 arrays): ``{"class", "score", "box"}`` with
    ``box = [x1, y1, x2, y2]`` in pixels of the original image (x2/y2 exclusive edges)."""
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)
    tf = localization_eval_transforms(
        net.image_size, net.normalization["mean"], net.normalization["std"]
    ).pipeline
    items = base.read_inputs(images)
    out: list[dict[str, Any]] = []
    for start in range(0, len(items), batch_size):
        chunk = [to_image(a) for _, a in items[start : start + batch_size]]
        x = torch.stack([tf(img).as_subclass(torch.Tensor) for img in chunk]).to(dev)
        res = net(x)
        probs = res["logits"].float().softmax(1).cpu()
        score, label = probs.max(1)
        for img, s, c, b in zip(chunk, score, label, res["boxes"].float().cpu()):
            h, w = img.shape[-2:]
            out.append(
                {
                    "class": net.classes[int(c)],
                    "score": float(s),
                    "box": [float(v) for v in to_pixels(b[None], w, h)[0]],
                }
            )
    return out


def predict_to_folder(
    model: nn.Module | str | os.PathLike,
    inputs: Any,
    out_dir: str | os.PathLike,
    *,
    device: str | None = "auto",
    strict: bool = False,
    progress: bool = True,
) -> base.FolderResults:
    """Predict every input image, write ``<out>/<stem>.png`` with the box, class and score drawn and
    ``<out>/predictions.json`` (``{path: {"class", "score", "box"}}``); returns that dict."""
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)

    def predict_one(
        image: np.ndarray, name: str
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        p = predict(net, image, device=dev)[0]
        return p, {"": draw_box(image, p["box"], f"{p['class']} {p['score']:.2f}")}

    return base.predict_to_folder(
        inputs, out_dir, predict_one, strict=strict, progress=progress
    )
