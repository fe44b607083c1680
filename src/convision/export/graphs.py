"""Export-friendly forms of the models: one tensor in, fixed tuples of tensors out, and detection
post-processing written with operators that ONNX has (``TopK``, ``NonMaxSuppression``,
``MaxRoiPool`` / ``RoiAlign``), for one image at a time.

The networks are the models' own modules (no weights are copied); only the glue around them is
restated here, so that a tracer records it as graph operators instead of Python control flow:

* segmentation: ``forward(images) -> logits`` as the model (``N x 3 x H x W`` normalised);
* classification: ``forward(images) -> logits`` (``N x 3 x S x S`` normalised);
* localization: ``forward(images) -> (logits, boxes)``, boxes normalised ``x1, y1, x2, y2``;
* Faster R-CNN (Ren et al. 2015) / Fast R-CNN (Girshick 2015): ``forward(image[, proposals]) ->
  (boxes, labels, scores)`` for one ``1 x 3 x H x W`` image in ``[0, 1]`` (already resized as the
  model's evaluation transform does), boxes in its pixels. The RPN's anchors, decoding, clipping,
  small-box removal, top-k and NMS and the RoI head's per-class decoding, score threshold and
  class-wise NMS are those of :mod:`convision.models.detection.rpn` / ``roi_heads`` restated for a
  single image (``batched_nms`` over one image is ``nms``; the per-class NMS is
  :func:`classwise_nms`). Nothing branches on the number of boxes in Python, which the tracer would
  freeze at the example's count;
* YOLOv1 (Redmon et al. 2016): ``forward(image, size) -> (boxes, labels, scores)`` for one
  ``1 x 3 x S x S`` image (already resized to the model's square input, in ``[0, 1]``) and the
  original ``(height, width)`` as an int64 tensor ``[2]``; boxes in original pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import nms

from convision.models.detection.box_coder import ROI_WEIGHTS, RPN_WEIGHTS, decode

__all__ = [
    "LocalizerGraph",
    "TwoStageGraph",
    "YOLOv1Graph",
    "classwise_nms",
    "clip_to",
    "keep_large",
]


def clip_to(boxes: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """Clip ``... x 4`` xyxy boxes to ``[0, width] x [0, height]`` (tensors: traced, not constants)."""
    x = boxes[..., 0::2].clamp(min=0.0)
    y = boxes[..., 1::2].clamp(min=0.0)
    x = torch.minimum(x, width.to(boxes.dtype))
    y = torch.minimum(y, height.to(boxes.dtype))
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def keep_large(boxes: Tensor, min_size: float) -> Tensor:
    """Boolean mask of the boxes at least ``min_size`` wide and high (:func:`torchvision.ops.remove_small_boxes`)."""
    return ((boxes[:, 2] - boxes[:, 0]) >= min_size) & (
        (boxes[:, 3] - boxes[:, 1]) >= min_size
    )


def classwise_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    iou: float,
    height: Tensor,
    width: Tensor,
) -> Tensor:
    """NMS within each class, as :func:`torchvision.ops.batched_nms` (its coordinate trick: each
    class's boxes shifted apart so that one NMS never compares two classes), with the shift
    ``max(height, width) + 1`` taken from the image instead of the boxes (they are clipped to it), so
    that no Python branch on the number of boxes is traced (batched_nms returns early on none)."""
    offset = (torch.maximum(height, width) + 1).to(boxes.dtype)
    return nms(boxes + (labels.to(boxes.dtype) * offset)[:, None], scores, iou)


def _size(x: Tensor, dim: int) -> Tensor:
    """``x.shape[dim]`` as a 0-d int64 tensor, so the tracer keeps it symbolic."""
    return torch._shape_as_tensor(x)[dim]


class LocalizerGraph(nn.Module):
    """A :class:`~convision.models.localization.Localizer` returning ``(logits, boxes)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(images)
        return out["logits"], out["boxes"]


class TwoStageGraph(nn.Module):
    """Faster R-CNN (proposals from its RPN) or Fast R-CNN (``proposals`` an input, ``P x 4`` xyxy
    pixels of the image) for one image; see the module docstring."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.has_rpn = hasattr(model, "rpn")

    def anchors(self, features: Tensor) -> Tensor:
        grid = self.model.rpn.anchors
        h, w = _size(features, 2), _size(features, 3)
        sx = torch.arange(w, dtype=torch.float32, device=features.device) * grid.stride
        sy = torch.arange(h, dtype=torch.float32, device=features.device) * grid.stride
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
        return (shifts + grid.base[None]).reshape(-1, 4)

    def propose(self, features: Tensor, height: Tensor, width: Tensor) -> Tensor:
        rpn = self.model.rpn
        logits, deltas = rpn.head(features)
        scores = torch.softmax(logits[0].float(), dim=-1)[:, 1]
        boxes = clip_to(
            decode(self.anchors(features), deltas[0].float(), RPN_WEIGHTS),
            height,
            width,
        )
        scores = torch.where(
            keep_large(boxes, rpn.min_size),
            scores,
            torch.full_like(scores, float("-inf")),
        )
        k = torch.clamp(_size(scores, 0), max=rpn.pre_nms[False])
        scores, idx = scores.topk(k)
        boxes = boxes[idx]
        valid = torch.isfinite(scores)
        boxes, scores = boxes[valid], scores[valid]
        keep = nms(boxes, scores, rpn.nms_thresh)[: rpn.post_nms[False]]
        return boxes[keep]

    def forward(
        self, image: Tensor, proposals: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        m = self.model
        heads = m.roi_heads
        x = (image - m.mean.view(1, 3, 1, 1)) / m.std.view(1, 3, 1, 1)
        height, width = _size(image, 2), _size(image, 3)
        features = m.body(x)
        if self.has_rpn:
            proposals = self.propose(features, height, width)
        proposals = proposals.to(features.dtype)
        rois = torch.cat((torch.zeros_like(proposals[:, :1]), proposals), dim=1)
        class_logits, box_deltas = heads.box_head(heads.pooler(features, rois))
        k = heads.num_classes
        scores = torch.softmax(class_logits.float(), dim=1)[
            :, 1:
        ]  # P x K, column j = user class j
        boxes = clip_to(
            decode(proposals.float(), box_deltas.float(), ROI_WEIGHTS).reshape(
                -1, k, 4
            ),
            height,
            width,
        )
        labels = torch.arange(k, device=boxes.device).expand_as(scores)
        boxes, scores, labels = (
            boxes.reshape(-1, 4),
            scores.reshape(-1),
            labels.reshape(-1),
        )
        cand = (scores > heads.score_thresh) & keep_large(boxes, 1e-2)
        boxes, scores, labels = boxes[cand], scores[cand], labels[cand]
        keep = classwise_nms(boxes, scores, labels, heads.nms_thresh, height, width)[
            : heads.detections_per_image
        ]
        return boxes[keep], labels[keep], scores[keep]


class YOLOv1Graph(nn.Module):
    """YOLOv1's grid and its test-time decoding (:meth:`YOLOv1.postprocess`) for one resized image."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, size: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m = self.model
        s, b, k = m.grid, m.boxes_per_cell, m.num_classes
        out = m.predict_grid((image - m.mean[None]) / m.std[None])[
            0
        ].float()  # S x S x (B*5 + C)
        cells = out[..., : b * 5].reshape(s, s, b, 5)
        rows = torch.arange(s, dtype=out.dtype).view(s, 1, 1)
        cols = torch.arange(s, dtype=out.dtype).view(1, s, 1)
        xyxy = m._decode_cells(cells[..., :4], rows, cols)  # S x S x B x 4, normalised
        conf = cells[..., 4].clamp(0, 1)
        prob = out[..., b * 5 :].clamp(0, 1)
        scores = (conf[..., None] * prob[..., None, :]).reshape(-1)  # S*S*B*C
        height, width = size[0].to(out.dtype), size[1].to(out.dtype)
        scale = torch.stack((width, height, width, height))
        boxes = clip_to(
            (xyxy.reshape(-1, 1, 4) * scale).expand(-1, k, 4).reshape(-1, 4),
            height,
            width,
        )
        labels = torch.arange(k).expand(s * s * b, k).reshape(-1)
        cand = (scores > m.score_threshold) & keep_large(boxes, 1e-3)
        boxes, scores, labels = boxes[cand], scores[cand], labels[cand]
        keep = classwise_nms(boxes, scores, labels, m.nms_threshold, height, width)[
            : m.detections_per_image
        ]
        return boxes[keep], labels[keep], scores[keep]
