"""Object detection as a task for the shared engine: Faster R-CNN, Fast R-CNN, YOLOv1 (and R-CNN).

    import convision
    run = convision.train(convision.DetectConfig())  # Faster R-CNN, ImageNet MobileNetV2, built-in scenes
    model = convision.load(run["best"])
    metrics = convision.evaluate(model)          # VOC mAP@0.5 (area and 11-point), COCO mAP, per class
    preds = convision.predict(model, ["a.jpg"])  # [{"boxes", "labels", "classes", "scores"}], original pixels

Models (``--model``): ``faster_rcnn`` (Ren et al. 2015), ``fast_rcnn`` (Girshick 2015; selective-search
proposals computed once per image and cached in ``<out>/proposals`` or ``--proposal-cache``),
``yolov1`` (Redmon et al. 2016) are trained by the engine (SGD / AdamW, schedule, checkpoints,
resume, torchrun); ``rcnn`` (Girshick et al. 2014) has no end-to-end gradient training (linear
SVMs + ridge box regressors on CNN features) and is fitted in one pass, then saved in the same
checkpoint format.

Images are resized so that their shorter side is ``min_size`` (longer side at most ``max_size``;
the paper's 600 / 1000; the built-in scenes keep their own size), predictions are mapped back to
the original pixels before any metric or output. Class ids are the user's ``0..K-1``; the
background class lives inside the models only (see :mod:`convision.models.detection`).

Checkpoint extras (besides the engine's): ``"task": "detect"``, ``"model": {"name", "kwargs"}``,
``"min_size"``, ``"max_size"``, ``"proposals"`` (selective-search settings, for the models that use them).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.utils import draw_bounding_boxes
from tqdm import tqdm

import convision
from convision.config import (
    AugmentSection,
    BackboneSection,
    HoldOutSection,
    ModelNameSection,
    ScenesSection,
    Settings,
    SourceSection,
    TrainConfig,
    setting,
)
from convision.data.detection import (
    build_detection_dataset,
    detection_collate,
    detection_eval_transforms,
    detection_train_transforms,
)
from convision.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from convision.engine import distributed as dist_utils
from convision.engine.checkpoint import FORMAT, save_checkpoint
from convision.engine.distributed import DistInfo
from convision.engine.trainer import eval_loader, run_metric, seed_everything
from convision.engine.trainer import evaluate as run_evaluation
from convision.errors import ConfigError, DataError
from convision.metrics.detection import (
    DetectionMetric,
    coco_evaluate,
    masks_to_rles,
    plot_pr_curves,
)
from convision.models import build_model
from convision.models.detection.mask_rcnn import paste_masks
from convision.models.detection.proposals import (
    ProposalCache,
    proposals_for,
    selective_search,
)
from convision.models.detection.tiling import detect_tiled
from convision.tasks import base

NAME = "detect"
DETECTORS = ("faster_rcnn", "mask_rcnn", "fast_rcnn", "yolov1", "rcnn")
MASK_MODELS = ("mask_rcnn",)
USES_PROPOSALS = ("fast_rcnn", "rcnn")


@dataclass
class DetectDataConfig(AugmentSection, HoldOutSection, ScenesSection, SourceSection):
    data: str = setting(
        "synthetic", "'synthetic', a Pascal VOC root, a COCO .json or a YOLO folder"
    )
    val_data: str = setting(
        "",
        "validation set (COCO: a second .json; empty: the format's val split or a hold-out)",
    )
    min_size: int = setting(
        0,
        "shorter image side fed to the network (0 = scene_size for synthetic, 600 as the paper for files)",
        0,
    )
    max_size: int = setting(1000, "longer image side at most (the paper's 1000)", 1)
    scale_min: float = setting(0.8, "random rescale: smallest factor of min_size", 0.01)
    scale_max: float = setting(1.25, "random rescale: largest factor of min_size", 0.01)
    crop: bool = setting(False, "random IoU crops (boxes clipped or dropped)")


@dataclass
class DetectModelConfig(BackboneSection, ModelNameSection):
    model: str = setting("faster_rcnn", " | ".join(DETECTORS))
    backbone: str = setting(
        "mobilenet_v2",
        "mobilenet_v2 | vgg16 | resnet18 | resnet50 (yolov1 also: darknet)",
    )
    pooling: str = setting(
        "roi_pool",
        "RoI head pooling (R-CNN family): roi_pool (paper) | roi_align | spp (mask_rcnn: roi_align in place of roi_pool, as its paper)",
    )
    anchor_sizes: str = setting(
        "auto",
        "Faster R-CNN anchor sides in px, comma-separated | auto (octaves covering the training boxes' sizes at min_size, printed; built-in scenes: 16,32,64,128 x min_size/128) | paper (128,256,512 x min_size/600)",
    )
    head_dim: int = setting(
        1024,
        "R-CNN family: width of the two fc layers of the RoI head (non-VGG backbones)",
        1,
    )
    roi_batch_size: int = setting(
        128,
        "Faster/Fast R-CNN: RoIs sampled per training image (the paper's 128, 25 %% foreground)",
        1,
    )
    rpn_post_nms_test: int = setting(
        300, "Faster R-CNN: proposals kept after NMS at test time (the paper's 300)", 1
    )
    rpn_pre_nms_test: int = setting(
        6000,
        "Faster R-CNN: best-scoring anchors kept before the proposal NMS at test time",
        1,
    )
    rpn_pre_nms_train: int = setting(
        12000,
        "Faster R-CNN: best-scoring anchors kept before the proposal NMS in training",
        1,
    )
    rpn_post_nms_train: int = setting(
        2000, "Faster R-CNN: proposals kept after NMS in training", 1
    )
    nms_thresh: float = setting(
        0.0,
        "test-time per-class NMS IoU (0 = the model's default: R-CNN family 0.3 as the papers, YOLOv1 0.5)",
    )
    score_thresh: float = setting(
        -1.0,
        "test-time score threshold (-1 = the model's default: 0.05 R-CNN family, 0.2 YOLOv1)",
    )
    detections_per_image: int = setting(100, "test-time detections kept per image", 1)
    mask_dim: int = setting(
        256,
        "mask_rcnn: channels of the mask head's four 3x3 convolutions (the paper's 256)",
        1,
    )
    freeze: str = setting(
        "auto",
        "backbone layers kept fixed: auto (pretrained: the early layers, as the papers) | early | none",
    )
    freeze_bn: str = setting(
        "auto",
        "batch norms of the conv body: auto (frozen when pretrained) | yes | no (trained with batch statistics)",
    )
    body_tail: str = setting(
        "none",
        "Faster / Fast R-CNN on mobilenet_v2: none (features[0:14], stride 16, 96 channels; 6x the mAP of 'dilated' on real aerial photographs, BENCHMARKS.md) | dilated (features[0:18], the stride-32 blocks dilated, 320 channels)",
    )
    image_size: int = setting(
        0, "yolov1 input side (0 = 448 for darknet as the paper, 224 otherwise)", 0
    )
    proposal_mode: str = setting(
        "fast", "selective search (fast_rcnn, rcnn): fast | quality"
    )
    max_proposals: int = setting(
        2000, "selective search: proposals kept per image (the paper's ~2000)", 1
    )
    proposal_cache: str = setting(
        "", "folder of cached proposals (empty: <out>/proposals)"
    )
    warp_size: int = setting(
        224, "rcnn: side each proposal is warped to (the paper: 227 for AlexNet)", 16
    )


@dataclass
class DetectTrainConfig(TrainConfig):
    epochs: int = setting(12, "training epochs", 1)
    batch_size: int = setting(
        4, "global batch size (split across processes under torchrun)", 1
    )
    optimizer: str = setting("sgd", "sgd (with momentum; the papers') | adamw")
    lr: float = setting(0.01, "peak learning rate")
    weight_decay: float = setting(1e-4, "weight decay (the papers: 5e-4 for VGG16)", 0)
    schedule: str = setting(
        "cosine", "learning-rate schedule: poly | cosine | constant"
    )
    warmup_epochs: float = setting(0.5, "linear warm-up length in epochs", 0)
    grad_clip: float = setting(10.0, "clip the gradient norm to this (0 = off)", 0)
    out: str = setting(
        "runs/detect", "output folder for checkpoints, metrics and pictures"
    )


@dataclass
class DetectConfig(Settings):
    data: DetectDataConfig = field(default_factory=DetectDataConfig)
    model: DetectModelConfig = field(default_factory=DetectModelConfig)
    train: DetectTrainConfig = field(default_factory=DetectTrainConfig)

    ordered = (("scale_min", "scale_max"),)


# ---------------------------------------------------------------------------------------------- settings


def resolve_min_size(d: DetectDataConfig) -> int:
    if d.min_size < 0:
        raise ConfigError(f"min_size: must be >= 0, got {d.min_size}")
    if d.max_size < 1:
        raise ConfigError(f"max_size: must be positive, got {d.max_size}")
    if d.min_size:
        return int(d.min_size)
    return int(d.scene_size) if d.data == "synthetic" else 600


def resolve_anchor_sizes(
    text: str, min_size: int, box_sides: np.ndarray | None = None
) -> list[int]:
    """Anchor sides in network pixels. ``paper``: Ren et al.'s 128/256/512 for a 600-px shorter side,
    scaled to ``min_size``. ``auto``: :func:`suggest_anchor_sizes` of ``box_sides`` (the training
    boxes' ``sqrt(w h)`` at ``min_size``); without them (the built-in scenes, which hold objects from
    a few pixels to most of the image) four octaves 16..128 scaled to ``min_size / 128``."""
    key = text.strip().lower()
    if key == "paper":
        return [max(4, round(s * min_size / 600)) for s in (128, 256, 512)]
    if key == "auto":
        if box_sides is not None and len(box_sides):
            return suggest_anchor_sizes(box_sides)
        return [max(4, round(s * min_size / 128)) for s in (16, 32, 64, 128)]
    try:
        sizes = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"anchor_sizes: expected comma-separated pixel sizes or 'auto', got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"anchor_sizes: expected positive pixel sizes, got {text!r}")
    return sizes


def suggest_anchor_sizes(box_sides: np.ndarray, max_anchors: int = 5) -> list[int]:
    """Octave-spaced anchor sides (``a, 2a, 4a, ...``) from the 5th percentile of the box sides up to
    past the 95th. A box of side ``s`` and a concentric square anchor of side ``a`` overlap with IoU
    ``min(s, a)^2 / max(s, a)^2``, so octave spacing gives every box in the range an anchor with
    IoU >= 0.5 before any offset (the RPN's positives need 0.7, or being a box's best anchor)."""
    sides = np.asarray(box_sides, dtype=np.float64)
    lo, hi = (float(v) for v in np.percentile(sides, [5, 95]))
    sizes = [max(4, int(round(lo)))]
    while sizes[-1] * math.sqrt(2) < hi and len(sizes) < max_anchors:
        sizes.append(sizes[-1] * 2)
    return sizes


def box_sides_at(dataset: Any, min_size: int, max_size: int) -> np.ndarray:
    """``sqrt(w h)`` of every box of a file data set after the evaluation resize (shorter side
    ``min_size``, longer at most ``max_size``); empty for data without records (the built-in scenes)."""
    records = getattr(dataset, "records", None)
    if not records:
        return np.zeros(0)
    out = []
    for r in records:
        b = np.asarray(r.boxes, dtype=np.float64).reshape(-1, 4)
        if len(b):
            scale = min(
                min_size / min(r.width, r.height), max_size / max(r.width, r.height)
            )
            out.append(np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) * scale)
    return np.concatenate(out) if out else np.zeros(0)


def describe_anchors(sides: np.ndarray, anchors: Sequence[int], min_size: int) -> str:
    """One line: the box-size statistics and the anchors chosen."""
    if not len(sides):
        return f"anchor sizes {','.join(map(str, anchors))} px"
    p = np.percentile(sides, [5, 50, 95])
    return (
        f"training boxes at min_size {min_size}: {len(sides)} boxes, side sqrt(w*h) p5 {p[0]:.0f} / median {p[1]:.0f} / "
        f"p95 {p[2]:.0f} px -> anchor sizes {','.join(map(str, anchors))} px"
    )


def _flag(value: str, name: str, choices: Sequence[str]) -> str:
    v = str(value).strip().lower()
    if v not in choices:
        raise ConfigError(f"{name}: expected {' | '.join(choices)}, got {value!r}")
    return v


def model_kwargs(
    cfg: DetectConfig,
    num_classes: int,
    min_size: int,
    box_sides: np.ndarray | None = None,
) -> dict[str, Any]:
    """The builder's keyword arguments (only those it accepts), JSON-serialisable for the checkpoint."""
    m = cfg.model
    if m.model not in DETECTORS:
        raise ConfigError(
            f"model: unknown detector {m.model!r} (expected {' | '.join(DETECTORS)})"
        )
    weights = base.weights_name(m.weights)
    counts = (
        "head_dim",
        "roi_batch_size",
        "rpn_post_nms_test",
        "rpn_pre_nms_test",
        "rpn_pre_nms_train",
        "rpn_post_nms_train",
        "detections_per_image",
    )
    for key in counts:
        if getattr(m, key) < 1:
            raise ConfigError(f"{key}: must be positive, got {getattr(m, key)}")
    if not 0.0 <= m.nms_thresh <= 1.0:
        raise ConfigError(
            f"nms_thresh: expected an IoU in (0, 1] (0 = the model's default), got {m.nms_thresh}"
        )
    if not (m.score_thresh == -1.0 or 0.0 <= m.score_thresh < 1.0):
        raise ConfigError(
            f"score_thresh: expected a value in [0, 1) (-1 = the model's default), got {m.score_thresh}"
        )
    freeze = _flag(m.freeze, "freeze", ("auto", "early", "none"))
    freeze_bn = _flag(m.freeze_bn, "freeze_bn", ("auto", "yes", "no"))
    wanted: dict[str, Any] = {
        "num_classes": num_classes,
        "backbone": m.backbone,
        "weights": weights,
        "pooling": m.pooling,
        **{k: getattr(m, k) for k in counts},
    }
    if m.nms_thresh > 0:
        wanted["nms_thresh" if m.model != "yolov1" else "nms_threshold"] = float(
            m.nms_thresh
        )
    if m.score_thresh >= 0:
        wanted["score_thresh" if m.model != "yolov1" else "score_threshold"] = float(
            m.score_thresh
        )
    if m.model == "mask_rcnn" and m.pooling == "roi_pool":
        wanted["pooling"] = "roi_align"  # He et al. 2017: RoIAlign for the box head too
    if m.model in ("faster_rcnn", "fast_rcnn", "mask_rcnn"):
        # explicit, so that the checkpoint rebuilds the same modules without the pretrained weights
        wanted["freeze_bn"] = (
            weights is not None if freeze_bn == "auto" else freeze_bn == "yes"
        )
        wanted["freeze_early"] = freeze != "none"
        wanted["dilated_tail"] = (
            _flag(m.body_tail, "body_tail", ("dilated", "none")) == "dilated"
        )
    if m.model in ("faster_rcnn", "mask_rcnn"):
        wanted["anchor_sizes"] = resolve_anchor_sizes(
            m.anchor_sizes, min_size, box_sides
        )
        wanted["rpn_pre_nms_train"], wanted["rpn_post_nms_train"] = (
            m.rpn_pre_nms_train,
            m.rpn_post_nms_train,
        )
    if m.model == "rcnn":
        if m.warp_size < 16:
            raise ConfigError(f"warp_size: must be at least 16, got {m.warp_size}")
        wanted["warp_size"] = int(m.warp_size)
        wanted["context_padding"] = round(
            16 * m.warp_size / 224
        )  # the paper's 16 px at 224 (227), scaled
        # proposal_mode / max_proposals reach R-CNN through proposal_settings() (the cached search), not the builder
    if m.model == "yolov1":
        if m.image_size < 0:
            raise ConfigError(f"image_size: must be >= 0, got {m.image_size}")
        wanted["image_size"] = m.image_size or (448 if m.backbone == "darknet" else 224)
        wanted.pop("pooling")
    # mask_rcnn takes faster_rcnn's keyword arguments and its own mask_dim
    if m.model == "mask_rcnn":
        return {
            **base.builder_kwargs("faster_rcnn", wanted, m),
            "mask_dim": int(m.mask_dim),
        }
    wanted["mask_dim"] = m.mask_dim  # a ConfigError below if changed for another model
    return base.builder_kwargs(m.model, wanted, m)


