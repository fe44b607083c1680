"""Image classification: settings, data, model, loss, metric, prediction and drawing.

    import convision
    cfg = convision.ClassifyConfig()             # built-in scenes, ImageNet MobileNetV2, finetune
    run = convision.train(cfg)                   # {"best": path, "last": path, "best_metric", ...}
    model = convision.load(run["best"])
    metrics = convision.evaluate(model, out_dir="runs/classify/eval")   # + confusion / errors PNGs
    top = convision.predict(model, ["a.jpg"])    # [[(class, probability), ...top-5], ...]
    heat = convision.tasks.classify.heatmap(model, "big.jpg")   # VGG / AlexNet / MobileNetV2 sliding windows

Strategies (``--strategy``, see :mod:`convision.models.classification`): ``feature-extract``
(frozen backbone, BN in eval mode, only the new head trains), ``finetune`` (everything trains, the
head at ``head_lr_mult`` x the backbone lr: 10 by default, see
:func:`convision.models.classification.default_head_lr_mult` for why not the seeds' 100),
``scratch`` (random weights, one lr).

Learning-rate groups: the engine's Trainer builds one parameter group; :class:`GroupedTrainer`
(a subclass here, the engine is unchanged) builds the model's ``parameter_groups`` instead. The
schedule scales every group by the same factor; ``metrics.jsonl``'s ``lr`` is the first group's
(the backbone's, or the head's when the backbone is frozen).

Feature caching (``feature-extract`` with ``cache_features``, the default): the frozen backbone
is a fixed function in eval mode, so the features of the training and validation images are
computed once (one pass, eval transforms, :func:`compute_features`) and kept in memory as a
``[N, D]`` tensor (N x D x 4 bytes: 60k Fashion-MNIST images x 1280 MobileNetV2 features = 307 MB).
The engine then trains the model on these tensors: ``Classifier.forward`` applied to ``[N, D]``
features runs the head only, so the Trainer, DDP, checkpoints and resume are unchanged and the
checkpoint holds the whole network. This is exactly the uncached training *without augmentation*
(tested: one step gives the same head). Honest limits: random augmentation is off in this mode
(every epoch sees the same features; the images go through the eval resize/centre crop), and under
torchrun every process computes the features of the whole set. ``--no-cache-features`` trains
through the frozen backbone with augmentation instead.
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
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from convision.config import (
    AugmentSection,
    BackboneSection,
    HoldOutSection,
    ScenesSection,
    Settings,
    SourceSection,
    TrainConfig,
    parse_class_weights,
    setting,
)
from convision.data.classification import (
    build_classification_dataset,
    classification_eval_transforms,
    classification_train_transforms,
)
from convision.data.images import to_image
from convision.engine.distributed import DistInfo
from convision.engine.trainer import Trainer, seed_everything
from convision.engine.trainer import evaluate as run_evaluation
from convision.errors import ConfigError, DataError
from convision.metrics.classification import ClassificationMetric
from convision.models import build_model
from convision.models.classification import (
    ARCHS,
    STRATEGIES,
    default_head_lr_mult,
    preprocessing,
)
from convision.nn.convolutionalize import convolutionalize
from convision.tasks import base
from convision.viz import plot_confusion_matrix, save_captioned_grid, save_heatmap

NAME = "classify"

# ---------------------------------------------------------------------------------------------- config


@dataclass
class TransferDataSection(AugmentSection, HoldOutSection, ScenesSection, SourceSection):
    """The data of a torchvision network with a new head (classification, localization): one-shape
    scenes, the whole input resized to ``image_size``."""

    num_classes: int = setting(
        6, "synthetic scenes: classes including background (so num_classes-1 shapes)", 3
    )
    scene_size: int = setting(64, "synthetic scenes: generated image side in pixels", 8)
    image_size: int = setting(
        0, "network input side; 0 = what the weights expect (224)", 0
    )


@dataclass
class TransferModelSection(BackboneSection):
    """A torchvision network (``backbone``, formerly ``arch``) and how it is trained."""

    backbone: str = setting("mobilenet_v2", " | ".join(ARCHS))
    strategy: str = setting("finetune", " | ".join(STRATEGIES))

    aliases = {"arch": "backbone"}


@dataclass
class TransferTrainSection(TrainConfig):
    """Fine-tuning defaults: a short cosine schedule at a small backbone lr, the head at ``head_lr_mult`` x."""

    epochs: int = setting(10, "training epochs", 1)
    batch_size: int = setting(
        32, "global batch size (split across processes under torchrun)", 1
    )
    lr: float = setting(
        0.001, "peak learning rate of the backbone (the head gets lr x head_lr_mult)"
    )
    weight_decay: float = setting(1e-4, "weight decay", 0)
    schedule: str = setting(
        "cosine", "learning-rate schedule: poly | cosine | constant"
    )
    head_lr_mult: float = setting(
        0.0,
        "head lr / backbone lr; 0 = auto: 10 (sgd and adamw; the seeds' 100 diverged in bench/fashion_mnist_transfer.py), 1 for scratch",
        0,
    )


@dataclass
class ClassifyDataConfig(TransferDataSection):
    data: str = setting(
        "synthetic",
        "'synthetic', an image folder (root/<class>/<image>), a .csv of path,label, or a Fashion-MNIST IDX folder",
    )
    val_data: str = setting(
        "",
        "validation folder or CSV (empty: root/val, the IDX test set, or a hold-out)",
    )
    color_jitter: float = setting(
        0.0, "brightness/contrast/saturation jitter strength (0 = off)", 0
    )
    format: str = setting("auto", "auto | folder | csv | idx | synthetic")
    fraction: float = setting(
        1.0,
        "keep this share of every training class (stratified, deterministic): 0.01, 0.1, 1",
        0,
    )
    max_objects: int = setting(
        1,
        "synthetic scenes: shapes per image (the label is the largest visible one)",
        1,
    )
    scale_min: float = setting(
        0.5, "random-resized-crop augmentation: smallest area share", 0.01
    )


@dataclass
class ClassifyModelConfig(TransferModelSection):
    cache_features: bool = setting(
        True,
        "feature-extract: compute backbone features once and train the head on them (no augmentation)",
    )


@dataclass
class ClassifyTrainConfig(TransferTrainSection):
    out: str = setting(
        "runs/classify", "output folder for checkpoints, metrics and pictures"
    )
    unfreeze_every: int = setting(
        0,
        "finetune: gradual unfreezing -- epoch 1 trains the head only, then one more backbone stage from the top every N epochs (0 = off)",
        0,
    )


@dataclass
class ClassifyConfig(Settings):
    data: ClassifyDataConfig = field(default_factory=ClassifyDataConfig)
    model: ClassifyModelConfig = field(default_factory=ClassifyModelConfig)
    train: ClassifyTrainConfig = field(default_factory=ClassifyTrainConfig)


# ---------------------------------------------------------------------------------------------- task


def classification_collate(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack(
        [
            x.as_subclass(torch.Tensor)
            if isinstance(x, torch.Tensor)
            else torch.as_tensor(x)
            for x, _ in batch
        ]
    )
    return images, torch.tensor([int(y) for _, y in batch], dtype=torch.int64)


class ClassificationTask:
    """Cross-entropy on ``model(x)``; accuracy (main), top-5, per-class P/R/F1, confusion matrix.

    ``x`` is a batch of images, or of cached features (``model(x)`` then runs the head only).
    """

    name = "classify"
    main_metric = "accuracy"

    def __init__(
        self,
        num_classes: int,
        class_weights: Sequence[float] | None = None,
        keep_predictions: bool = False,
    ) -> None:
        self.num_classes = int(num_classes)
        self.class_weights = list(class_weights) if class_weights else None
        self.keep_predictions = keep_predictions

    def collate(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return classification_collate(batch)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        x, y = batch
        logits = model(x.to(device, non_blocking=True))
        weight = (
            None
            if self.class_weights is None
            else torch.tensor(self.class_weights, device=logits.device)
        )
        return F.cross_entropy(
            logits.float(), y.to(device, non_blocking=True), weight=weight
        )

    def new_metric(self) -> ClassificationMetric:
        return ClassificationMetric(
            self.num_classes, keep_predictions=self.keep_predictions
        )

    @torch.no_grad()
    def eval_step(
        self,
        model: nn.Module,
        batch: Any,
        device: torch.device,
        metric: ClassificationMetric,
    ) -> None:
        x, y = batch
        metric.update(model(x.to(device, non_blocking=True)).float().cpu(), y)


class GroupedTrainer(Trainer):
    """The engine's Trainer with the model's backbone/head parameter groups and, with
    ``unfreeze_every`` > 0, gradual unfreezing: epoch ``e`` trains the head and the top
    ``(e - 1) // unfreeze_every`` backbone stages (:meth:`Classifier.freeze_stages`). The frozen set
    follows from the epoch number alone, so a resumed run continues where it stopped."""

    def __init__(
        self,
        *args: Any,
        head_lr_mult: float = 1.0,
        unfreeze_every: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.head_lr_mult = float(head_lr_mult)
        self.unfreeze_every = int(unfreeze_every)
        # under torchrun the frozen (gradient-less) stages change between epochs
        self.find_unused_parameters = self.unfreeze_every > 0

    def _train_epoch(
        self, epoch: int, model: nn.Module, *args: Any, **kwargs: Any
    ) -> tuple[float, int, float]:
        if self.unfreeze_every > 0:
            net = self.model
            total = len(net.stages())
            trainable = min(total, (epoch - 1) // self.unfreeze_every)
            if net.frozen_stages != total - trainable:
                net.freeze_stages(total - trainable)
                what = (
                    "the head only"
                    if trainable == 0
                    else f"the head and the top {trainable} of {total} backbone stages"
                )
                self.log(f"gradual unfreezing, epoch {epoch}: training {what}")
        return super()._train_epoch(epoch, model, *args, **kwargs)

    def _build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        cfg = self.cfg
        if not hasattr(model, "parameter_groups"):
            return super()._build_optimizer(model)
        groups = model.parameter_groups(cfg.lr, self.head_lr_mult)
        if not groups:
            raise ConfigError("model: no trainable parameters")
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


class FeatureDataset(Dataset):
    """Cached ``(features[D], label)`` pairs; ``classes`` as the image data set's."""

    def __init__(
        self, features: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]
    ) -> None:
        self.features, self.labels, self.classes = features, targets, list(classes)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.features[i], int(self.labels[i])


