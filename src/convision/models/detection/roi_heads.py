"""The RoI detection head shared by Fast R-CNN (Girshick 2015) and Faster R-CNN (Ren et al. 2015).

* Pooling (``pooling=``): ``"roi_pool"`` (Fast R-CNN section 2.1: max pooling of each RoI into a
  fixed ``H x W = 7 x 7`` grid, :func:`torchvision.ops.roi_pool`, spatial scale 1/16), ``"roi_align"``
  (bilinear sampling, not in these papers; ``aligned=True``, 2 samples per bin side) or ``"spp"``
  (SPP-net's pyramid, :class:`~convision.models.detection.spp.SpatialPyramidPooling`).
* Body: for VGG16 the ImageNet classifier's fc6 and fc7 (4096, ReLU, dropout 0.5), as in the paper,
  when their input size fits (7x7 pooling of 512 channels); otherwise (other backbones, SPP, other
  pooling sizes) two new fully connected layers of width ``head_dim`` (1024 by default) with ReLU.
* Outputs: a ``K + 1``-way classifier (output 0 = background, see
  :mod:`convision.models.detection`) and class-specific box regression with ``4K`` outputs (one box
  per foreground class, the paper's ``t^k``, ``k = 1..K``), targets :func:`encode` with
  :data:`ROI_WEIGHTS`. Init: N(0, 0.01) and N(0, 0.001) (py-faster-rcnn).
* Training (section 2.3): per image, the proposals plus the ground-truth boxes; 128 RoIs sampled,
  up to 25 % foreground (IoU >= 0.5 with a ground-truth box, labelled with its class), the rest
  background (max IoU in ``[bg_iou_low, 0.5)``: 0.1 in the Fast R-CNN paper, 0.0 in py-faster-rcnn's
  end-to-end Faster R-CNN). On an image without ground truth every proposal is a background
  candidate (else ``bg_iou_low = 0.1`` would leave nothing to sample). Loss (eq. 1, ``lambda = 1``):
  mean cross-entropy over the sampled RoIs + smooth L1 (``beta = 1``) between the deltas of each
  foreground RoI's own class and its target, summed and divided by the number of sampled RoIs.
* Inference (section 3 / py-faster-rcnn's test): softmax scores, per-class decoding, clipping to the
  image, score > 0.05, zero-size boxes dropped, NMS at 0.3 per class and image (one
  ``batched_nms`` for the whole batch), the 100 best per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import (
    batched_nms,
    box_iou,
    remove_small_boxes,
    roi_align,
    roi_pool,
)

from convision.errors import ConfigError
from convision.models.detection import to_internal, to_user
from convision.models.detection.box_coder import ROI_WEIGHTS, decode, encode
from convision.models.detection.rpn import clip_batch, top_per_image
from convision.models.detection.spp import SpatialPyramidPooling

__all__ = ["POOLINGS", "RoIPooler", "RoIBoxHead", "RoIHeads", "rois_from_boxes"]

POOLINGS = ("roi_pool", "roi_align", "spp")


def rois_from_boxes(boxes: Sequence[Tensor]) -> Tensor:
    """``R x 5`` (image index, x1, y1, x2, y2) from a list of per-image ``P_i x 4`` boxes."""
    index = torch.cat(
        [
            torch.full((b.shape[0], 1), i, dtype=b.dtype, device=b.device)
            for i, b in enumerate(boxes)
        ]
    )
    return torch.cat((index, torch.cat(list(boxes))), dim=1)


class RoIPooler(nn.Module):
    """``forward(features, rois R x 5) -> R x output_length(C)`` (flattened pooled features)."""

    def __init__(
        self,
        pooling: str = "roi_pool",
        output_size: int = 7,
        spatial_scale: float = 1.0 / 16,
        spp_levels: Sequence[int] = (6, 3, 2, 1),
        sampling_ratio: int = 2,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(
                f"pooling: unknown RoI pooling {pooling!r} (known: {', '.join(POOLINGS)})"
            )
        if int(output_size) < 1:
            raise ConfigError(
                f"roi_size: expected a positive integer, got {output_size!r}"
            )
        self.pooling = pooling
        self.output_size = int(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.spp = (
            SpatialPyramidPooling(spp_levels, spatial_scale)
            if pooling == "spp"
            else None
        )

    def output_length(self, channels: int) -> int:
        return (
            self.spp.output_length(channels)
            if self.spp is not None
            else channels * self.output_size**2
        )

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        if self.spp is not None:
            return self.spp(features, rois)
        size = (self.output_size, self.output_size)
        if self.pooling == "roi_pool":
            return roi_pool(features, rois, size, self.spatial_scale).flatten(1)
        return roi_align(
            features, rois, size, self.spatial_scale, self.sampling_ratio, aligned=True
        ).flatten(1)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}, output_size={self.output_size}, spatial_scale={self.spatial_scale}"


class RoIBoxHead(nn.Module):
    """``body`` (fc layers) then the ``K + 1`` classifier and ``4K`` class-specific box deltas."""

    def __init__(self, body: nn.Module, body_dim: int, num_classes: int) -> None:
        super().__init__()
        self.body = body
        self.cls_score = nn.Linear(body_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(body_dim, 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.body(x)
        return self.cls_score(x), self.bbox_pred(x)


def mlp_body(in_dim: int, dim: int) -> nn.Sequential:
    """Two new fully connected layers with ReLU (the head of non-VGG backbones)."""
    return nn.Sequential(
        nn.Linear(in_dim, dim),
        nn.ReLU(inplace=True),
        nn.Linear(dim, dim),
        nn.ReLU(inplace=True),
    )


class RoIHeads(nn.Module):
    """Sampling, pooling, head, losses and post-processing (module docstring).

    ``forward(features, proposals, image_sizes, targets=None)``: training (``targets`` given) returns
    ``{"roi_cls", "roi_box"}``; otherwise a list of per-image detections in the models' contract.
    """

    def __init__(
        self,
        pooler: RoIPooler,
        box_head: RoIBoxHead,
        *,
        num_classes: int,
        batch_size_per_image: int = 128,
        fg_fraction: float = 0.25,
        fg_iou: float = 0.5,
        bg_iou_high: float = 0.5,
        bg_iou_low: float = 0.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.3,
        detections_per_image: int = 100,
    ) -> None:
        super().__init__()
        self.pooler = pooler
        self.box_head = box_head
        self.num_classes = int(num_classes)
        self.batch_size_per_image, self.fg_fraction = (
            int(batch_size_per_image),
            float(fg_fraction),
        )
        self.fg_iou, self.bg_iou_high, self.bg_iou_low = (
            float(fg_iou),
            float(bg_iou_high),
            float(bg_iou_low),
        )
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.detections_per_image = int(detections_per_image)

    def sample(
        self,
        proposals: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        return_index: bool = False,
    ) -> tuple[Tensor, ...]:
        """One image: the sampled RoIs (``R x 4``, foreground first), their internal labels (``R``,
        0 = background) and their matched ground-truth boxes (``R x 4``, meaningful for foreground);
        with ``return_index`` also the matched ground-truth indices (``R``, for Mask R-CNN's targets)."""
        gt_boxes = gt_boxes.to(proposals.dtype)
        boxes = torch.cat((proposals, gt_boxes))
        if gt_boxes.shape[0] == 0:
            fg = boxes.new_zeros((0,), dtype=torch.long)
            bg = torch.arange(boxes.shape[0], device=boxes.device)
            idx = torch.zeros(boxes.shape[0], dtype=torch.long, device=boxes.device)
            gt_boxes = boxes.new_zeros((1, 4))
            gt_labels = gt_labels.new_zeros((1,))
        else:
            max_iou, idx = box_iou(boxes, gt_boxes).max(dim=1)
            fg = torch.nonzero(max_iou >= self.fg_iou).squeeze(1)
            bg = torch.nonzero(
                (max_iou < self.bg_iou_high) & (max_iou >= self.bg_iou_low)
            ).squeeze(1)
        num_fg = min(
            int(round(self.batch_size_per_image * self.fg_fraction)), fg.numel()
        )
        fg = fg[torch.randperm(fg.numel(), device=fg.device)[:num_fg]]
        num_bg = min(self.batch_size_per_image - num_fg, bg.numel())
        bg = bg[torch.randperm(bg.numel(), device=bg.device)[:num_bg]]
        keep = torch.cat((fg, bg))
        labels = to_internal(gt_labels[idx[keep]].long())
        labels[num_fg:] = 0
        if return_index:
            return boxes[keep], labels, gt_boxes[idx[keep]], idx[keep]
        return boxes[keep], labels, gt_boxes[idx[keep]]

    def losses(
        self,
        class_logits: Tensor,
        box_deltas: Tensor,
        rois: Tensor,
        labels: Tensor,
        matched: Tensor,
    ) -> dict[str, Tensor]:
        if labels.numel() == 0:
            zero = class_logits.sum() * 0.0 + box_deltas.sum() * 0.0
            return {"roi_cls": zero, "roi_box": zero.clone()}
        cls = F.cross_entropy(class_logits, labels)
        fg = torch.nonzero(labels > 0).squeeze(1)
        deltas = box_deltas.view(box_deltas.shape[0], -1, 4)[fg, labels[fg] - 1]
        target = encode(rois[fg, 1:], matched[fg], ROI_WEIGHTS)
        box = (
            F.smooth_l1_loss(deltas, target, beta=1.0, reduction="sum") / labels.numel()
        )
        return {"roi_cls": cls, "roi_box": box}

    @torch.no_grad()
    def postprocess(
        self,
        class_logits: Tensor,
        box_deltas: Tensor,
        rois: Tensor,
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        k = self.num_classes
        n = len(image_sizes)
        image_index = rois[:, 0].long()
        scores = torch.softmax(class_logits.float(), dim=1)[:, 1:]  # R x K
        boxes = decode(rois[:, 1:].float(), box_deltas.float(), ROI_WEIGHTS).view(
            -1, k, 4
        )
        boxes = clip_batch(boxes, image_index, image_sizes)
        labels = to_user(torch.arange(1, k + 1, device=boxes.device)).expand_as(
            scores
        )  # column j: internal j + 1
        image_index = image_index[:, None].expand_as(scores)
        boxes, scores, labels, image_index = (
            boxes.reshape(-1, 4),
            scores.reshape(-1),
            labels.reshape(-1),
            image_index.reshape(-1),
        )
        cand = torch.nonzero(scores > self.score_thresh).squeeze(1)
        cand = cand[remove_small_boxes(boxes[cand], 1e-2)]
        keep = cand[
            batched_nms(
                boxes[cand],
                scores[cand],
                image_index[cand] * k + labels[cand],
                self.nms_thresh,
            )
        ]
        keep, counts = top_per_image(keep, image_index, n, self.detections_per_image)
        out = []
        for b, s, l in zip(
            boxes[keep].split(counts),
            scores[keep].split(counts),
            labels[keep].split(counts),
        ):
            out.append({"boxes": b, "labels": l, "scores": s})
        return out

    def sample_batch(
        self, proposals: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]
    ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """:meth:`sample` for every image: the RoIs ``R x 5``, their labels and matched boxes, and
        each image's matched ground-truth indices (a list, one ``R_i`` tensor per image)."""
        sampled = [
            self.sample(p.detach(), t["boxes"], t["labels"], return_index=True)
            for p, t in zip(proposals, targets)
        ]
        rois = rois_from_boxes([s[0] for s in sampled])
        labels = torch.cat([s[1] for s in sampled])
        matched = torch.cat([s[2] for s in sampled])
        return rois, labels, matched, [s[3] for s in sampled]

    def forward(
        self,
        features: Tensor,
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if targets is not None:
            rois, labels, matched, _ = self.sample_batch(proposals, targets)
        else:
            rois = rois_from_boxes(list(proposals))
        rois = rois.to(features.dtype)
        class_logits, box_deltas = self.box_head(self.pooler(features, rois))
        if targets is not None:
            return self.losses(class_logits, box_deltas, rois, labels, matched)
        return self.postprocess(class_logits, box_deltas, rois, image_sizes)