def proposal_settings(cfg: DetectConfig) -> dict[str, Any]:
    m = cfg.model
    if m.proposal_mode not in ("fast", "quality"):
        raise ConfigError(
            f"proposal_mode: expected fast | quality, got {m.proposal_mode!r}"
        )
    if m.max_proposals < 1:
        raise ConfigError(f"max_proposals: must be positive, got {m.max_proposals}")
    return {"mode": m.proposal_mode, "max_proposals": int(m.max_proposals)}


# ---------------------------------------------------------------------------------------------- data


def build_datasets(cfg: DetectConfig, min_size: int, *, augment: bool = True):
    """(train, val) detection data sets with the training / evaluation transforms; val may be empty."""
    d = cfg.data
    if not 0 < d.scale_min <= d.scale_max:
        raise ConfigError(
            f"scale_min/scale_max: need 0 < scale_min <= scale_max, got {d.scale_min}, {d.scale_max}"
        )
    eval_tf = detection_eval_transforms(min_size, d.max_size)
    train_tf = (
        detection_train_transforms(
            min_size,
            d.max_size,
            hflip=d.hflip,
            scale_range=(d.scale_min, d.scale_max),
            crop=d.crop,
            color_jitter=d.color_jitter,
            masks=cfg.model.model in MASK_MODELS,
        )
        if augment
        else eval_tf
    )
    train_set = split_dataset(cfg, "train", train_tf)
    val_set = split_dataset(cfg, "val", eval_tf, classes=list(train_set.classes))
    return train_set, val_set