@torch.no_grad()
def compute_features(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features ``[N, D]`` (float32, CPU) and labels ``[N]`` of every sample, in order."""
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=classification_collate,
    )
    feats, labels = [], []
    for x, y in tqdm(
        loader, desc="caching features", disable=not progress, leave=False
    ):
        feats.append(model.features(x.to(device)).float().cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


# ---------------------------------------------------------------------------------------------- entry points


def resolve_settings(cfg: ClassifyConfig) -> dict[str, Any]:
    """Validate the settings and fill the automatic ones: image size, normalisation, head lr multiple."""
    cfg.check()
    m, d, t = cfg.model, cfg.data, cfg.train
    if m.strategy not in STRATEGIES:
        raise ConfigError(
            f"strategy: unknown {m.strategy!r} (expected {' | '.join(STRATEGIES)})"
        )
    weights = base.weights_name(m.weights)
    if m.strategy == "scratch" and weights is not None:
        raise ConfigError(
            f"weights: strategy 'scratch' trains from random initialisation; got {m.weights!r} (use --weights none)"
        )
    if m.strategy == "feature-extract" and weights is None:
        raise ConfigError(
            "weights: strategy 'feature-extract' needs pretrained weights (a frozen random backbone learns nothing)"
        )
    pre = preprocessing(m.backbone, weights)
    image_size = d.image_size or pre["crop_size"]
    unfreeze_every = getattr(
        t, "unfreeze_every", 0
    )  # localization shares these rules, without unfreezing
    if unfreeze_every and m.strategy != "finetune":
        raise ConfigError(
            f"unfreeze_every: gradual unfreezing is for strategy 'finetune', not {m.strategy!r}"
        )
    mult = t.head_lr_mult or default_head_lr_mult(t.optimizer, m.strategy)
    return {
        "weights": weights,
        "image_size": int(image_size),
        "mean": pre["mean"],
        "std": pre["std"],
        "head_lr_mult": mult,
    }


def build_datasets(
    cfg: ClassifyConfig,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    augment: bool = True,
):
    """(train, val) with the training (``augment``) / evaluation transforms; val may be empty."""
    d = cfg.data
    eval_tf = classification_eval_transforms(image_size, mean, std)
    train_tf = (
        classification_train_transforms(
            image_size,
            mean,
            std,
            scale_min=d.scale_min,
            hflip=d.hflip,
            color_jitter=d.color_jitter,
        )
        if augment
        else eval_tf
    )
    train_set = build_classification_dataset(d, "train", transforms=train_tf)
    val_set = build_classification_dataset(
        d, "val", transforms=eval_tf, classes=train_set.classes
    )
    if list(val_set.classes) != list(train_set.classes):
        raise DataError(
            f"{d.val_data or d.data}: training and validation splits disagree on the classes"
        )
    return train_set, val_set


def train(
    cfg: ClassifyConfig | None = None,
    *,
    progress: bool = True,
    validate_data: bool = True,
) -> dict[str, Any]:
    """Train a classifier as configured; works under ``torchrun``. Returns ``{"best", "last",
    "best_metric", "best_epoch", "history"}``."""
    cfg = cfg if cfg is not None else ClassifyConfig()
    s = resolve_settings(cfg)
    cfg.data.image_size = s["image_size"]  # stored resolved in the checkpoint
    cached = cfg.model.strategy == "feature-extract" and cfg.model.cache_features

    def prepare(dist: DistInfo) -> dict[str, Any]:
        train_set, val_set = build_datasets(
            cfg, s["image_size"], s["mean"], s["std"], augment=not cached
        )
        base.check_splits(
            train_set,
            val_set,
            cfg.data.data,
            validate=validate_data,
            progress=progress,
            is_main=dist.is_main,
        )
        classes = list(train_set.classes)
        weights = parse_class_weights(cfg.train.class_weights)
        if weights is not None and len(weights) != len(classes):
            raise ConfigError(
                f"class_weights: {len(weights)} values given for {len(classes)} classes"
            )
        seed_everything(cfg.train.seed)
        kwargs = {
            "arch": cfg.model.backbone,
            "num_classes": len(classes),
            "weights": s["weights"],
            "strategy": cfg.model.strategy,
        }
        model = build_model("classifier", **kwargs)
        workers = cfg.data.workers
        train_data: Dataset = train_set
        val_data: Dataset | None = val_set if len(val_set) else None
        if cached:

            def features(dataset: Dataset) -> FeatureDataset:
                feats, labels = compute_features(
                    model,
                    dataset,
                    batch_size=cfg.train.batch_size,
                    workers=workers,
                    device=dist.device,
                    progress=progress and dist.is_main,
                )
                return FeatureDataset(feats, labels, classes)

            train_data = features(train_set)
            val_data = features(val_set) if len(val_set) else None
            workers = 0  # tensors in memory
        meta = base.checkpoint_meta(
            NAME,
            "classifier",
            kwargs,
            classes,
            cfg,
            mean=s["mean"],
            std=s["std"],
            image_size=s["image_size"],
            head_lr_mult=s["head_lr_mult"],
            feature_cache=cached,
        )
        return {
            "trainer": GroupedTrainer,
            "task": ClassificationTask(len(classes), class_weights=weights),
            "model": model,
            "train_set": train_data,
            "val_set": val_data,
            "meta": meta,
            "workers": workers,
            "trainer_kwargs": {
                "head_lr_mult": s["head_lr_mult"],
                "unfreeze_every": cfg.train.unfreeze_every,
            },
        }

    return base.train_on_engine(cfg, prepare, progress=progress)


# this task's checkpoints only: another task's is a one-line CheckpointError
load = partial(base.load, task=NAME)


def on_load(model: nn.Module, ckpt: dict[str, Any]) -> None:
    """``model.image_size``: the network's input side."""
    data = (ckpt.get("config") or {}).get("data") or {}
    model.image_size = int(data.get("image_size") or ckpt.get("image_size") or 224)


def evaluate(
    model: nn.Module | str | os.PathLike,
    data: str | ClassifyDataConfig | None = None,
    *,
    split: str = "val",
    batch_size: int = 32,
    workers: int = 2,
    device: str | None = "auto",
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
    max_examples: int = 24,
) -> dict[str, Any]:
    """Accuracy, top-5, per-class P/R/F1 and the confusion matrix over a whole split (eval
    transforms). ``data`` defaults to what the model was trained on. With ``out_dir``, also writes
    ``confusion_matrix.png`` and ``misclassified.png`` (up to ``max_examples`` errors, most confident first)."""
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)
    if isinstance(data, ClassifyDataConfig):
        data_cfg = data
    else:
        data_cfg = base.trained_section(net, "data", ClassifyDataConfig)
        if data is not None:
            data_cfg.data, data_cfg.format, data_cfg.val_data = str(data), "auto", ""
    tf = classification_eval_transforms(
        net.image_size, net.normalization["mean"], net.normalization["std"]
    )
    dataset = build_classification_dataset(
        data_cfg, split, transforms=tf, classes=net.classes
    )
    if list(dataset.classes) != list(net.classes):
        raise DataError(
            f"{data_cfg.data}: the data set's classes ({', '.join(dataset.classes)}) are not the model's ({', '.join(net.classes)})"
        )
    if len(dataset) == 0:
        raise DataError(f"{data_cfg.data}: the {split} split holds no images")
    task = ClassificationTask(len(net.classes), keep_predictions=True)
    captured: dict[str, ClassificationMetric] = {}
    new_metric = task.new_metric

    def keep() -> ClassificationMetric:
        captured["m"] = new_metric()
        return captured["m"]

    task.new_metric = keep  # type: ignore[method-assign]
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
    metrics["num_images"] = len(dataset)
    if out_dir is not None:
        out = base.output_folder(out_dir)
        plot_confusion_matrix(
            np.asarray(metrics["confusion_matrix"]),
            net.classes,
            out / "confusion_matrix.png",
        )
        m = captured["m"]
        wrong = [i for i, (p, t) in enumerate(zip(m.predictions, m.targets)) if p != t]
        wrong.sort(key=lambda i: -m.confidences[i])
        wrong = wrong[:max_examples]
        images = [dataset.load(i) for i in wrong]
        captions = [
            f"true {net.classes[m.targets[i]]}\npred {net.classes[m.predictions[i]]} ({m.confidences[i]:.2f})"
            for i in wrong
        ]
        save_captioned_grid(
            images,
            captions,
            out / "misclassified.png",
            title=f"{len(wrong)} of {sum(p != t for p, t in zip(m.predictions, m.targets))} misclassified",
        )
        metrics["pictures"] = [
            str(out / "confusion_matrix.png"),
            str(out / "misclassified.png"),
        ]
    return metrics


