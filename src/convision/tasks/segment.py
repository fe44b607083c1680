"""Semantic segmentation: settings, data, model, loss, metric, prediction and drawing.

import convision
cfg = convision.SegmentConfig()
cfg.train.epochs = 2
run = convision.train(cfg)                      # {"best": path, "last": path, "best_metric": ...}
model = convision.load(run["best"])             # ready nn.Module in eval mode
metrics = convision.evaluate(model)             # built-in validation split, original resolution
masks = convision.predict(model, ["street.jpg"])  # list of HxW class-index arrays
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from convision.config import (
    AugmentSection,
    BackboneSection,
    ModelNameSection,
    ScenesSection,
    Settings,
    SourceSection,
    TrainConfig,
    apply,
    parse_class_weights,
    setting,
)
from convision.data import IGNORE_INDEX
from convision.data.segmentation import (
    SyntheticSegmentation,
    build_segmentation_dataset,
    default_crop_size,
)
from convision.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    pad_collate,
    segmentation_eval_transforms,
    segmentation_train_transforms,
)
from convision.engine.checkpoint import load_checkpoint, load_matching_state
from convision.engine.distributed import DistInfo, rank_world
from convision.engine.trainer import evaluate as run_evaluation
from convision.engine.trainer import seed_everything
from convision.errors import ConfigError, DataError
from convision.losses import segmentation_cross_entropy
from convision.metrics.boundary import BoundaryF
from convision.metrics.object_size import COCO_THRESHOLDS, ObjectSizeMetric
from convision.metrics.segmentation import ConfusionMatrix
from convision.models import MODELS, build_model
from convision.models.segmentation import recipe
from convision.nn.crf import crf_settings, dense_crf
from convision.tasks import base
from convision.viz import colorize, overlay, save_grid, voc_palette

NAME = "segment"


@dataclass
class SegmentDataConfig(AugmentSection, ScenesSection, SourceSection):
    data: str = setting(
        "synthetic", "'synthetic' (built-in scenes) or a data set folder"
    )
    format: str = setting("auto", "folder layout: auto | folder | voc")
    crop_size: int = setting(
        0,
        "training crop side; 0 = the images' own size, each side at most 320 (synthetic: scene size)",
        0,
    )
    scale_min: float = setting(0.5, "random-scale augmentation, lower bound", 0.01)
    scale_max: float = setting(2.0, "random-scale augmentation, upper bound", 0.01)

    aliases = {"image_size": "scene_size"}


@dataclass
class SegmentModelConfig(BackboneSection, ModelNameSection):
    model: str = setting(
        "fcn8s",
        "architecture: fcn32s | fcn16s | fcn8s | segnet | deconvnet | unet | dilated",
    )
    backbone: str = setting(
        "mobilenet_v2",
        "vgg16 | vgg16_bn | mobilenet_v2 | resnet18 | resnet34 | resnet50 | resnet101 (unet: also none = the paper's encoder; dilated: vgg16 = the paper's or mobilenet_v2)",
    )
    faithful: bool = setting(
        False, "FCN: the paper's pad-100-and-crop alignment (VGG16 only)"
    )
    learnable_upsampling: bool = setting(
        False, "FCN: train the bilinear-initialised transposed convolutions"
    )
    init_from: str = setting(
        "", "checkpoint to initialise matching layers from (FCN-32s -> 16s -> 8s)"
    )


@dataclass
class SegmentConfig(Settings):
    data: SegmentDataConfig = field(default_factory=SegmentDataConfig)
    model: SegmentModelConfig = field(default_factory=SegmentModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    ordered = (("scale_min", "scale_max"),)


class SegmentationMetric:
    """The confusion-matrix metrics and the boundary F-score, updated and reduced together;
    ``compute()`` merges both dicts (``miou``, ..., ``boundary_f``, ``per_class_boundary_f``).
    With ``by_size`` (an :class:`ObjectSizeMetric`) also recall and IoU by object size
    (``metrics["by_size"]``)."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        boundary_tolerance: int = 2,
        by_size: ObjectSizeMetric | None = None,
    ) -> None:
        self.confusion = ConfusionMatrix(num_classes, ignore_index=ignore_index)
        self.boundary = BoundaryF(
            num_classes, tolerance=boundary_tolerance, ignore_index=ignore_index
        )
        self.by_size = by_size

    def _parts(self) -> list:
        return [self.confusion, self.boundary] + [self.by_size] * bool(self.by_size)

    def reset(self) -> None:
        for part in self._parts():
            part.reset()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        for part in self._parts():
            part.update(pred, target)

    def reduce_(self) -> None:
        for part in self._parts():
            part.reduce_()

    def compute(self) -> dict[str, Any]:
        out = {**self.confusion.compute(), **self.boundary.compute()}
        if self.by_size is not None:
            out["by_size"] = self.by_size.compute()
        return out