def split_dataset(
    cfg: DetectConfig, split: str, transforms: Any, classes: Sequence[str] | None = None
):
    """One split (``train`` / ``val``) of the configured detection data, with ``transforms``."""
    d = cfg.data
    return build_detection_dataset(
        d.data,
        split,
        transforms=transforms,
        classes=classes,
        val_data=d.val_data,
        val_fraction=d.val_fraction,
        num_images=d.num_train if split == "train" else d.num_val,
        image_size=d.scene_size,
        num_classes=d.num_classes,
        seed=d.data_seed,
        masks=cfg.model.model in MASK_MODELS,
    )


class WithProposals(Dataset):
    """A detection data set whose targets also carry ``"proposals"`` (cached selective search on the
    original image), transformed together with the ground truth by the same random transform: the
    proposals ride along as extra boxes labelled -1, so flips, rescales and crops move both alike."""

    def __init__(self, dataset: Any, proposals: Sequence[torch.Tensor]) -> None:
        if len(proposals) != len(dataset):
            raise ValueError("one proposal tensor per image expected")
        self.dataset, self.proposals = dataset, list(proposals)
        self.classes = dataset.classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        array, target = self.dataset.raw(i)
        props = torch.as_tensor(self.proposals[i], dtype=torch.float32).reshape(-1, 4)
        n = len(target["boxes"])
        h, w = array.shape[:2]
        image = tv_tensors.Image(
            torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        )
        boxes = tv_tensors.BoundingBoxes(
            torch.cat(
                [
                    torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(
                        -1, 4
                    ),
                    props,
                ]
            ),
            format="XYXY",
            canvas_size=(h, w),
        )
        labels = torch.cat(
            [
                torch.as_tensor(target["labels"], dtype=torch.int64).reshape(-1),
                torch.full((len(props),), -1, dtype=torch.int64),
            ]
        )
        difficult = torch.cat(
            [
                torch.as_tensor(
                    target.get("difficult", torch.zeros(n, dtype=torch.bool))
                )
                .reshape(-1)
                .bool(),
                torch.zeros(len(props), dtype=torch.bool),
            ]
        )
        sample = {"boxes": boxes, "labels": labels, "difficult": difficult}
        tf = getattr(self.dataset, "transforms", None)
        if tf is not None:
            image, sample = tf(image, sample)
        else:
            image = image.float() / 255
        is_gt = sample["labels"] >= 0
        out = {
            "boxes": sample["boxes"].as_subclass(torch.Tensor)[is_gt],
            "labels": sample["labels"][is_gt],
            "difficult": sample["difficult"][is_gt],
            "proposals": sample["boxes"].as_subclass(torch.Tensor)[~is_gt],
            "image_id": target.get("image_id", i),
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
        }
        return image, out