@torch.no_grad()
def predict(
    model: nn.Module | str | os.PathLike,
    images: Any,
    *,
    topk: int = 5,
    device: str | None = "auto",
    batch_size: int = 32,
) -> list[list[tuple[str, float]]]:
    """For each image (paths, folder, glob or HxW[x3] uint8 arrays): its ``topk`` (class, probability)."""
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)
    tf = classification_eval_transforms(
        net.image_size, net.normalization["mean"], net.normalization["std"]
    )
    items = base.read_inputs(images)
    k = max(1, min(int(topk), len(net.classes)))
    out: list[list[tuple[str, float]]] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        x = torch.stack([tf(to_image(a)) for _, a in chunk]).to(dev)
        probs = net(x).float().softmax(1).cpu()
        top = probs.topk(k, dim=1)
        for vals, idx in zip(top.values, top.indices):
            out.append([(net.classes[int(i)], float(v)) for v, i in zip(vals, idx)])
    return out


def predict_to_folder(
    model: nn.Module | str | os.PathLike,
    inputs: Any,
    out: str | os.PathLike | None,
    *,
    topk: int = 5,
    device: str | None = "auto",
    strict: bool = False,
    progress: bool = True,
) -> base.FolderResults:
    """Classify every input image; ``out/predictions.json`` maps each path to its top-k
    ``[[class, probability], ...]`` (``out`` None: nothing written)."""
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)

    def predict_one(
        image: np.ndarray, name: str
    ) -> tuple[list[tuple[str, float]], dict[str, Any]]:
        return predict(net, image, topk=topk, device=dev)[0], {}

    return base.predict_to_folder(
        inputs, out, predict_one, strict=strict, progress=progress
    )


