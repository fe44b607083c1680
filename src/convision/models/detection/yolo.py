"""YOLOv1: one network that regresses boxes and class probabilities on an S x S grid.

Joseph Redmon, Santosh Divvala, Ross Girshick, Ali Farhadi, "You Only Look Once: Unified, Real-Time
Object Detection", CVPR 2016 (arXiv:1506.02640).

The model (paper Sec. 2)
------------------------
The image is resized to ``image_size x image_size`` (448 in the paper; anisotropic, the aspect ratio is
not kept) and divided into an ``S x S`` grid (``grid``, S = 7). Each cell predicts ``B``
(``boxes_per_cell``, 2) boxes, each ``(x, y, sqrt(w), sqrt(h), confidence)``, and ``C`` conditional
class probabilities ``Pr(class_i | object)`` shared by its B boxes: the output is
``S x S x (B*5 + C)`` (7 x 7 x 30 for PASCAL VOC), from a linear final layer.

* ``x, y``: the box centre as an offset within its cell, in ``[0, 1]`` when the centre lies in it.
* ``sqrt(w), sqrt(h)``: the square roots of the box's width and height relative to the image
  (Sec. 2.2: "we predict the square root of the bounding box width and height"); boxes are
  decoded with ``w = sqrt_w ** 2`` (the sign of the linear output does not matter, as in darknet).
* ``confidence``: trained towards ``Pr(Object) * IOU(pred, truth)``.

There is **no background class**: a cell without an object is told so only through the confidence
of its boxes, and the class outputs are the user's classes ``0 .. K-1`` directly (``C = K``).
(:func:`convision.models.detection.to_internal` is not used here.)

The loss (Sec. 2.2, Eq. 3)
--------------------------
Sum-squared error, summed over the batch and divided by the batch size:

* ``coord``: ``lambda_coord`` (5) x [(x - x^)^2 + (y - y^)^2 + (sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
  for each *responsible* predictor: of the B boxes of the cell holding the object's centre, the one
  whose current prediction has the highest IoU with the object;
* ``conf_obj``: (C - IOU)^2 for responsible predictors, the target being that IoU (detached);
* ``conf_noobj``: ``lambda_noobj`` (0.5) x C^2 for every other predictor (the other boxes of an
  object's cell included);
* ``cls``: sum over classes of (p(c) - p^(c))^2 with a one-hot target, only in cells that contain an
  object.

``forward`` returns these four terms; their sum is the paper's loss.

Choices where the paper is silent: when all B predictions of a cell have IoU 0 with the object (at
the start of training) the responsible one is the one with the smallest squared error in
``(x, y, sqrt w, sqrt h)`` (darknet's tie-break, by RMSE). A cell can hold one object: when several
centres fall in one cell, the largest object (by area) is kept and the others are ignored (darknet
kept the first in the shuffled list). Target boxes are clipped to the image; boxes of zero width or
height are ignored.

Inference (Sec. 2, "At test time")
----------------------------------
Class-specific scores ``Pr(class_i | object) * confidence`` for every box and class (both clamped to
``[0, 1]`` first, since the linear outputs can leave that range), scores above ``score_threshold``
(0.2, darknet's default for YOLOv1 detection) kept, per-class NMS (:func:`torchvision.ops.batched_nms`,
IoU ``nms_threshold`` 0.5), at most ``detections_per_image`` (100) per image, best first. Boxes are
mapped back to the pixels of each input tensor and clipped to it.

Networks
--------
* ``backbone="darknet"``: the paper's network (Fig. 3), 24 convolutional layers (a 7x7/64 stride-2
  convolution, then 3x3 convolutions alternating with 1x1 reductions, four 2x2 max poolings and a
  stride-2 3x3 convolution: total stride 64) and two fully connected layers (4096 with dropout 0.5,
  then ``S*S*(B*5+C)``), leaky ReLU (slope 0.1) everywhere except the linear final layer. The input is
  the image in ``[0, 1]`` (darknet does not subtract a mean): ``mean = 0``, ``std = 1``.
  ``image_size`` must be a multiple of 64 (448 -> a 7 x 7 x 1024 map before the FC layers).
  Randomly initialised (He, for leaky ReLU): the paper pretrains the first 20 convolutional layers on
  ImageNet, these weights are not available here. Options not in the paper: ``width`` scales every
  convolution's channels, ``fc_hidden`` the first FC layer (for small test networks) and
  ``batch_norm`` adds BN after every convolution (as YOLOv2 did), which makes training from scratch
  easier.
* ``backbone`` one of ``mobilenet_v2``, ``resnet18/34/50/101``, ``vgg16(_bn)``: **not the paper's
  network**; a torchvision classifier (``weights=`` as for :func:`convision.models.backbones.build_backbone`,
  e.g. ``"IMAGENET1K_V1"``) to its stride-32 map, then a 3x3 convolution (``head_channels``, leaky
  ReLU 0.1, dropout), adaptive average pooling to ``S x S`` and a linear 1x1 convolution to
  ``B*5 + C`` channels: a fully convolutional head in place of the FC layers, trainable on a CPU at a
  smaller ``image_size`` (224 gives a 7 x 7 map). Inputs are normalised with ImageNet's mean and std.

Also not in the paper: the training schedule, data augmentation and ImageNet pretraining are the
caller's; the model resizes with bilinear interpolation (antialiased when shrinking).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import (
    batched_nms,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
)

from convision.errors import ConfigError
from convision.models.backbones import BACKBONES, build_backbone, is_none

__all__ = ["YOLOv1", "yolov1", "DARKNET_LAYERS", "darknet"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The paper's Figure 3: ("conv", kernel, channels, stride) or ("pool",); 24 convolutions.
DARKNET_LAYERS: list[tuple[Any, ...]] = [
    ("conv", 7, 64, 2),
    ("pool",),
    ("conv", 3, 192, 1),
    ("pool",),
    ("conv", 1, 128, 1),
    ("conv", 3, 256, 1),
    ("conv", 1, 256, 1),
    ("conv", 3, 512, 1),
    ("pool",),
    *[("conv", 1, 256, 1), ("conv", 3, 512, 1)] * 4,
    ("conv", 1, 512, 1),
    ("conv", 3, 1024, 1),
    ("pool",),
    *[("conv", 1, 512, 1), ("conv", 3, 1024, 1)] * 2,
    ("conv", 3, 1024, 1),
    ("conv", 3, 1024, 2),
    ("conv", 3, 1024, 1),
    ("conv", 3, 1024, 1),
]
DARKNET_STRIDE = 64


def _leaky_conv(
    cin: int, cout: int, kernel: int, stride: int, batch_norm: bool
) -> list[nn.Module]:
    conv = nn.Conv2d(
        cin, cout, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm
    )
    nn.init.kaiming_normal_(
        conv.weight, a=0.1, mode="fan_in", nonlinearity="leaky_relu"
    )
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return [
        conv,
        *([nn.BatchNorm2d(cout)] if batch_norm else []),
        nn.LeakyReLU(0.1, inplace=True),
    ]


def darknet(width: float = 1.0, batch_norm: bool = False) -> nn.Sequential:
    """The 24 convolutional layers of the paper's Figure 3 (with their 4 max poolings), stride 64;
    ``width`` scales the channels (1.0 = the paper's, ending with 1024)."""
    layers: list[nn.Module] = []
    cin = 3
    for spec in DARKNET_LAYERS:
        if spec[0] == "pool":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        _, kernel, channels, stride = spec
        cout = max(1, round(channels * width))
        layers += _leaky_conv(cin, cout, kernel, stride, batch_norm)
        cin = cout
    return nn.Sequential(*layers)


class YOLOv1(nn.Module):
    """YOLOv1 (Redmon et al. 2016); see the module docstring. No background class.

    ``forward(images, targets=None)`` keeps the detection contract of
    :mod:`convision.models.detection`. :meth:`predict_grid` gives the raw ``N x S x S x (B*5 + C)``
    output for a batch already resized and normalised (:meth:`preprocess`).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "darknet",
        weights: str | os.PathLike | None = "none",
        image_size: int = 448,
        grid: int = 7,
        boxes_per_cell: int = 2,
        lambda_coord: float = 5.0,
        lambda_noobj: float = 0.5,
        score_threshold: float = 0.2,
        nms_threshold: float = 0.5,
        detections_per_image: int = 100,
        dropout: float = 0.5,
        width: float = 1.0,
        fc_hidden: int = 4096,
        batch_norm: bool = False,
        head_channels: int = 512,
    ) -> None:
        super().__init__()
        _check_int("num_classes", num_classes, 1)
        _check_int("grid", grid, 1)
        _check_int("boxes_per_cell", boxes_per_cell, 1)
        _check_int("image_size", image_size, 32)
        _check_int("detections_per_image", detections_per_image, 1)
        _check_int("fc_hidden", fc_hidden, 1)
        _check_int("head_channels", head_channels, 1)
        for name, value in (
            ("lambda_coord", lambda_coord),
            ("lambda_noobj", lambda_noobj),
            ("width", width),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or value < 0
            ):
                raise ConfigError(
                    f"{name}: must be a non-negative number, got {value!r}"
                )
        if width <= 0:
            raise ConfigError(f"width: must be positive, got {width!r}")
        for name, value in (
            ("score_threshold", score_threshold),
            ("nms_threshold", nms_threshold),
            ("dropout", dropout),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value <= 1
            ):
                raise ConfigError(f"{name}: must be a number in [0, 1], got {value!r}")
        self.num_classes = num_classes
        self.backbone_name = backbone
        self.image_size = image_size
        self.grid = grid
        self.boxes_per_cell = boxes_per_cell
        self.lambda_coord = float(lambda_coord)
        self.lambda_noobj = float(lambda_noobj)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.detections_per_image = detections_per_image
        self.cell_outputs = boxes_per_cell * 5 + num_classes
        out = grid * grid * self.cell_outputs

        if backbone == "darknet":
            if not is_none(weights):
                raise ConfigError(
                    f"weights: no pretrained weights for the darknet backbone (use 'none' or a torchvision backbone), got {weights!r}"
                )
            if image_size % DARKNET_STRIDE:
                raise ConfigError(
                    f"image_size: must be a multiple of {DARKNET_STRIDE} for the darknet backbone (e.g. 448), got {image_size}"
                )
            self.features: nn.Module = darknet(width, batch_norm)
            channels = max(1, round(1024 * width))
            side = image_size // DARKNET_STRIDE
            fc1 = nn.Linear(channels * side * side, fc_hidden)
            nn.init.kaiming_normal_(
                fc1.weight, a=0.1, mode="fan_in", nonlinearity="leaky_relu"
            )
            nn.init.zeros_(fc1.bias)
            fc2 = nn.Linear(fc_hidden, out)
            nn.init.normal_(fc2.weight, std=0.01)
            nn.init.zeros_(fc2.bias)
            self.head: nn.Module = nn.Sequential(
                nn.Flatten(),
                fc1,
                nn.LeakyReLU(0.1, inplace=True),
                nn.Dropout(dropout),
                fc2,
            )
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        elif backbone in BACKBONES:
            self.features = build_backbone(backbone, weights)
            channels = self.features.channels[32]
            conv = nn.Conv2d(channels, head_channels, 3, padding=1)
            nn.init.kaiming_normal_(
                conv.weight, a=0.1, mode="fan_in", nonlinearity="leaky_relu"
            )
            nn.init.zeros_(conv.bias)
            last = nn.Conv2d(head_channels, self.cell_outputs, 1)
            nn.init.normal_(last.weight, std=0.01)
            nn.init.zeros_(last.bias)
            self.head = nn.Sequential(
                conv,
                nn.LeakyReLU(0.1, inplace=True),
                nn.Dropout(dropout),
                nn.AdaptiveAvgPool2d(grid),
                last,
            )
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            raise ConfigError(
                f"backbone: unknown backbone {backbone!r} (known: darknet, {', '.join(BACKBONES)})"
            )
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ network
    def preprocess(self, images: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Resize every ``3 x H x W`` image to ``image_size`` square, normalise, stack; also the
        original ``(H, W)`` of each."""
        if not images:
            raise ValueError("YOLOv1: expected a non-empty list of 3 x H x W images")
        size = (self.image_size, self.image_size)
        batch, sizes = [], []
        for img in images:
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(
                    f"YOLOv1: expected 3 x H x W images, got shape {tuple(img.shape)}"
                )
            sizes.append((int(img.shape[1]), int(img.shape[2])))
            img = img.to(self.mean.dtype)
            if tuple(img.shape[1:]) != size:
                shrink = img.shape[1] > size[0] or img.shape[2] > size[1]
                img = F.interpolate(
                    img[None],
                    size=size,
                    mode="bilinear",
                    align_corners=False,
                    antialias=shrink,
                )[0]
            batch.append((img - self.mean) / self.std)
        return torch.stack(batch), sizes

    def predict_grid(self, x: Tensor) -> Tensor:
        """Raw output ``N x S x S x (B*5 + C)`` for a preprocessed batch: per cell, B times
        ``(x, y, sqrt w, sqrt h, confidence)``, then C class probabilities (all linear)."""
        if self.backbone_name == "darknet":
            out = self.head(self.features(x))
        else:
            out = self.head(self.features(x)[32]).permute(0, 2, 3, 1)
        return out.reshape(x.shape[0], self.grid, self.grid, self.cell_outputs)

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> Any:
        x, sizes = self.preprocess(images)
        out = self.predict_grid(x)
        if self.training:
            if targets is None:
                raise ValueError(
                    "YOLOv1: training mode needs targets (call model.eval() for detections)"
                )
            if len(targets) != len(images):
                raise ValueError(
                    f"YOLOv1: {len(images)} images but {len(targets)} targets"
                )
            return self.loss(out, targets, sizes)
        return self.postprocess(out, sizes)

    # ------------------------------------------------------------------ training
    def _decode_cells(self, boxes: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """``(x, y, sqrt w, sqrt h)`` (``... x 4``) of cells ``rows, cols`` (broadcast) to normalised xyxy."""
        s = self.grid
        cx = (cols + boxes[..., 0]) / s
        cy = (rows + boxes[..., 1]) / s
        wh = boxes[..., 2:4] ** 2
        return box_convert(
            torch.cat((torch.stack((cx, cy), -1), wh), -1), "cxcywh", "xyxy"
        )

    def assign(
        self,
        targets: list[dict[str, Tensor]],
        sizes: list[tuple[int, int]],
        device: torch.device,
    ) -> dict[str, Tensor]:
        """Ground truth per object cell (one object per cell, the largest): ``image``, ``row``, ``col``
        (``M``), ``box`` (``M x 4``: x, y offsets in the cell, sqrt w, sqrt h), ``xyxy`` (``M x 4``,
        normalised to the image) and ``label`` (``M``)."""
        s = self.grid
        norm, labels, image = [], [], []
        for i, (t, (h, w)) in enumerate(zip(targets, sizes)):
            boxes = t["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4)
            lab = t["labels"].to(device=device, dtype=torch.int64).reshape(-1)
            if lab.numel() and (lab.min() < 0 or lab.max() >= self.num_classes):
                raise ValueError(
                    f"YOLOv1: labels must be in 0..{self.num_classes - 1}, got {lab.tolist()}"
                )
            boxes = clip_boxes_to_image(boxes, (h, w)) / torch.tensor(
                [w, h, w, h], device=device, dtype=torch.float32
            )
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            norm.append(boxes[valid])
            labels.append(lab[valid])
            image.append(
                torch.full((int(valid.sum()),), i, device=device, dtype=torch.int64)
            )
        xyxy, label, img = torch.cat(norm), torch.cat(labels), torch.cat(image)
        cxcywh = box_convert(xyxy, "xyxy", "cxcywh")
        col = (cxcywh[:, 0] * s).floor().long().clamp(0, s - 1)
        row = (cxcywh[:, 1] * s).floor().long().clamp(0, s - 1)
        # One object per cell: the largest (stable: the first of equal areas).
        cell = (img * s + row) * s + col
        by_area = torch.argsort(
            cxcywh[:, 2] * cxcywh[:, 3], descending=True, stable=True
        )
        order = by_area[torch.argsort(cell[by_area], stable=True)]
        first = torch.ones_like(order, dtype=torch.bool)
        first[1:] = cell[order][1:] != cell[order][:-1]
        k = order[first]
        box = torch.stack(
            (
                cxcywh[k, 0] * s - col[k],
                cxcywh[k, 1] * s - row[k],
                cxcywh[k, 2].sqrt(),
                cxcywh[k, 3].sqrt(),
            ),
            1,
        )
        return {
            "image": img[k],
            "row": row[k],
            "col": col[k],
            "box": box,
            "xyxy": xyxy[k],
            "label": label[k],
        }

    def responsible(
        self, pred_boxes: Tensor, gt: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """For ``M`` object cells with predictions ``pred_boxes`` (``M x B x 4``, x, y, sqrt w, sqrt h):
        the index of the responsible predictor (max IoU with the object; when all are 0 the smallest
        squared error) and its IoU (``M``), both without gradient."""
        with torch.no_grad():
            m, b = pred_boxes.shape[:2]
            pred = self._decode_cells(
                pred_boxes.float(), gt["row"][:, None], gt["col"][:, None]
            )  # M x B x 4
            iou = box_iou(pred.reshape(m * b, 4), gt["xyxy"]).reshape(m, b, m)
            iou = torch.diagonal(iou, dim1=0, dim2=2).T.nan_to_num(
                0.0
            )  # M x B: each cell with its own object
            err = ((pred_boxes.float() - gt["box"][:, None]) ** 2).sum(-1)
            best = torch.where(iou.amax(1) > 0, iou.argmax(1), err.argmin(1))
            return best, iou.gather(1, best[:, None])[:, 0]

    def loss(
        self,
        out: Tensor,
        targets: list[dict[str, Tensor]],
        sizes: list[tuple[int, int]],
    ) -> dict[str, Tensor]:
        """The paper's sum-squared error (module docstring) for raw output ``out``; targets in pixels of
        images of ``sizes`` (``(H, W)`` each)."""
        n, s, b = out.shape[0], self.grid, self.boxes_per_cell
        out = out.float()
        boxes = out[..., : b * 5].reshape(n, s, s, b, 5)
        classes = out[..., b * 5 :]
        gt = self.assign(targets, sizes, out.device)
        i, r, c = gt["image"], gt["row"], gt["col"]
        cell_boxes = boxes[i, r, c]  # M x B x 5
        best, iou = self.responsible(cell_boxes[..., :4], gt)
        pred = cell_boxes[torch.arange(len(best), device=out.device), best]  # M x 5
        coord = self.lambda_coord * ((pred[:, :4] - gt["box"]) ** 2).sum()
        conf_obj = ((pred[:, 4] - iou) ** 2).sum()
        noobj = torch.ones(n, s, s, b, device=out.device, dtype=torch.bool)
        noobj[i, r, c, best] = False
        conf_noobj = self.lambda_noobj * (boxes[..., 4][noobj] ** 2).sum()
        onehot = F.one_hot(gt["label"], self.num_classes).to(out.dtype)
        cls = ((classes[i, r, c] - onehot) ** 2).sum()
        return {
            "coord": coord / n,
            "conf_obj": conf_obj / n,
            "conf_noobj": conf_noobj / n,
            "cls": cls / n,
        }

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def postprocess(
        self, out: Tensor, sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Detections per image from raw output (module docstring, "Inference")."""
        n, s, b, k = out.shape[0], self.grid, self.boxes_per_cell, self.num_classes
        out = out.float()
        boxes = out[..., : b * 5].reshape(n, s, s, b, 5)
        rows = torch.arange(s, device=out.device, dtype=out.dtype).view(s, 1, 1)
        cols = torch.arange(s, device=out.device, dtype=out.dtype).view(1, s, 1)
        xyxy = self._decode_cells(
            boxes[..., :4], rows, cols
        )  # N x S x S x B x 4, normalised
        conf = boxes[..., 4].clamp(0, 1)
        prob = out[..., b * 5 :].clamp(0, 1)
        scores = conf[..., None] * prob[..., None, :]  # N x S x S x B x C
        labels = torch.arange(k, device=out.device).expand(s * s * b, k).reshape(-1)
        results = []
        for j, (h, w) in enumerate(sizes):
            img_boxes = xyxy[j].reshape(-1, 1, 4) * torch.tensor(
                [w, h, w, h], device=out.device, dtype=out.dtype
            )
            img_boxes = clip_boxes_to_image(
                img_boxes.expand(-1, k, 4).reshape(-1, 4), (h, w)
            )
            sc = scores[j].reshape(-1)
            keep = torch.nonzero(sc > self.score_threshold).squeeze(1)
            keep = keep[remove_small_boxes(img_boxes[keep], 1e-3)]
            nms = batched_nms(
                img_boxes[keep], sc[keep], labels[keep], self.nms_threshold
            )[: self.detections_per_image]
            keep = keep[nms]
            results.append(
                {"boxes": img_boxes[keep], "labels": labels[keep], "scores": sc[keep]}
            )
        return results

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone_name!r}, num_classes={self.num_classes}, image_size={self.image_size}, "
            f"grid={self.grid}, boxes_per_cell={self.boxes_per_cell}"
        )


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}: must be an integer >= {minimum}, got {value!r}")


def yolov1(
    *,
    num_classes: int,
    backbone: str = "darknet",
    weights: str | None = "none",
    image_size: int = 448,
    grid: int = 7,
    boxes_per_cell: int = 2,
    lambda_coord: float = 5.0,
    lambda_noobj: float = 0.5,
    score_threshold: float = 0.2,
    nms_threshold: float = 0.5,
    detections_per_image: int = 100,
    dropout: float = 0.5,
    width: float = 1.0,
    fc_hidden: int = 4096,
    batch_norm: bool = False,
    head_channels: int = 512,
) -> YOLOv1:
    """YOLOv1: the paper's darknet network (``backbone="darknet"``, random init, 448 input) or a
    torchvision backbone with a convolutional head (e.g. ``backbone="mobilenet_v2",
    weights="IMAGENET1K_V1", image_size=224``). See :class:`YOLOv1` and the module docstring."""
    return YOLOv1(
        num_classes=num_classes,
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        grid=grid,
        boxes_per_cell=boxes_per_cell,
        lambda_coord=lambda_coord,
        lambda_noobj=lambda_noobj,
        score_threshold=score_threshold,
        nms_threshold=nms_threshold,
        detections_per_image=detections_per_image,
        dropout=dropout,
        width=width,
        fc_hidden=fc_hidden,
        batch_norm=batch_norm,
        head_channels=head_channels,
    )