class _RawImages:
    """``(key, original image)`` pairs read one at a time (a sized iterable, for the progress bar)."""

    def __init__(self, dataset: Any, keys: list[str]) -> None:
        self.dataset, self.keys = dataset, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self):
        for i, k in enumerate(self.keys):
            yield k, self.dataset.raw(i)[0]


def compute_proposals(
    dataset: Any,
    settings: dict[str, Any],
    cache_dir: str | os.PathLike,
    *,
    progress: bool = True,
) -> list[torch.Tensor]:
    """Selective-search proposals of every image of ``dataset`` (original pixels), computed once and
    cached in ``cache_dir`` (keyed by the image's bytes and the settings, so nothing stale is reused)."""
    cache = ProposalCache(
        cache_dir, mode=settings["mode"], max_proposals=settings["max_proposals"]
    )
    keys = [f"{i}:{dataset.name(i)}" for i in range(len(dataset))]
    found = proposals_for(_RawImages(dataset, keys), cache, progress=progress)
    return [
        torch.as_tensor(np.asarray(found[k]), dtype=torch.float32).reshape(-1, 4)
        for k in keys
    ]


# ---------------------------------------------------------------------------------------------- task


def _to_device(
    targets: Sequence[dict[str, Any]], device: torch.device
) -> list[dict[str, Any]]:
    return [
        {
            k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
            for k, v in t.items()
        }
        for t in targets
    ]


