"""Region Proposal Network (Ren, He, Girshick, Sun 2015, "Faster R-CNN: Towards Real-Time Object
Detection with Region Proposal Networks", section 3.1).

* Head: a 3x3 convolution (512 channels on VGG16 in the paper; here ``mid_channels``) + ReLU, then
  two sibling 1x1 convolutions: ``2k`` objectness scores and ``4k`` box deltas for the ``k`` anchors of
  each position. The scores are a 2-way softmax per anchor (background / object), as in the paper
  and py-faster-rcnn (not a sigmoid); channel ``a`` is anchor ``a``'s background logit and channel
  ``k + a`` its object logit (py-faster-rcnn's ``rpn_cls_score`` layout). Weights ~ N(0, 0.01).
* Training targets (section 3.1.2): an anchor is positive if its IoU with some ground-truth box is
  >= 0.7 or if it is (one of) the highest-IoU anchor(s) of a ground-truth box, negative if its IoU
  with every box is < 0.3, otherwise ignored. Anchors that cross the image boundary are ignored
  during training (section 3.3; ``allowed_border`` pixels of slack, 0 as in py-faster-rcnn). A
  ground-truth box that no inside anchor overlaps at all does not make every anchor positive
  (py-faster-rcnn's tie rule would, at IoU 0). 256 anchors per image are sampled, at most half
  positive, the rest negative.
* Loss (eq. 1): ``L = 1/N_cls sum L_cls + lambda/N_reg sum p* L_reg``. The paper uses
  ``N_cls = 256``, ``N_reg ~ 2400`` (anchor locations) and ``lambda = 10``, i.e. both terms weighted
  about equally; we use py-faster-rcnn's equivalent form: both sums divided by the number of sampled
  anchors (``N_cls``) and ``lambda = 1``. ``L_reg`` is smooth L1 with py-faster-rcnn's ``sigma = 3``,
  i.e. ``beta = 1 / sigma^2 = 1/9``; targets are :func:`encode` with :data:`RPN_WEIGHTS`.
* Proposals: decode every anchor, clip to the image's own size, drop boxes narrower or lower than
  ``min_size``, keep the ``pre_nms`` best by object probability, NMS at 0.7, keep ``post_nms``
  (12000 -> 2000 in training, 6000 -> 300 at test by default). py-faster-rcnn's ``min_size`` is 16 px
  at the training scale; our default is 1 px because the built-in scenes have objects of ~6 px.
  The whole batch goes through one ``batched_nms`` call (the image index as the group).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import (
    batched_nms,
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
)

from convision.models.detection.anchors import AnchorGrid
from convision.models.detection.box_coder import RPN_WEIGHTS, decode, encode

__all__ = ["RPNHead", "RegionProposalNetwork", "clip_batch", "top_per_image"]


def clip_batch(
    boxes: Tensor, image_index: Tensor | None, image_sizes: Sequence[tuple[int, int]]
) -> Tensor:
    """Clip boxes ``(..., 4)`` to their image's ``(height, width)``. ``boxes`` is either ``N x ... x 4``
    (``image_index`` None: the first dimension is the image) or ``R x ... x 4`` with ``image_index``
    (``R``). One :func:`clip_boxes_to_image` call when all images have the same size."""
    if len(set(image_sizes)) <= 1:
        return clip_boxes_to_image(boxes, image_sizes[0]) if image_sizes else boxes
    out = torch.empty_like(boxes)
    for i, size in enumerate(image_sizes):
        if image_index is None:
            out[i] = clip_boxes_to_image(boxes[i], size)
        else:
            sel = image_index == i
            out[sel] = clip_boxes_to_image(boxes[sel], size)
    return out


def top_per_image(
    keep: Tensor, image_index: Tensor, num_images: int, limit: int
) -> tuple[Tensor, list[int]]:
    """``keep`` (indices sorted by decreasing score, as ``batched_nms`` returns them) regrouped by
    image (``image_index[keep]``), score order kept inside an image, at most ``limit`` per image.
    Returns the indices and the per-image counts."""
    img = image_index[keep]
    order = torch.sort(img, stable=True).indices
    keep, img = keep[order], img[order]
    counts = torch.bincount(img, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(img.numel(), device=img.device) - starts[img]
    sel = rank < limit
    return keep[sel], counts.clamp(max=limit).tolist()


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs to ``2 * num_anchors`` scores and ``4 * num_anchors`` deltas.

    ``forward(features) -> (logits N x HWA x 2, deltas N x HWA x 4)``, anchors ordered as
    :class:`AnchorGrid` (position-major).
    """

    def __init__(self, in_channels: int, mid_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(mid_channels, 2 * num_anchors, 1)
        self.bbox_pred = nn.Conv2d(mid_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        n, _, h, w = features.shape
        a = self.num_anchors
        t = F.relu(self.conv(features))
        logits = (
            self.cls_logits(t)
            .view(n, 2, a, h, w)
            .permute(0, 3, 4, 2, 1)
            .reshape(n, h * w * a, 2)
        )
        deltas = (
            self.bbox_pred(t)
            .view(n, a, 4, h, w)
            .permute(0, 3, 4, 1, 2)
            .reshape(n, h * w * a, 4)
        )
        return logits, deltas


class RegionProposalNetwork(nn.Module):
    """Anchors + :class:`RPNHead` + target assignment, losses and proposals (module docstring).

    ``forward(features, image_sizes, gt_boxes=None) -> (proposals, losses)``: ``features`` the
    ``N x C x h x w`` stride-``stride`` map of the padded batch, ``image_sizes`` each image's own
    ``(height, width)``, ``gt_boxes`` a list of ``G_i x 4`` boxes (training only; losses ``rpn_cls``
    and ``rpn_box``, empty dict otherwise). ``proposals``: a list of ``P_i x 4`` boxes (no gradient).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        mid_channels: int = 512,
        anchor_sizes: Sequence[float] = (128, 256, 512),
        anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        stride: int = 16,
        fg_iou: float = 0.7,
        bg_iou: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        allowed_border: float = 0.0,
        pre_nms_train: int = 12000,
        post_nms_train: int = 2000,
        pre_nms_test: int = 6000,
        post_nms_test: int = 300,
        nms_thresh: float = 0.7,
        min_size: float = 1.0,
        beta: float = 1.0 / 9.0,
    ) -> None:
        super().__init__()
        self.anchors = AnchorGrid(anchor_sizes, anchor_ratios, stride)
        self.head = RPNHead(in_channels, mid_channels, self.anchors.num_anchors)
        self.fg_iou, self.bg_iou = float(fg_iou), float(bg_iou)
        self.batch_size_per_image, self.positive_fraction = (
            int(batch_size_per_image),
            float(positive_fraction),
        )
        self.allowed_border = float(allowed_border)
        self.pre_nms = {True: int(pre_nms_train), False: int(pre_nms_test)}
        self.post_nms = {True: int(post_nms_train), False: int(post_nms_test)}
        self.nms_thresh, self.min_size, self.beta = (
            float(nms_thresh),
            float(min_size),
            float(beta),
        )

    # ---- training targets -------------------------------------------------------------------
    def assign_targets(
        self, anchors: Tensor, gt: Tensor, image_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Sampled labels (``M``: 1 positive, 0 negative, -1 ignored) and the matched ground-truth
        box of every anchor (``M x 4``; meaningful for positives) for one image."""
        h, w = image_size
        b = self.allowed_border
        inside = (
            (anchors[:, 0] >= -b)
            & (anchors[:, 1] >= -b)
            & (anchors[:, 2] <= w + b)
            & (anchors[:, 3] <= h + b)
        )
        labels = torch.full(
            (anchors.shape[0],), -1, dtype=torch.long, device=anchors.device
        )
        if gt.numel() == 0:
            labels[inside] = 0
            matched = torch.zeros_like(anchors)
        else:
            iou = box_iou(anchors, gt.to(anchors.dtype))
            iou[~inside] = -1.0
            max_iou, idx = iou.max(dim=1)
            matched = gt.to(anchors.dtype)[idx]
            labels[inside & (max_iou < self.bg_iou)] = 0
            gt_best = iou.max(dim=0).values
            best = ((iou == gt_best[None]) & (gt_best[None] > 0)).any(dim=1)
            labels[best] = 1
            labels[max_iou >= self.fg_iou] = 1
        # sampling: at most positive_fraction positives, negatives fill up to batch_size_per_image
        pos = torch.nonzero(labels == 1).squeeze(1)
        max_pos = int(self.batch_size_per_image * self.positive_fraction)
        if pos.numel() > max_pos:
            labels[pos[torch.randperm(pos.numel(), device=pos.device)[max_pos:]]] = -1
        num_neg = self.batch_size_per_image - min(pos.numel(), max_pos)
        neg = torch.nonzero(labels == 0).squeeze(1)
        if neg.numel() > num_neg:
            labels[neg[torch.randperm(neg.numel(), device=neg.device)[num_neg:]]] = -1
        return labels, matched

    def losses(
        self,
        logits: Tensor,
        deltas: Tensor,
        anchors: Tensor,
        image_sizes: Sequence[tuple[int, int]],
        gt_boxes: Sequence[Tensor],
    ) -> dict[str, Tensor]:
        labels, matched = zip(
            *(self.assign_targets(anchors, g, s) for g, s in zip(gt_boxes, image_sizes))
        )
        labels_t = torch.stack(labels)  # N x M
        matched_t = torch.stack(matched)  # N x M x 4
        sampled = labels_t >= 0
        num = int(sampled.sum())
        if (
            num == 0
        ):  # every anchor crosses the boundary: nothing to learn from, keep the graph
            zero = logits.sum() * 0.0 + deltas.sum() * 0.0
            return {"rpn_cls": zero, "rpn_box": zero.clone()}
        cls = F.cross_entropy(logits[sampled], labels_t[sampled], reduction="sum") / num
        pos = labels_t == 1
        ref = anchors.unsqueeze(0).expand_as(matched_t)[pos]
        target = encode(ref, matched_t[pos], RPN_WEIGHTS)
        box = (
            F.smooth_l1_loss(deltas[pos], target, beta=self.beta, reduction="sum") / num
        )
        return {"rpn_cls": cls, "rpn_box": box}

    # ---- proposals ----------------------------------------------------------------------------
    @torch.no_grad()
    def propose(
        self,
        logits: Tensor,
        deltas: Tensor,
        anchors: Tensor,
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Tensor]:
        """Per-image proposals (``P_i x 4``, best first) from the whole batch's head outputs."""
        n, m = logits.shape[:2]
        scores = torch.softmax(logits.float(), dim=-1)[
            ..., 1
        ]  # N x M object probability
        boxes = decode(
            anchors.float().repeat(n, 1), deltas.float().reshape(-1, 4), RPN_WEIGHTS
        ).view(n, m, 4)
        boxes = clip_batch(boxes, None, image_sizes)
        small = torch.ones(n * m, dtype=torch.bool, device=boxes.device)
        small[remove_small_boxes(boxes.view(-1, 4), self.min_size)] = False
        scores = scores.masked_fill(small.view(n, m), float("-inf"))
        k = min(self.pre_nms[self.training], m)
        scores, idx = scores.topk(k, dim=1)
        boxes = boxes.gather(1, idx.unsqueeze(-1).expand(-1, -1, 4))
        image_index = torch.arange(n, device=boxes.device).repeat_interleave(k)
        boxes, scores = boxes.reshape(-1, 4), scores.reshape(-1)
        valid = torch.nonzero(torch.isfinite(scores)).squeeze(1)
        keep = valid[
            batched_nms(
                boxes[valid], scores[valid], image_index[valid], self.nms_thresh
            )
        ]
        keep, counts = top_per_image(keep, image_index, n, self.post_nms[self.training])
        return list(boxes[keep].split(counts))

    def forward(
        self,
        features: Tensor,
        image_sizes: Sequence[tuple[int, int]],
        gt_boxes: Sequence[Tensor] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        logits, deltas = self.head(features)
        anchors = self.anchors(features.shape[-2], features.shape[-1], features.device)
        proposals = self.propose(logits.detach(), deltas.detach(), anchors, image_sizes)
        losses = (
            self.losses(logits, deltas, anchors, image_sizes, gt_boxes)
            if gt_boxes is not None
            else {}
        )
        return proposals, losses
