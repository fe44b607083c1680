"""Fast R-CNN (Girshick 2015, "Fast R-CNN"): one conv pass over the whole image, each external
proposal (e.g. selective search) pooled from the shared map and classified by a ``K + 1``-way softmax
with class-specific box regression, trained end to end with the multi-task loss.

The conv bodies, RoI pooling options (``"roi_pool"`` as the paper, ``"roi_align"``, ``"spp"`` for
SPP-net's pyramid) and the RoI head are those of :mod:`convision.models.detection.faster_rcnn` and
:mod:`convision.models.detection.roi_heads`. Paper settings kept: 128 RoIs per image (the paper
uses 2 images x 64 RoIs per mini-batch), 25 % foreground at IoU >= 0.5, background IoU in
``[0.1, 0.5)`` (``bg_iou_low``), NMS 0.3 at test. Not implemented: multi-scale training/testing and
the truncated-SVD compression of the fc layers (section 3.1).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from convision.errors import ConfigError
from convision.models.detection.faster_rcnn import (
    TwoStageDetector,
    build_body,
    build_roi_heads,
)
from convision.models.detection.roi_heads import RoIHeads

__all__ = ["FastRCNN", "fast_rcnn"]


class FastRCNN(TwoStageDetector):
    """``forward(images, targets=None, proposals=None)``: ``proposals`` (required) is a list of
    ``P_i x 4`` xyxy boxes in pixels of each image; otherwise the detection contract
    (:mod:`convision.models.detection`), training losses ``roi_cls`` and ``roi_box``."""

    def __init__(self, body: nn.Module, roi_heads: RoIHeads) -> None:
        super().__init__()
        self.body = body
        self.roi_heads = roi_heads
        self.num_classes = roi_heads.num_classes

    def forward(
        self,
        images: Sequence[Tensor],
        targets: Sequence[dict[str, Tensor]] | None = None,
        proposals: Sequence[Tensor] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        x, sizes = self.prepare(images)
        if proposals is None or len(proposals) != len(sizes):
            raise ValueError(
                f"proposals: Fast R-CNN needs one P x 4 box tensor per image ({len(sizes)}), got {None if proposals is None else len(proposals)}"
            )
        if any(p.dim() != 2 or p.shape[1] != 4 for p in proposals):
            raise ValueError("proposals: expected P x 4 xyxy boxes per image")
        proposals = [p.to(x.device, x.dtype) for p in proposals]
        if self.training:
            self.check_targets(targets, len(sizes), self.num_classes)
            targets = [
                {
                    "boxes": t["boxes"].to(x.device, x.dtype),
                    "labels": t["labels"].to(x.device),
                }
                for t in targets
            ]
        features = self.body(x)
        return self.roi_heads(
            features, proposals, sizes, targets if self.training else None
        )


def fast_rcnn(
    *,
    num_classes: int,
    backbone: str = "mobilenet_v2",
    weights: str | None = "IMAGENET1K_V1",
    pooling: str = "roi_pool",
    roi_size: int = 7,
    spp_levels: Sequence[int] = (6, 3, 2, 1),
    head_dim: int = 1024,
    roi_batch_size: int = 128,
    bg_iou_low: float = 0.1,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.3,
    detections_per_image: int = 100,
    freeze_early: bool = True,
    freeze_bn: bool | None = None,
    dilated_tail: bool = True,
) -> FastRCNN:
    """Fast R-CNN (module docstring) for ``num_classes`` user classes; options as :func:`faster_rcnn`."""
    if int(num_classes) < 1:
        raise ConfigError(
            f"num_classes: expected a positive integer, got {num_classes!r}"
        )
    body, channels, classifier = build_body(
        backbone,
        weights,
        freeze_early=freeze_early,
        freeze_bn=freeze_bn,
        dilated_tail=dilated_tail,
    )
    heads = build_roi_heads(
        channels=channels,
        num_classes=int(num_classes),
        classifier=classifier,
        pooling=pooling,
        roi_size=roi_size,
        spp_levels=spp_levels,
        head_dim=head_dim,
        batch_size_per_image=roi_batch_size,
        bg_iou_low=bg_iou_low,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_image=detections_per_image,
    )
    return FastRCNN(body, heads)