class SegmentationTask:
    """Per-pixel classification: cross-entropy with ``ignore_index``; metric: confusion matrix + boundary F."""

    name = "segment"
    main_metric = "miou"

    def __init__(
        self,
        num_classes: int,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
        size_thresholds: Sequence[int] | None = None,
        background: Sequence[int] = (),
    ):
        self.num_classes = num_classes
        self.class_weights = list(class_weights) if class_weights else None
        self.ignore_index = ignore_index
        # evaluation only: recall / IoU by object size (None: not measured, e.g. while training)
        self.size_thresholds = size_thresholds
        self.background = list(background)

    def collate(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_collate(batch, ignore_index=self.ignore_index)

    def loss(
        self, model: torch.nn.Module, batch: Any, device: torch.device
    ) -> torch.Tensor:
        images, masks = batch
        logits = model(images.to(device, non_blocking=True))
        weights = (
            None
            if self.class_weights is None
            else torch.tensor(self.class_weights, device=logits.device)
        )
        return segmentation_cross_entropy(
            logits, masks.to(device, non_blocking=True), weights, self.ignore_index
        )

    def new_metric(self) -> SegmentationMetric:
        by_size = None
        if self.size_thresholds is not None:
            by_size = ObjectSizeMetric(
                self.num_classes,
                self.size_thresholds,
                ignore_index=self.ignore_index,
                exclude=self.background,
            )
        return SegmentationMetric(
            self.num_classes, ignore_index=self.ignore_index, by_size=by_size
        )

    @torch.no_grad()
    def eval_step(
        self,
        model: torch.nn.Module,
        batch: Any,
        device: torch.device,
        metric: SegmentationMetric,
    ) -> None:
        images, masks = batch
        pred = model(images.to(device, non_blocking=True)).argmax(1)
        # counted where the prediction is (GPU or CPU); the metrics keep their totals on the CPU
        metric.update(pred, masks.to(pred.device, non_blocking=True))


def normalize(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float normalised with the checkpoint's mean/std."""
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


@torch.no_grad()
def predict_probabilities(
    model: torch.nn.Module, image: np.ndarray, normalization: dict, device: torch.device
) -> torch.Tensor:
    """Softmax probabilities [C,H,W] for one RGB uint8 image [H,W,3] at its own resolution."""
    x = (
        torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        .permute(2, 0, 1)[None]
        .to(device)
    )
    logits = model(normalize(x, normalization["mean"], normalization["std"]))
    return F.softmax(logits.float(), dim=1)[0]


# ---------------------------------------------------------------------------------------------- model and data


def model_kwargs(cfg: SegmentConfig, num_classes: int) -> dict[str, Any]:
    """The builder arguments for ``cfg.model``: only those the chosen architecture takes.

    A setting changed from its default that the architecture does not take is an error
    (``--faithful`` on a model without that option), not silently dropped.
    """
    m = cfg.model
    segmentation = [
        n
        for n, b in MODELS.items()
        if b.__module__.startswith("convision.models.segmentation")
    ]
    if m.model not in MODELS:
        raise ConfigError(
            f"model: unknown model {m.model!r} (known: {', '.join(MODELS)})"
        )
    if m.model not in segmentation:
        raise ConfigError(
            f"model: {m.model!r} is not a segmentation model (segmentation: {', '.join(segmentation)})"
        )
    wanted = {
        "num_classes": num_classes,
        "backbone": m.backbone,
        "weights": base.weights_name(m.weights),
        "faithful": m.faithful,
        "learnable_upsampling": m.learnable_upsampling,
    }
    return base.builder_kwargs(m.model, wanted, m)


def build_datasets(data: SegmentDataConfig, crop_size: int | None = None):
    """Training set (with augmentation) and validation set (original resolution)."""
    train_set = build_segmentation_dataset(data, "train")
    crop = crop_size or data.crop_size or default_crop_size(train_set)
    train_set.transforms = segmentation_train_transforms(
        crop_size=crop,
        scale_range=(data.scale_min, data.scale_max),
        hflip=data.hflip,
        color_jitter=data.color_jitter,
    )
    val_set = build_segmentation_dataset(
        data, "val", transforms=segmentation_eval_transforms()
    )
    return train_set, val_set


# ---------------------------------------------------------------------------------------------- entry points


def train(
    cfg: SegmentConfig | None = None,
    *,
    progress: bool = True,
    validate_data: bool = True,
) -> dict[str, Any]:
    """Train a segmentation model as configured; works unchanged under ``torchrun``.

    Returns ``{"best": path, "last": path, "best_metric": float, "best_epoch": int, "history": [...]}``.
    """
    cfg = cfg if cfg is not None else SegmentConfig()
    cfg.check()

    def prepare(dist: DistInfo) -> dict[str, Any]:
        train_set, val_set = build_datasets(cfg.data)
        base.check_splits(
            train_set,
            val_set,
            cfg.data.data,
            validate=validate_data,
            progress=progress,
            is_main=dist.is_main,
        )
        classes = list(train_set.classes)
        if val_set.classes != train_set.classes:
            raise DataError(
                f"{cfg.data.data}: training and validation splits disagree on the classes"
            )
        weights = parse_class_weights(cfg.train.class_weights)
        if weights is not None and len(weights) != len(classes):
            raise ConfigError(
                f"class_weights: {len(weights)} values given for {len(classes)} classes"
            )
        seed_everything(cfg.train.seed)
        name = cfg.model.model
        kwargs = model_kwargs(cfg, len(classes))
        model = build_model(name, **kwargs)
        # the builder's own record of its arguments includes its defaults, so a checkpoint
        # rebuilds the same network even if a default changes later
        kwargs = dict(getattr(model, "spec", {}).get("kwargs", kwargs))
        if cfg.model.init_from and not cfg.train.resume:
            state = load_checkpoint(cfg.model.init_from)["state_dict"]
            loaded, skipped = load_matching_state(
                model, state, source=cfg.model.init_from
            )
            if dist.is_main:
                print(
                    f"init-from {cfg.model.init_from}: {len(loaded)} tensors loaded, new: {', '.join(skipped) or 'none'}"
                )
        meta = base.checkpoint_meta(
            NAME,
            name,
            kwargs,
            classes,
            cfg,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            colors=train_set.colors,
        )
        return {
            "task": SegmentationTask(len(classes), class_weights=weights),
            "model": model,
            "train_set": train_set,
            "val_set": val_set,
            "meta": meta,
            "workers": cfg.data.workers,
        }

    return base.train_on_engine(cfg, prepare, progress=progress)


# this task's checkpoints only: another task's is a one-line CheckpointError
load = partial(base.load, task=NAME)


def on_load(model: nn.Module, ckpt: dict[str, Any]) -> None:
    """Nothing beyond the common attributes."""


def evaluate(
    model: nn.Module | str | os.PathLike,
    data: str | SegmentDataConfig | None = None,
    *,
    split: str = "val",
    batch_size: int = 4,
    workers: int = 2,
    device: str | None = "auto",
    progress: bool = True,
    fmt: str = "auto",
    crf: dict[str, Any] | bool | None = None,
    size_thresholds: Sequence[int] | None = COCO_THRESHOLDS,
) -> dict[str, Any]:
    """Metrics over a whole split at the original resolution (pixel acc, mean acc, mIoU, fwIoU,
    boundary F, per class) and, unless ``size_thresholds`` is None, recall and IoU by object size
    (``metrics["by_size"]``, :mod:`convision.metrics.object_size`: connected components of each
    class but the background -- classes named ``background`` -- bucketed by area in pixels, COCO's
    32^2 / 96^2 by default).

    ``data`` defaults to the data set the model was trained on (for the built-in scenes, the same
    generator settings); a folder path or a SegmentDataConfig selects another.

    ``crf``: None (default) for the network's argmax; ``True`` or a dict of
    :func:`convision.nn.crf.dense_crf` settings (``{"iterations": 5, "sxy_bilateral": 20, ...}``,
    missing ones take the defaults) to refine each image's softmax with a dense CRF first. The CRF
    needs the raw uint8 image, so the data set is then read without transforms and every image
    goes through :func:`predict_probabilities` on its own (batch 1, the same normalisation as the
    eval transforms; ``batch_size`` is not used); the settings are recorded as ``metrics["crf"]``.
    """
    settings = crf_settings(crf)
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)
    data_cfg = _data_config(net, data, fmt)
    transforms = (
        None
        if settings
        else segmentation_eval_transforms(
            mean=net.normalization["mean"], std=net.normalization["std"]
        )
    )
    dataset = build_segmentation_dataset(data_cfg, split, transforms=transforms)
    if len(dataset.classes) != len(net.classes):
        raise DataError(
            f"{data_cfg.data}: the data set has {len(dataset.classes)} classes but the model predicts {len(net.classes)}"
        )
    task = SegmentationTask(
        len(net.classes),
        size_thresholds=size_thresholds,
        background=[i for i, n in enumerate(net.classes) if n.lower() == "background"],
    )
    if settings:
        metrics = _evaluate_with_crf(
            task, net, dataset, settings, workers=workers, device=dev, progress=progress
        )
        metrics["crf"] = dict(settings)
    else:
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
    metrics["num_images"] = len(dataset)
    return metrics


@torch.no_grad()
def _evaluate_with_crf(
    task: SegmentationTask,
    net: nn.Module,
    dataset: Any,
    settings: dict[str, Any],
    *,
    workers: int,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    """One image at a time: softmax at the original resolution -> dense CRF -> argmax -> metric.
    Under torchrun every process takes every W-th image and the metric is all-reduced."""
    rank, world = rank_world()
    indices = list(range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=None,
        num_workers=workers,
        persistent_workers=False,
    )
    metric = task.new_metric()
    for image, mask in tqdm(
        loader,
        total=len(indices),
        desc="val+crf",
        leave=False,
        file=sys.stderr,
        disable=not progress or rank != 0,
        dynamic_ncols=True,
    ):
        rgb = torch.as_tensor(image).permute(1, 2, 0).numpy()
        probs = predict_probabilities(net, rgb, net.normalization, device).cpu().numpy()
        refined = dense_crf(rgb, probs, **settings)
        metric.update(
            torch.from_numpy(refined.argmax(0))[None],
            torch.as_tensor(mask).long()[None],
        )
    metric.reduce_()
    return metric.compute()


def _data_config(
    model: nn.Module, data: str | SegmentDataConfig | None, fmt: str
) -> SegmentDataConfig:
    if isinstance(data, SegmentDataConfig):
        return data
    cfg = base.trained_section(model, "data", SegmentDataConfig)
    if data is not None:
        cfg.data = str(data)
    if fmt != "auto" or data is not None:
        cfg.format = fmt
    return cfg


def predict(
    model: nn.Module | str | os.PathLike,
    images: Any,
    *,
    device: str | None = "auto",
    return_probabilities: bool = False,
    crf: dict[str, Any] | bool | None = None,
) -> list[np.ndarray]:
    """Class-index masks (uint8 HxW, original resolution) for images given as paths, a folder,
    a glob, or RGB uint8 arrays. With ``return_probabilities`` the list holds CxHxW float arrays.
    ``crf`` (True or a dict of :func:`convision.nn.crf.dense_crf` settings) refines each image's
    softmax with a dense CRF on the image first (the probabilities returned are then the CRF's)."""
    settings = crf_settings(crf)
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)
    out = []
    for _, arr in base.read_inputs(images):
        probs = predict_probabilities(net, arr, net.normalization, dev)
        if settings:
            probs = dense_crf(arr, probs, **settings)
        out.append(
            probs.cpu().numpy()
            if return_probabilities
            else probs.argmax(0).to(torch.uint8).cpu().numpy()
        )
    return out


def predict_to_folder(
    model: nn.Module | str | os.PathLike,
    inputs: Any,
    out: str | os.PathLike,
    *,
    alpha: float = 0.5,
    device: str | None = "auto",
    crf: dict[str, Any] | bool | None = None,
    strict: bool = False,
    progress: bool = True,
) -> base.FolderResults:
    """Segment every input image and write ``out/masks`` (palette PNG of class indices, as VOC),
    ``out/color`` (RGB colour masks), ``out/overlay`` (colour over the image) and
    ``out/predictions.json`` (``{path: {"classes": [present class names], "size": [H, W]}}``).
    ``crf``: as for :func:`predict`; ``strict`` and the returned dict: see :func:`base.predict_to_folder`."""
    settings = crf_settings(crf)
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)
    colors = list(net.colors) or voc_palette(len(net.classes))
    palette = [v for c in (colors + voc_palette(256))[:256] for v in c]

    def predict_one(
        image: np.ndarray, name: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        mask = predict(net, image, device=dev, crf=settings)[0]
        indexed = Image.fromarray(mask, mode="P")
        indexed.putpalette(palette)
        present = [
            net.classes[int(c)] for c in np.unique(mask) if int(c) < len(net.classes)
        ]
        pictures = {
            "masks": indexed,
            "color": colorize(mask, colors),
            "overlay": overlay(image, mask, colors, alpha=alpha),
        }
        return {"classes": present, "size": list(mask.shape)}, pictures

    return base.predict_to_folder(
        inputs, out, predict_one, strict=strict, progress=progress
    )


# ---------------------------------------------------------------------------------------------- the demo recipe

# ``make demo``: FCN-8s on ImageNet MobileNetV2, ~4 minutes of training on a 2-core CPU (README, "Numbers"),
# with FCN-8s's default recipe (AdamW 1e-3, weight decay 1e-4, poly, warm-up 0.5, scale 0.75-1.5).
DEMO_SETTINGS = {
    "model": "fcn8s",
    "backbone": "mobilenet_v2",
    "weights": "IMAGENET1K_V1",
    "epochs": 20,
    "batch_size": 8,
    **recipe("fcn8s"),
}


def demo_config(out: str, epochs: int | None = None) -> SegmentConfig:
    """The demo's settings (:data:`DEMO_SETTINGS`) writing to ``out``."""
    cfg = apply(SegmentConfig(), DEMO_SETTINGS, where="demo")
    cfg.train.out = out
    cfg.train.overwrite = True
    if epochs is not None:
        cfg.train.epochs = epochs
    return cfg


def validation_samples(
    count: int, seed: int = 0, model: nn.Module | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, mask) pairs from the built-in validation split (the model's scene settings), as uint8 arrays."""
    data = (
        base.trained_section(model, "data", SegmentDataConfig)
        if model is not None
        else SegmentDataConfig(data_seed=seed)
    )
    ds = SyntheticSegmentation(
        split="val",
        num_images=max(count, data.num_val),
        image_size=data.scene_size,
        num_classes=data.num_classes,
        seed=data.data_seed,
    )
    pairs = []
    for i in range(count):
        image, mask = ds[i]
        pairs.append((image.permute(1, 2, 0).numpy(), mask.numpy().astype(np.uint8)))
    return pairs


def save_prediction_grid(
    model: nn.Module, path: str | Path, count: int = 6, seed: int = 0
) -> None:
    """Rows of image | ground truth | prediction for validation scenes."""
    rows = []
    for image, mask in validation_samples(count, seed, model):
        pred = predict(model, image)[0]
        rows.append([image, colorize(mask, model.colors), colorize(pred, model.colors)])
    save_grid(rows, ["image", "ground truth", f"{model.spec['name']} prediction"], path)


def calibration_inputs(
    model: nn.Module, count: int, size: int | None
) -> list[np.ndarray]:
    """``count`` training images of the data the model was trained on (evenly spaced over the split),
    resized to ``size x size`` (None: their own size) and normalised as the network takes them: the
    calibration set of int8 quantization (:func:`convision.export.export_onnx`)."""
    dataset = build_segmentation_dataset(_data_config(model, None, "auto"), "train")
    picks = (
        np.linspace(0, len(dataset) - 1, num=max(1, min(int(count), len(dataset))))
        .round()
        .astype(int)
    )
    out = []
    for i in picks:
        x = torch.as_tensor(dataset[int(i)][0])[None].float()
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = (
                F.interpolate(
                    x,
                    size=(size, size),
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
                .round()
                .clamp(0, 255)
            )
        out.append(
            normalize(
                x, model.normalization["mean"], model.normalization["std"]
            ).numpy()
        )
    return out