def _scale_boxes(
    boxes: torch.Tensor, from_hw: Sequence[int], to_hw: Sequence[int]
) -> torch.Tensor:
    sy, sx = float(to_hw[0]) / float(from_hw[0]), float(to_hw[1]) / float(from_hw[1])
    return boxes * torch.tensor(
        [sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device
    )


class DetectionTask:
    """Sum of the model's losses; metric: VOC mAP@0.5 on boxes mapped back to the original pixels
    (so that with ``keep`` the COCO size buckets are those of the original images)."""

    name = "detect"
    main_metric = "mAP"

    def __init__(
        self,
        classes: Sequence[str],
        uses_proposals: bool = False,
        keep: bool = False,
        masks: bool = False,
    ) -> None:
        self.classes = list(classes)
        self.uses_proposals = bool(uses_proposals)
        self.keep = bool(keep)
        self.masks = bool(masks)

    def collate(self, batch: list) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
        return detection_collate(batch)

    def _call(
        self,
        model: nn.Module,
        images: list[torch.Tensor],
        targets: list[dict[str, Any]] | None,
        proposals: list[torch.Tensor] | None,
    ) -> Any:
        if self.uses_proposals:
            return model(images, targets=targets, proposals=proposals)
        return model(images, targets)

    def losses(
        self, model: nn.Module, batch: Any, device: torch.device
    ) -> dict[str, torch.Tensor]:
        images, targets = batch
        images = [im.to(device, non_blocking=True) for im in images]
        targets = _to_device(targets, device)
        proposals = [t["proposals"] for t in targets] if self.uses_proposals else None
        keys = ("boxes", "labels", "masks") if self.masks else ("boxes", "labels")
        plain = [{k: t[k] for k in keys} for t in targets]
        return self._call(model, images, plain, proposals)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        losses = self.losses(model, batch, device)
        return sum(v.float() for v in losses.values())

    def new_metric(self) -> "DetectionRecorder":
        return DetectionRecorder(self.classes, keep=self.keep)

    @torch.no_grad()
    def eval_step(
        self,
        model: nn.Module,
        batch: Any,
        device: torch.device,
        metric: "DetectionRecorder",
    ) -> None:
        images, targets = batch
        dev_images = [im.to(device, non_blocking=True) for im in images]
        proposals = (
            [t["proposals"].to(device) for t in targets]
            if self.uses_proposals
            else None
        )
        preds = self._call(model, dev_images, None, proposals)
        out_preds, out_targets = [], []
        for im, p, t in zip(images, preds, targets):
            size = im.shape[-2:]
            orig = [int(v) for v in t["orig_size"]]
            out_preds.append(
                {
                    "boxes": _scale_boxes(p["boxes"].float().cpu(), size, orig),
                    "labels": p["labels"].cpu(),
                    "scores": p["scores"].float().cpu(),
                }
            )
            if self.masks and self.keep:  # mask AP: masks pasted in the original pixels
                out_preds[-1]["rles"] = masks_to_rles(
                    paste_masks(
                        p["mask_probs"].float().cpu(),
                        out_preds[-1]["boxes"],
                        orig,
                        getattr(model, "mask_thresh", 0.5),
                    )
                )
            out_targets.append(
                {
                    "boxes": _scale_boxes(t["boxes"].float(), size, orig),
                    "labels": t["labels"],
                    "difficult": t.get(
                        "difficult", torch.zeros(len(t["labels"]), dtype=torch.bool)
                    ),
                    "orig_size": t["orig_size"],
                    "image_id": t.get("image_id", 0),
                }
            )
            if self.masks and self.keep:
                out_targets[-1]["rles"] = masks_to_rles(t["orig_masks"])
        metric.update(out_preds, out_targets)


class DetectionRecorder:
    """VOC mAP (:class:`convision.metrics.detection.DetectionMetric`); with ``keep`` it also keeps
    every prediction and target so that COCO's evaluation and PR curves can follow."""

    def __init__(self, classes: Sequence[str], keep: bool = False) -> None:
        self.voc = DetectionMetric(list(classes))
        self.keep = keep
        self.preds: list[dict[str, Any]] = []
        self.targets: list[dict[str, Any]] = []

    def update(
        self, preds: list[dict[str, Any]], targets: list[dict[str, Any]]
    ) -> None:
        self.voc.update(preds, targets)
        if self.keep:
            self.preds.extend(preds)
            self.targets.extend(targets)

    def reduce_(self) -> None:
        self.voc.reduce_()
        if self.keep and dist_utils.rank_world()[1] > 1:
            gathered = dist_utils.all_gather_objects((self.preds, self.targets))
            self.preds = [p for g in gathered for p in g[0]]
            self.targets = [t for g in gathered for t in g[1]]

    def compute(self) -> dict[str, Any]:
        return self.voc.compute()


# ---------------------------------------------------------------------------------------------- entry points


def _meta(
    cfg: DetectConfig,
    name: str,
    kwargs: dict[str, Any],
    classes: list[str],
    min_size: int,
) -> dict[str, Any]:
    return base.checkpoint_meta(
        NAME,
        name,
        kwargs,
        classes,
        cfg,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        min_size=int(min_size),
        max_size=int(cfg.data.max_size),
        proposals=proposal_settings(cfg) if cfg.model.model in USES_PROPOSALS else {},
    )


def train(
    cfg: DetectConfig | None = None,
    *,
    progress: bool = True,
    validate_data: bool = True,
) -> dict[str, Any]:
    """Train a detector as configured; works under ``torchrun`` (not R-CNN). Returns ``{"best",
    "last", "best_metric", "best_epoch", "history"}``."""
    cfg = cfg if cfg is not None else DetectConfig()
    cfg.check()
    min_size = resolve_min_size(cfg.data)
    name = cfg.model.model
    if name not in DETECTORS:
        raise ConfigError(
            f"model: unknown detector {name!r} (expected {' | '.join(DETECTORS)})"
        )
    if name == "rcnn":
        return _train_rcnn(
            cfg, min_size, progress=progress, validate_data=validate_data
        )

    def prepare(dist: DistInfo) -> dict[str, Any]:
        train_set, val_set = build_datasets(cfg, min_size)
        base.check_splits(
            train_set,
            val_set,
            cfg.data.data,
            validate=validate_data,
            progress=progress,
            is_main=dist.is_main,
        )
        classes = list(train_set.classes)
        if not classes:
            raise DataError(f"{cfg.data.data}: no classes")
        if name in USES_PROPOSALS:
            settings = proposal_settings(cfg)
            cache = cfg.model.proposal_cache or str(Path(cfg.train.out) / "proposals")
            if dist.world_size > 1:  # rank 0 fills the cache, the others then read it
                if dist.is_main:
                    compute_proposals(train_set, settings, cache, progress=progress)
                    if len(val_set):
                        compute_proposals(val_set, settings, cache, progress=progress)
                dist_utils.barrier()
            train_set = WithProposals(
                train_set,
                compute_proposals(
                    train_set, settings, cache, progress=progress and dist.is_main
                ),
            )
            if len(val_set):
                val_set = WithProposals(
                    val_set,
                    compute_proposals(
                        val_set, settings, cache, progress=progress and dist.is_main
                    ),
                )
        seed_everything(cfg.train.seed)
        sides = box_sides_at(train_set, min_size, cfg.data.max_size)
        kwargs = model_kwargs(cfg, len(classes), min_size, sides)
        if name in ("faster_rcnn", "mask_rcnn") and progress and dist.is_main:
            print(
                describe_anchors(sides, kwargs["anchor_sizes"], min_size),
                file=sys.stderr,
            )
        return {
            "task": DetectionTask(
                classes,
                uses_proposals=name in USES_PROPOSALS,
                masks=name in MASK_MODELS,
            ),
            "model": build_model(name, **kwargs),
            "train_set": train_set,
            "val_set": val_set if len(val_set) else None,
            "meta": _meta(cfg, name, kwargs, classes, min_size),
            "workers": cfg.data.workers,
        }

    return base.train_on_engine(cfg, prepare, progress=progress)


def _train_rcnn(
    cfg: DetectConfig, min_size: int, *, progress: bool, validate_data: bool
) -> dict[str, Any]:
    """R-CNN: proposals, CNN features, SVMs with hard-negative mining, box regressors; one pass."""
    out = Path(cfg.train.out)
    base.output_folder(out)
    if (out / "best.pt").exists() and not cfg.train.overwrite:
        raise ConfigError(f"{out} already holds a run; pass --overwrite to start over")
    train_set, val_set = build_datasets(cfg, min_size, augment=False)
    if len(train_set) == 0:
        raise DataError(f"{cfg.data.data}: the training split holds no images")
    if validate_data:
        train_set.validate(progress=progress)
    classes = list(train_set.classes)
    settings = proposal_settings(cfg)
    cache = cfg.model.proposal_cache or str(out / "proposals")
    seed_everything(cfg.train.seed)
    kwargs = model_kwargs(cfg, len(classes), min_size)
    model = build_model("rcnn", **kwargs)
    device = base.device_of(cfg.train.device)
    model.to(device)
    t0 = time.time()
    train_p = WithProposals(
        train_set, compute_proposals(train_set, settings, cache, progress=progress)
    )
    images, targets, proposals = [], [], []
    for i in range(len(train_p)):
        im, t = train_p[i]
        images.append(im.as_subclass(torch.Tensor))
        targets.append({"boxes": t["boxes"], "labels": t["labels"]})
        proposals.append(t["proposals"])
    stats = model.fit(images, proposals, targets, progress=progress)
    fit_s = time.time() - t0
    metrics: dict[str, Any] = {}
    if len(val_set):
        val_p = WithProposals(
            val_set, compute_proposals(val_set, settings, cache, progress=progress)
        )
        metrics = run_evaluation(
            DetectionTask(classes, uses_proposals=True),
            model,
            val_p,
            batch_size=cfg.train.batch_size,
            workers=cfg.data.workers,
            device=device,
            progress=progress,
        )
    meta = _meta(cfg, "rcnn", kwargs, classes, min_size)
    best = metrics.get("mAP")
    payload = {
        **meta,
        "format": FORMAT,
        "convision_version": convision.__version__,
        "state_dict": model.state_dict(),
        "epoch": 1,
        "best_metric": best,
        "best_epoch": 1,
        "metrics": {
            k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None
        },
        "fit_stats": {
            k: v for k, v in (stats or {}).items() if isinstance(v, (int, float, str))
        },
    }
    save_checkpoint(out / "last.pt", payload)
    save_checkpoint(out / "best.pt", payload)
    record = {"epoch": 1, "fit_seconds": fit_s, **payload["metrics"]}
    (out / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    return base.run_paths(
        out, {"best_metric": best, "best_epoch": 1, "history": [record]}
    )


# this task's checkpoints only: another task's is a one-line CheckpointError
load = partial(base.load, task=NAME)


def on_load(model: nn.Module, ckpt: dict[str, Any]) -> None:
    """``model.min_size``, ``.max_size`` (the resize) and ``.proposal_settings`` (selective search)."""
    model.min_size = int(ckpt.get("min_size", 600))
    model.max_size = int(ckpt.get("max_size", 1000))
    model.proposal_settings = dict(ckpt.get("proposals") or {})


def set_inference(
    net: nn.Module,
    *,
    nms_thresh: float | None = None,
    score_thresh: float | None = None,
    detections_per_image: int | None = None,
    rpn_post_nms_test: int | None = None,
) -> nn.Module:
    """Change a detector's test-time settings in place (None keeps the trained model's): per-class NMS
    IoU, score threshold, detections kept per image and (Faster R-CNN) proposals kept after NMS."""
    if nms_thresh is not None and not 0.0 < nms_thresh <= 1.0:
        raise ConfigError(f"nms_thresh: expected an IoU in (0, 1], got {nms_thresh}")
    if score_thresh is not None and not 0.0 <= score_thresh < 1.0:
        raise ConfigError(
            f"score_thresh: expected a value in [0, 1), got {score_thresh}"
        )
    for key, value in (
        ("detections_per_image", detections_per_image),
        ("rpn_post_nms_test", rpn_post_nms_test),
    ):
        if value is not None and int(value) < 1:
            raise ConfigError(f"{key}: must be positive, got {value}")
    heads = getattr(net, "roi_heads", None)
    names = (
        ("nms_thresh", "score_thresh")
        if heads is not None
        else ("nms_threshold", "score_threshold")
    )
    target = heads if heads is not None else net
    for attr, value in (
        (names[0], nms_thresh),
        (names[1], score_thresh),
        ("detections_per_image", detections_per_image),
    ):
        if value is not None and hasattr(target, attr):
            setattr(target, attr, type(getattr(target, attr))(value))
    rpn = getattr(net, "rpn", None)
    if rpn_post_nms_test is not None and rpn is not None:
        rpn.post_nms[False] = int(rpn_post_nms_test)
    return net


def evaluate(
    model: nn.Module | str | os.PathLike,
    data: str | None = None,
    *,
    split: str = "val",
    batch_size: int = 4,
    workers: int = 2,
    device: str | None = "auto",
    progress: bool = True,
    coco: bool = True,
    coco_backend: str = "pycocotools",
    pr_curves: str | os.PathLike | None = None,
    proposal_cache: str | os.PathLike | None = None,
    tile: int = 0,
    tile_overlap: int = 64,
) -> dict[str, Any]:
    """VOC mAP@0.5 (area and 11-point, per class, ``difficult`` ignored) and, with ``coco``, COCO's
    mAP@[.5:.95], AP50, AP75 and size buckets (pycocotools) over a split (any split the data
    defines), in original pixels. ``data`` defaults to what the model was trained on. ``tile``:
    detect images larger than ``tile`` px in overlapping windows, as :func:`predict` does."""
    _check_tiling(tile, tile_overlap)
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)
    cfg = DetectConfig(
        data=base.trained_section(net, "data", DetectDataConfig),
        model=base.trained_section(net, "model", DetectModelConfig),
    )
    if data is not None:
        cfg.data.data, cfg.data.val_data = str(data), ""
    cfg.data.min_size, cfg.data.max_size = net.min_size, net.max_size
    dataset = split_dataset(
        cfg,
        split,
        detection_eval_transforms(net.min_size, net.max_size),
        classes=list(net.classes),
    )
    if len(dataset) == 0:
        raise DataError(f"{cfg.data.data}: the {split} split holds no images")
    name = getattr(net, "spec", {}).get("name")
    masks = name in MASK_MODELS
    if masks:
        _check_no_tiling(tile)
        dataset.original_masks = (
            True  # mask AP against the masks of the original images
        )
    if (
        name in USES_PROPOSALS and not tile
    ):  # tiled: selective search runs on each window
        trained_out = ((net.train_config or {}).get("train") or {}).get(
            "out"
        ) or cfg.train.out
        cache = (
            proposal_cache
            or cfg.model.proposal_cache
            or str(Path(trained_out) / "proposals")
        )
        dataset = WithProposals(
            dataset,
            compute_proposals(
                dataset,
                net.proposal_settings or proposal_settings(cfg),
                cache,
                progress=progress,
            ),
        )
    task = DetectionTask(
        net.classes, uses_proposals=name in USES_PROPOSALS, keep=True, masks=masks
    )
    if tile:
        metric = _tiled_metric(task, net, dataset, dev, tile, tile_overlap, progress)
    else:
        metric = run_metric(
            task,
            net,
            eval_loader(task, dataset, batch_size, workers, dev),
            dev,
            progress,
        )
    metrics = metric.compute()
    if coco:
        metrics["coco"] = coco_evaluate(
            metric.preds, metric.targets, net.classes, backend=coco_backend
        )
    if (
        masks
    ):  # mask AP (COCO segm) whatever ``coco`` says: it is this model's main number
        metrics["coco_mask"] = coco_evaluate(
            metric.preds,
            metric.targets,
            net.classes,
            backend=coco_backend,
            iou_type="segm",
        )
    if pr_curves:
        plot_pr_curves(metric.voc, pr_curves)
    metrics["classes"] = list(net.classes)
    metrics["split"] = split
    return metrics


@torch.no_grad()
def _tiled_metric(
    task: DetectionTask,
    net: nn.Module,
    dataset: Any,
    dev: torch.device,
    tile: int,
    overlap: int,
    progress: bool,
) -> DetectionRecorder:
    """The task's metric over ``dataset``'s original images, each detected in windows (one process)."""
    net.eval()
    metric = task.new_metric()
    for i in tqdm(
        range(len(dataset)),
        desc="val (tiled)",
        leave=False,
        file=sys.stderr,
        disable=not progress,
    ):
        array, target = dataset.raw(i)
        pred = detect_image(net, array, device=dev, tile=tile, tile_overlap=overlap)
        n = len(target["labels"])
        metric.update(
            [pred],
            [
                {
                    "boxes": torch.as_tensor(
                        target["boxes"], dtype=torch.float32
                    ).reshape(-1, 4),
                    "labels": torch.as_tensor(target["labels"]).reshape(-1),
                    "difficult": torch.as_tensor(
                        target.get("difficult", torch.zeros(n, dtype=torch.bool))
                    ).reshape(-1),
                    "orig_size": torch.tensor(array.shape[:2]),
                    "image_id": target.get("image_id", i),
                }
            ],
        )
    return metric


def _detect_array(
    net: nn.Module,
    array: np.ndarray,
    tf: Any,
    dev: torch.device,
    proposal_cache: str | os.PathLike | None,
) -> dict[str, torch.Tensor]:
    """One RGB uint8 image through the evaluation resize and the detector; boxes in its own pixels."""
    h, w = array.shape[:2]
    image = tv_tensors.Image(
        torch.from_numpy(np.array(array[..., :3])).permute(2, 0, 1)
    )
    x = tf(image).as_subclass(torch.Tensor)
    if x.dtype == torch.uint8:
        x = x.float() / 255
    size = x.shape[-2:]
    if getattr(net, "spec", {}).get("name") in USES_PROPOSALS:
        settings = net.proposal_settings or {"mode": "fast", "max_proposals": 2000}
        rgb = np.ascontiguousarray(array[..., :3])
        found = (
            ProposalCache(
                proposal_cache,
                mode=settings["mode"],
                max_proposals=settings["max_proposals"],
            )(rgb)
            if proposal_cache
            else selective_search(rgb, **settings)
        )
        props = _scale_boxes(
            torch.as_tensor(found, dtype=torch.float32).reshape(-1, 4), (h, w), size
        )
        res = net([x.to(dev)], proposals=[props.to(dev)])[0]
    else:
        res = net([x.to(dev)])[0]
    out = {
        "boxes": _scale_boxes(res["boxes"].float().cpu(), size, (h, w)),
        "labels": res["labels"].cpu(),
        "scores": res["scores"].float().cpu(),
    }
    if "mask_probs" in res:  # pasted at the original resolution, not the network's
        out["masks"] = paste_masks(
            res["mask_probs"].float().cpu(),
            out["boxes"],
            (h, w),
            getattr(net, "mask_thresh", 0.5),
        )
    return out


def _nms_thresh(net: nn.Module) -> float:
    heads = getattr(net, "roi_heads", None)
    return float(
        heads.nms_thresh if heads is not None else getattr(net, "nms_threshold", 0.5)
    )


def detect_image(
    net: nn.Module,
    array: np.ndarray,
    *,
    device: torch.device,
    tile: int = 0,
    tile_overlap: int = 0,
    proposal_cache: str | os.PathLike | None = None,
) -> dict[str, torch.Tensor]:
    """Detections of one image (original pixels); with ``tile``, over overlapping ``tile x tile`` windows
    merged across windows (:mod:`convision.models.detection.tiling`) when the image is larger than a tile."""
    tf = detection_eval_transforms(net.min_size, net.max_size)
    h, w = array.shape[:2]
    if tile and (h > tile or w > tile):

        def window(box: tuple[int, int, int, int]) -> dict[str, torch.Tensor]:
            x1, y1, x2, y2 = box
            return _detect_array(net, array[y1:y2, x1:x2], tf, device, None)

        limit = int(
            getattr(getattr(net, "roi_heads", net), "detections_per_image", 100)
        )
        return detect_tiled(
            window, h, w, tile, tile_overlap, nms_thresh=_nms_thresh(net), limit=limit
        )
    return _detect_array(net, array, tf, device, proposal_cache)


MIN_SIDE = 32  # the smallest network input side every detector's pooling still handles


def check_detectable(
    array: np.ndarray, min_size: int, max_size: int, name: str
) -> None:
    """A DataError when the evaluation resize (shorter side ``min_size``, longer at most
    ``max_size``) would leave the image's shorter side below :data:`MIN_SIDE` pixels."""
    h, w = array.shape[:2]
    short = min(h, w) * min(min_size / min(h, w), max_size / max(h, w))
    if short < MIN_SIDE:
        raise DataError(
            f"{name}: image is {w}x{h} px; resized to at most {max_size} px long its shorter side is "
            f"{short:.0f} px, below the {MIN_SIDE} px a detector needs (try --tile)"
        )


def _check_no_tiling(tile: int) -> None:
    if tile:
        raise ConfigError(
            "tile: Mask R-CNN does not detect in tiles (masks are not merged across windows); use tile 0"
        )


def _check_tiling(tile: int, tile_overlap: int) -> None:
    if tile < 0 or (tile and tile < 32):
        raise ConfigError(
            f"tile: expected 0 (off) or a window side of at least 32 px, got {tile}"
        )
    if tile and not 0 <= tile_overlap < tile:
        raise ConfigError(
            f"tile_overlap: expected 0 <= overlap < tile ({tile}), got {tile_overlap}"
        )


@torch.no_grad()
def predict(
    model: nn.Module | str | os.PathLike,
    images: Any,
    *,
    device: str | None = "auto",
    score_threshold: float = 0.0,
    proposal_cache: str | os.PathLike | None = None,
    tile: int = 0,
    tile_overlap: int = 64,
) -> list[dict[str, Any]]:
    """For each image (paths, folder, glob or HxWx3 uint8 arrays): ``{"boxes": [[x1, y1, x2, y2], ...]
    (original pixels), "labels": [...] (0..K-1), "classes": [...], "scores": [...]}``, best first;
    Mask R-CNN adds ``"masks"``: one COCO RLE per box (``pycocotools.mask.decode`` gives ``H x W``).
    ``tile``: detect images larger than ``tile`` pixels in overlapping windows (``tile_overlap`` px)."""
    if not 0.0 <= score_threshold <= 1.0:
        raise ConfigError(
            f"score_threshold: expected a value in [0, 1], got {score_threshold}"
        )
    _check_tiling(tile, tile_overlap)
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)
    if getattr(net, "spec", {}).get("name") in MASK_MODELS:
        _check_no_tiling(tile)
    out: list[dict[str, Any]] = []
    for name, array in base.read_inputs(images):
        if not tile:
            check_detectable(array, net.min_size, net.max_size, name)
        res = detect_image(
            net,
            array,
            device=dev,
            tile=tile,
            tile_overlap=tile_overlap,
            proposal_cache=proposal_cache,
        )
        keep = res["scores"] >= score_threshold
        labels = res["labels"][keep].tolist()
        out.append(
            {
                "boxes": [[float(v) for v in b] for b in res["boxes"][keep]],
                "labels": [int(c) for c in labels],
                "classes": [net.classes[int(c)] for c in labels],
                "scores": [float(v) for v in res["scores"][keep]],
            }
        )
        if "masks" in res:  # COCO RLEs in the original pixels (pycocotools.mask.decode)
            out[-1]["masks"] = masks_to_rles(res["masks"][keep])
    return out