@torch.no_grad()
def heatmap(
    model: nn.Module | str | os.PathLike,
    image: Any,
    *,
    class_name: str | None = None,
    out_png: str | os.PathLike | None = None,
    device: str | None = "auto",
    scale: float = 1.0,
) -> dict[str, Any]:
    """Class-probability map over a large image from ONE forward pass of the convolutionalized
    classifier (VGG/AlexNet/MobileNetV2), and the box of the best window.

    Cell ``(i, j)`` is the window ``[j*stride, i*stride, +image_size, +image_size]`` of the
    (``scale``-resized) image. ``class_name`` None picks the class with the highest probability
    anywhere. Returns ``{"class", "probability", "box" (x1, y1, x2, y2 in original pixels),
    "map" (h x w probabilities), "stride", "window"}`` and writes ``out_png`` if given.
    """
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)
    name, array = base.read_inputs(image)[0]
    img = to_image(array)
    h0, w0 = img.shape[-2:]
    if scale <= 0:
        raise ConfigError(f"scale: must be positive, got {scale}")
    if scale != 1.0:
        img = TF.resize(
            img, [max(1, round(h0 * scale)), max(1, round(w0 * scale))], antialias=True
        )
    size = int(net.image_size)
    h, w = img.shape[-2:]
    if h < size or w < size:
        raise DataError(
            f"{name}: image is {w}x{h} (after --scale {scale}) but the classifier's window is {size}x{size}; use a larger image or --scale"
        )
    try:
        conv = convolutionalize(net, input_size=size).eval()
    except ValueError as e:
        raise ConfigError(f"heatmap: {e}") from None
    mean = torch.tensor(net.normalization["mean"]).view(3, 1, 1)
    std = torch.tensor(net.normalization["std"]).view(3, 1, 1)
    x = ((img.as_subclass(torch.Tensor).float() / 255 - mean) / std)[None].to(dev)
    probs = conv(x).float().softmax(1)[0].cpu()  # [K, h, w]
    if class_name is None:
        c = int(probs.flatten(1).max(1).values.argmax())
    elif class_name in net.classes:
        c = net.classes.index(class_name)
    else:
        raise ConfigError(
            f"class: {class_name!r} is not one of the model's classes ({', '.join(net.classes)})"
        )
    pmap = probs[c]
    flat = int(pmap.argmax())
    i, j = divmod(flat, pmap.shape[1])
    x1, y1, x2, y2 = conv.window(i, j)
    box = tuple(float(v) / scale for v in (x1, y1, x2, y2))
    result = {
        "class": net.classes[c],
        "probability": float(pmap[i, j]),
        "box": box,
        "cell": (i, j),
        "map": pmap.numpy(),
        "stride": conv.stride / scale,
        "window": size / scale,
    }
    if out_png is not None:
        save_heatmap(
            array,
            pmap.numpy(),
            box,
            out_png,
            stride=conv.stride / scale,
            window=size / scale,
            title=f"{net.classes[c]}: best window p={float(pmap[i, j]):.2f}",
        )
    return result
