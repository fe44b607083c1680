"""Mask R-CNN (He, Gkioxari, Dollár, Girshick 2017, "Mask R-CNN"): convision's Faster R-CNN plus a
small fully convolutional mask branch, run in parallel with the box head on the same RoIs.

What the paper contributes and how it is done here:

* **RoIAlign** (section 3, "RoIAlign"): bilinear sampling at regularly spaced points of each RoI bin,
  no quantisation of the RoI or its bins. The mask branch pools every RoI to ``14 x 14`` from the
  stride-16 body (:func:`torchvision.ops.roi_align`, ``aligned=True``, 2 samples per bin side, as the
  paper's 4 sampling points per bin). The box head uses RoIAlign too by default (``pooling="roi_align"``,
  7 x 7).
* **Mask head** (figure 4, right, the FPN head): four ``3 x 3`` convolutions of 256 channels with
  ReLU, a ``2 x 2`` stride-2 transposed convolution (14 -> 28) with ReLU, and a ``1 x 1`` convolution
  to ``K`` mask logits of ``28 x 28``: one mask per class, so that masks do not compete between
  classes (section 3, "Mask Representation"). Our body is a single stride-16 map (the paper's C4
  setting); the paper pairs this 4-conv head with FPN, its C4 head is ResNet's res5 instead.
* **Mask loss** (section 3, "Multi-task loss" and "Training"): the average per-pixel binary
  cross-entropy of the sigmoid of the mask of the RoI's ground-truth class ``k`` only (the other
  ``K - 1`` masks get no loss), on positive RoIs only (IoU >= 0.5 with a ground-truth box). The
  target is "the intersection between an RoI and its associated ground-truth mask": the ground-truth
  mask resampled into the RoI's ``28 x 28`` grid (:func:`mask_targets`: RoIAlign of the full-image
  binary mask with the RoI box, then ``>= 0.5``). ``L = L_cls + L_box + L_mask`` (the RPN losses added).
* **Inference** (section 3.1, "Inference"): the box branch runs first (NMS, the best
  ``detections_per_image`` boxes, the paper's 100); the mask branch then runs on those boxes only
  and the ``k``-th mask is taken for the predicted class ``k``; the ``28 x 28`` float mask is resized
  to the box in the image and binarised at 0.5 (:func:`paste_masks`).

``forward(images, targets=None)`` keeps the detection contract (:mod:`convision.models.detection`)
with one more target key, ``"masks"`` (``N x H x W`` bool / uint8, pixels of the given tensor), and
two more outputs per image: ``"masks"`` (``M x H x W`` bool, pasted and thresholded) and
``"mask_probs"`` (``M x 28 x 28`` float, the predicted class's sigmoid, to paste at another
resolution, e.g. the original image's). Training losses: ``rpn_cls``, ``rpn_box``, ``roi_cls``,
``roi_box``, ``roi_mask``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from convision.errors import ConfigError
from convision.models.detection.faster_rcnn import FasterRCNN, faster_rcnn
from convision.models.detection.roi_heads import RoIHeads, rois_from_boxes
from convision.models.detection.rpn import RegionProposalNetwork

__all__ = [
    "MaskHead",
    "MaskRCNN",
    "mask_rcnn",
    "mask_targets",
    "mask_loss",
    "paste_masks",
]


class MaskHead(nn.Module):
    """``R x C x 14 x 14`` RoI features -> ``R x K x 28 x 28`` mask logits (module docstring).

    Init: He (MSRA) normal, fan-out, for the convolutions, as in the paper's code (Detectron).

    The ``2 x 2`` stride-2 transposed convolution (``self.upsample``, its parameters) has a kernel as
    large as its stride, so its outputs do not overlap: output pixel ``(2i + a, 2j + b)`` is a linear
    map of input pixel ``(i, j)`` alone, with the kernel tap ``(a, b)``. It is computed as that: one
    ``1 x 1`` convolution to ``4 C`` channels (the four taps), the ReLU and the ``1 x 1`` predictor on
    each tap, then a pixel shuffle of the ``4 K`` logits: plain matrix products, faster on a CPU than
    ``conv_transpose2d`` followed by a shuffle-free head (same outputs and gradients; tested)."""

    def __init__(
        self, in_channels: int, num_classes: int, dim: int = 256, num_convs: int = 4
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = int(in_channels)
        for _ in range(int(num_convs)):
            layers += [nn.Conv2d(c, dim, 3, padding=1), nn.ReLU(inplace=True)]
            c = dim
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(dim, dim, 2, stride=2)
        self.predictor = nn.Conv2d(dim, int(num_classes), 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)

    def forward(self, x: Tensor) -> Tensor:
        # = predictor(relu(upsample(convs(x)))): the ReLU and the 1x1 predictor act pixel by pixel,
        # so they run before the pixel shuffle, on each of the four taps (weight kron(W, I_4)), and
        # the shuffle moves K channels instead of 4 C
        up, pred = self.upsample, self.predictor
        c_in, c_out = up.weight.shape[:2]
        y = F.conv2d(
            self.convs(x),
            up.weight.permute(1, 2, 3, 0).reshape(c_out * 4, c_in, 1, 1),
            up.bias.repeat_interleave(4),
        )
        eye = torch.eye(4, dtype=y.dtype, device=y.device)
        weight = torch.kron(pred.weight.flatten(1), eye)[:, :, None, None]
        logits = F.conv2d(F.relu(y), weight, pred.bias.repeat_interleave(4))
        if logits.shape[0] == 0:  # pixel_shuffle's backward fails on an empty batch
            h, w = logits.shape[2:]
            return logits.reshape(0, logits.shape[1] // 4, 2 * h, 2 * w)
        return F.pixel_shuffle(logits, 2)


def mask_targets(
    gt_masks: Tensor, boxes: Tensor, gt_index: Tensor, size: int = 28
) -> Tensor:
    """The ``R x size x size`` {0, 1} float targets of ``R`` RoIs (``boxes`` xyxy in the mask's
    pixels) matched to the ground-truth masks ``gt_masks[gt_index]`` (``G x H x W``): each mask
    resampled into its RoI's grid with RoIAlign (bilinear, ``aligned=True``: output pixel ``i`` of
    a box ``[x1, x2]`` averages samples around ``x1 + (i + 0.5) (x2 - x1) / size``) and thresholded at
    0.5, i.e. the intersection of the RoI and the mask, at the mask head's resolution."""
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, size, size))
    rois = torch.cat((gt_index.to(boxes.dtype)[:, None], boxes), dim=1)
    sampled = roi_align(
        gt_masks[:, None].to(boxes.dtype),
        rois,
        (size, size),
        spatial_scale=1.0,
        sampling_ratio=2,
        aligned=True,
    )
    return (sampled[:, 0] >= 0.5).to(boxes.dtype)