PALETTE = [
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
]
"""Box colours: one per class for boxes, one per instance (in score order) for masks."""


def draw_detections(
    array: np.ndarray, prediction: dict[str, Any], score_threshold: float = 0.3
) -> np.ndarray:
    """The image with the boxes at or above ``score_threshold`` drawn with class name and score;
    with ``"masks"`` (RLEs) each instance is filled in its own colour, its box in the same one."""
    image = torch.from_numpy(np.array(array[..., :3])).permute(2, 0, 1)
    keep = [i for i, s in enumerate(prediction["scores"]) if s >= score_threshold]
    if not keep:
        return np.array(array[..., :3])
    if "masks" in prediction:
        return _draw_instances(image, prediction, keep, array.shape[:2])
    boxes = torch.tensor([prediction["boxes"][i] for i in keep], dtype=torch.float32)
    names = [f"{prediction['classes'][i]} {prediction['scores'][i]:.2f}" for i in keep]
    colors = [PALETTE[prediction["labels"][i] % len(PALETTE)] for i in keep]
    width = max(1, round(min(array.shape[:2]) / 150))
    drawn = draw_bounding_boxes(image, boxes, labels=names, colors=colors, width=width)
    return drawn.permute(1, 2, 0).numpy()


def _draw_instances(
    image: torch.Tensor,
    prediction: dict[str, Any],
    keep: list[int],
    hw: Sequence[int],
) -> np.ndarray:
    """Each kept instance's mask filled (alpha 0.45) and its box outlined in the instance's own colour."""
    from torchvision.utils import draw_segmentation_masks

    from convision.data.instance_masks import decode_rles

    rles = [prediction["masks"][i] for i in keep]
    masks = torch.from_numpy(
        decode_rles(rles).astype(bool).reshape(hw[0], hw[1], len(keep))
    ).permute(2, 0, 1)
    colors = [PALETTE[j % len(PALETTE)] for j in range(len(keep))]
    drawn = draw_segmentation_masks(image, masks, alpha=0.45, colors=colors)
    boxes = torch.tensor([prediction["boxes"][i] for i in keep], dtype=torch.float32)
    names = [f"{prediction['classes'][i]} {prediction['scores'][i]:.2f}" for i in keep]
    width = max(1, round(min(hw) / 150))
    drawn = draw_bounding_boxes(drawn, boxes, labels=names, colors=colors, width=width)
    return drawn.permute(1, 2, 0).numpy()


def predict_to_folder(
    model: nn.Module | str | os.PathLike,
    inputs: Any,
    out_dir: str | os.PathLike,
    *,
    device: str | None = "auto",
    score_threshold: float = 0.3,
    tile: int = 0,
    tile_overlap: int = 64,
    strict: bool = False,
    progress: bool = True,
) -> base.FolderResults:
    """Detect every input image; write ``<out>/<stem>.png`` with the boxes at or above
    ``score_threshold`` drawn, ``<out>/predictions.json`` (``{path: prediction}``, every score) and
    ``<out>/coco_results.json`` (COCO results format, image ids in input order); returns the dict."""
    _check_tiling(tile, tile_overlap)
    dev = base.device_of(device)
    net = base.as_model(model, dev, NAME)

    def predict_one(
        image: np.ndarray, name: str
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if not tile:
            check_detectable(image, net.min_size, net.max_size, name)
        p = predict(net, image, device=dev, tile=tile, tile_overlap=tile_overlap)[0]
        return p, {"": draw_detections(image, p, score_threshold)}

    results = base.predict_to_folder(
        inputs, out_dir, predict_one, strict=strict, progress=progress
    )
    coco = [
        {
            "image_id": image_id,
            "file_name": f,
            "category_id": int(c),
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "score": s,
            **({"segmentation": p["masks"][j]} if "masks" in p else {}),
        }
        for image_id, (f, p) in enumerate(results.items())
        for j, (b, c, s) in enumerate(zip(p["boxes"], p["labels"], p["scores"]))
    ]
    (Path(out_dir) / "coco_results.json").write_text(json.dumps(coco))
    return results