def mask_loss(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Mean per-pixel binary cross-entropy between the mask of each RoI's class (``labels``: internal
    ids ``1..K``, positives only) among ``logits`` (``R x K x M x M``) and ``targets`` (``R x M x M``)."""
    if labels.numel() == 0:
        return logits.sum() * 0.0
    picked = logits[torch.arange(labels.numel(), device=labels.device), labels - 1]
    return F.binary_cross_entropy_with_logits(picked, targets.to(picked.dtype))


def paste_masks(
    probs: Tensor,
    boxes: Tensor,
    image_size: Sequence[int],
    threshold: float | None = 0.5,
) -> Tensor:
    """Paste ``D`` small masks (``D x M x M`` probabilities) into a ``(H, W)`` image at ``boxes``
    (``D x 4`` xyxy pixels): each pixel whose centre lies inside a box takes the bilinear sample of
    that box's mask at its position (the mask's ``M x M`` cells tile the box exactly, as the targets
    of :func:`mask_targets`); pixels outside the box are 0. Returns ``D x H x W`` bool (``>= threshold``)
    or, with ``threshold=None``, the float probabilities."""
    h, w = int(image_size[0]), int(image_size[1])
    n = probs.shape[0]
    out = probs.new_zeros((n, h, w))
    if n == 0:
        return out if threshold is None else out >= threshold
    boxes = boxes.to(probs.dtype)
    # columns j with centre j + 0.5 in [x1, x2] (rows alike), clipped to the image
    c0 = torch.ceil(boxes[:, 0] - 0.5).clamp(0, w).long()
    c1 = (torch.floor(boxes[:, 2] - 0.5) + 1).clamp(0, w).long()
    r0 = torch.ceil(boxes[:, 1] - 0.5).clamp(0, h).long()
    r1 = (torch.floor(boxes[:, 3] - 0.5) + 1).clamp(0, h).long()
    wmax = int((c1 - c0).clamp(min=1).max())
    hmax = int((r1 - r0).clamp(min=1).max())
    # one batched bilinear sampling on a window as large as the largest box; each mask's cells tile
    # its box: normalised -1 / 1 are the box's edges (align_corners=False)
    xs = c0[:, None] + torch.arange(wmax, device=probs.device) + 0.5
    ys = r0[:, None] + torch.arange(hmax, device=probs.device) + 0.5
    bw = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6)[:, None]
    bh = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)[:, None]
    gx = 2 * (xs - boxes[:, 0:1]) / bw - 1
    gy = 2 * (ys - boxes[:, 1:2]) / bh - 1
    grid = torch.stack(
        (gx[:, None, :].expand(n, hmax, wmax), gy[:, :, None].expand(n, hmax, wmax)),
        dim=-1,
    )
    sampled = F.grid_sample(
        probs[:, None],
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )[:, 0]
    for d, (a, b, c, e) in enumerate(
        zip(r0.tolist(), r1.tolist(), c0.tolist(), c1.tolist())
    ):
        if b > a and e > c:
            out[d, a:b, c:e] = sampled[d, : b - a, : e - c]
    return out if threshold is None else out >= threshold


class MaskRCNN(FasterRCNN):
    """Faster R-CNN with the mask branch (module docstring)."""

    def __init__(
        self,
        body: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
        mask_head: MaskHead,
        *,
        mask_roi_size: int = 14,
        mask_thresh: float = 0.5,
        spatial_scale: float = 1.0 / 16,
    ) -> None:
        super().__init__(body, rpn, roi_heads)
        self.mask_head = mask_head
        self.mask_roi_size = int(mask_roi_size)
        self.mask_thresh = float(mask_thresh)
        self.spatial_scale = float(spatial_scale)

    def mask_logits(self, features: Tensor, rois: Tensor) -> Tensor:
        """RoIAlign (``mask_roi_size``, 2 samples per bin side) of ``rois`` (``R x 5``) -> mask logits."""
        pooled = roi_align(
            features,
            rois.to(features.dtype),
            (self.mask_roi_size, self.mask_roi_size),
            self.spatial_scale,
            2,
            aligned=True,
        )
        return self.mask_head(pooled)

    def device_targets(
        self,
        targets: Sequence[dict[str, Tensor]],
        x: Tensor,
        sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Faster R-CNN's checked targets plus ``masks`` (``N x H x W`` per image, checked)."""
        out = super().device_targets(targets, x, sizes)
        for t, o, (h, w) in zip(targets, out, sizes):
            m = t.get("masks")
            if m is None:
                raise ValueError(
                    "targets: Mask R-CNN needs 'masks' (N x H x W) per image"
                )
            if m.dim() != 3 or m.shape[0] != t["boxes"].shape[0]:
                raise ValueError(
                    f"targets: expected masks N x H x W with N = {t['boxes'].shape[0]} boxes, got {tuple(m.shape)}"
                )
            if tuple(m.shape[1:]) != (h, w):
                raise ValueError(
                    f"targets: masks are {tuple(m.shape[1:])} but the image is {(h, w)}"
                )
            o["masks"] = m.to(x.device)
        return out

    def forward(
        self,
        images: Sequence[Tensor],
        targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        features, proposals, rpn_losses, sizes, targets = self.features_and_proposals(
            images, targets
        )
        heads = self.roi_heads
        if self.training:
            rois, labels, matched, gt_index = heads.sample_batch(proposals, targets)
            rois = rois.to(features.dtype)
            class_logits, box_deltas = heads.box_head(heads.pooler(features, rois))
            losses = heads.losses(class_logits, box_deltas, rois, labels, matched)
            # positives only; their targets image by image (each image's masks have its own size)
            counts = [len(g) for g in gt_index]
            pos = torch.nonzero(labels > 0).squeeze(1)
            targets_pos = []
            for i, (r, lab, g) in enumerate(
                zip(rois.split(counts), labels.split(counts), gt_index)
            ):
                p = torch.nonzero(lab > 0).squeeze(1)
                targets_pos.append(
                    mask_targets(targets[i]["masks"], r[p, 1:], g[p], self.mask_size)
                )
            logits = self.mask_logits(features, rois[pos])
            losses["roi_mask"] = mask_loss(logits, labels[pos], torch.cat(targets_pos))
            return {**rpn_losses, **losses}
        detections = heads(features, proposals, sizes)
        boxes = [d["boxes"] for d in detections]
        rois = rois_from_boxes(boxes)
        internal = torch.cat([d["labels"] for d in detections]) + 1
        if rois.shape[0]:
            logits = self.mask_logits(features, rois)
            probs = torch.sigmoid(
                logits[torch.arange(internal.numel(), device=rois.device), internal - 1]
            )
        else:
            probs = features.new_zeros((0, self.mask_size, self.mask_size))
        for d, p, size in zip(detections, probs.split([len(b) for b in boxes]), sizes):
            d["mask_probs"] = p
            d["masks"] = paste_masks(p, d["boxes"], size, self.mask_thresh)
        return detections

    @property
    def mask_size(self) -> int:
        """Side of the predicted masks: twice the RoIAlign size (the transposed convolution)."""
        return 2 * self.mask_roi_size


def mask_rcnn(
    *,
    num_classes: int,
    pooling: str = "roi_align",
    mask_roi_size: int = 14,
    mask_dim: int = 256,
    mask_thresh: float = 0.5,
    **kwargs: Any,
) -> MaskRCNN:
    """Mask R-CNN (module docstring) for ``num_classes`` user classes: :func:`faster_rcnn` with
    ``kwargs`` (backbone, weights, anchors, ...; RoIAlign for the box head by default, as the paper)
    plus the mask head (``mask_dim`` channels, RoIAlign ``mask_roi_size``, masks of twice that side)."""
    if int(mask_roi_size) < 1 or int(mask_dim) < 1:
        raise ConfigError(
            f"mask_roi_size / mask_dim: expected positive integers, got {mask_roi_size}, {mask_dim}"
        )
    if not 0.0 < float(mask_thresh) < 1.0:
        raise ConfigError(f"mask_thresh: expected a value in (0, 1), got {mask_thresh}")
    base = faster_rcnn(num_classes=num_classes, pooling=pooling, **kwargs)
    channels = [m for m in base.body.modules() if isinstance(m, nn.Conv2d)][
        -1
    ].out_channels
    return MaskRCNN(
        base.body,
        base.rpn,
        base.roi_heads,
        MaskHead(channels, int(num_classes), int(mask_dim)),
        mask_roi_size=mask_roi_size,
        mask_thresh=mask_thresh,
    )
