"""Faster R-CNN (Ren, He, Girshick, Sun 2015, "Faster R-CNN: Towards Real-Time Object Detection with
Region Proposal Networks"): a Region Proposal Network and a Fast R-CNN detector sharing one conv body.

Training is py-faster-rcnn's *approximate joint training* ("end2end"; the paper's section 3.2 (ii)):
one network, the four losses summed, the proposals treated as constants (no gradient through their
coordinates), RoI background IoU range ``[0, 0.5)``. The paper's main results use 4-step
alternating training instead; we do not implement it.

Conv bodies (stride 16, ``backbone=``):

* ``"vgg16"``: conv1_1 .. conv5_3 without pool5 (512 channels), as in the paper; the RoI head's
  fc6/fc7 are the ImageNet classifier's (with 7x7 pooling). ``freeze_early`` fixes conv1-conv2 (the
  paper fine-tunes conv3_1 and up).
* ``"mobilenet_v2"``: ``features[0:14]`` (stride 16, 96 channels) with ``dilated_tail=False`` (what
  ``convision detect train`` builds by default), or, with ``dilated_tail=True`` (this builder's
  default, so that older checkpoints rebuild), followed by the inverted residual blocks
  ``features[14:18]`` with the stride-2 depthwise convolution of ``features[14]`` set to stride 1 and
  the later 3x3 convolutions dilated by 2 (the same taps as before, on the finer map), 320 channels;
  the final 1x1 expansion to 1280 channels (``features[18]``) belongs to the classifier's global
  pooling and is never used. Measured on real aerial photographs (30 tiles of tree crowns, 10
  epochs; BENCHMARKS.md), the dilated tail reached a sixth of the mAP@0.5 of ``features[0:14]``:
  the deeper, wider stride-16 map fits slower on small data, and fc6 takes 320 * 49 inputs instead
  of 96 * 49. ``freeze_early`` fixes ``features[0:4]`` (stride <= 4).
* ``"resnet18"`` / ``"resnet50"`` (and the other ResNets): the stem and layer1..layer3 (C4, stride
  16), as in He et al.'s detection setup, but with the fc head below instead of conv5 on the RoIs.
  ``freeze_early`` fixes conv1 and layer1.

``freeze_bn`` (default: when weights are pretrained) freezes the body's batch norms with their
ImageNet statistics (:class:`torchvision.ops.FrozenBatchNorm2d`): detection batches of one or two
images are too small for batch statistics. With random weights the batch norms stay trainable. A
frozen batch norm is a fixed per-channel affine map, so it is folded into the convolution before it
(:class:`ConvFrozenBN`: the convolution runs with ``weight * scale`` and bias ``shift``, recomputed from
the parameters at every call, which gives the same outputs and the same gradients for the
convolution's weight as conv followed by the frozen norm, without two passes over the activations).

Images are normalised inside the model (``model.mean``, ``model.std``: ImageNet's) and padded
bottom/right into one batch; each image's own size is used for anchor filtering and clipping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from convision.errors import ConfigError
from convision.models.backbones import BACKBONES, build_backbone
from convision.models.backbones import is_none as _no_weights
from convision.models.detection.roi_heads import (
    RoIBoxHead,
    RoIHeads,
    RoIPooler,
    mlp_body,
)
from convision.models.detection.rpn import RegionProposalNetwork

__all__ = [
    "FasterRCNN",
    "faster_rcnn",
    "build_body",
    "build_roi_heads",
    "TwoStageDetector",
    "ConvFrozenBN",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvFrozenBN(nn.Module):
    """``conv`` followed by the frozen batch norm ``bn``, computed as one convolution (module docstring)."""

    def __init__(self, conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn

    def forward(self, x: Tensor) -> Tensor:
        conv, bn = self.conv, self.bn
        scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
        shift = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        weight = conv.weight * scale.view(-1, 1, 1, 1)
        return F.conv2d(
            x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups
        )


def _frozen(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    frozen.weight.copy_(bn.weight.detach())
    frozen.bias.copy_(bn.bias.detach())
    frozen.running_mean.copy_(bn.running_mean)
    frozen.running_var.copy_(bn.running_var)
    return frozen


def _freeze_bn(module: nn.Module, fuse: bool = True) -> nn.Module:
    """Freeze every ``BatchNorm2d`` below ``module``; with ``fuse``, one registered right after a
    ``Conv2d`` in the same parent (every conv/norm pair of torchvision's VGG-BN, ResNet and
    MobileNetV2, whose forward applies them in that order) is folded into it (:class:`ConvFrozenBN`,
    the norm's slot becomes ``Identity``)."""
    children = list(module.named_children())
    for i, (name, child) in enumerate(children):
        if isinstance(child, nn.BatchNorm2d):
            prev_name, prev = children[i - 1] if i > 0 else (None, None)
            if fuse and isinstance(prev, nn.Conv2d):
                setattr(module, prev_name, ConvFrozenBN(prev, _frozen(child)))
                setattr(module, name, nn.Identity())
            else:
                setattr(module, name, _frozen(child))
        else:
            _freeze_bn(child, fuse)
    return module


def build_body(
    backbone: str,
    weights: Any,
    *,
    freeze_early: bool = True,
    freeze_bn: bool | None = None,
    fuse_frozen_bn: bool = True,
    dilated_tail: bool = True,
) -> tuple[nn.Sequential, int, nn.Sequential | None]:
    """The stride-16 conv body (module docstring): ``(body, out_channels, vgg_classifier_or_None)``.
    ``dilated_tail=False`` (MobileNetV2 only) ends the body at ``features[13]`` (96 channels)."""
    if backbone not in BACKBONES:
        raise ConfigError(
            f"backbone: unknown backbone {backbone!r} for detection (known: {', '.join(BACKBONES)})"
        )
    pretrained = not _no_weights(weights)
    bb = build_backbone(backbone, weights)
    family = BACKBONES[backbone][0]
    classifier = None
    if family == "vgg":
        body = nn.Sequential(
            bb.stride8, bb.stride16, bb.stride32[:-1]
        )  # conv5_3, no pool5
        early: list[nn.Module] = list(bb.stride8[:10])  # conv1_1 .. pool2
        classifier = bb.take_classifier()
    elif family == "mobilenet_v2" and not dilated_tail:
        body = nn.Sequential(bb.stride8, bb.stride16)
        early = list(bb.stride8[:4])
    elif family == "mobilenet_v2":
        tail = bb.stride32[
            :-1
        ]  # features[14:18]; features[18] (1x1 to 1280) left out, see docstring
        first = True
        for m in tail.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                if first:
                    m.stride, first = (1, 1), False
                else:
                    m.dilation, m.padding = (2, 2), (2, 2)
        body = nn.Sequential(bb.stride8, bb.stride16, tail)
        early = list(bb.stride8[:4])
    else:
        body = nn.Sequential(bb.stride8, bb.stride16)
        early = [bb.stride8.conv1, bb.stride8.bn1, bb.stride8.layer1]
    if pretrained and freeze_early:
        for m in early:
            for p in m.parameters():
                p.requires_grad_(False)
    if freeze_bn if freeze_bn is not None else pretrained:
        _freeze_bn(body, fuse_frozen_bn)
    channels = [m for m in body.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    return body, channels, classifier


def build_roi_heads(
    *,
    channels: int,
    num_classes: int,
    classifier: nn.Sequential | None,
    pooling: str,
    roi_size: int,
    spp_levels: Sequence[int],
    head_dim: int,
    **kwargs: Any,
) -> RoIHeads:
    """Pooler + fc body (VGG's fc6/fc7 when they fit, else two new ``head_dim`` layers) + outputs."""
    pooler = RoIPooler(pooling, roi_size, 1.0 / 16, spp_levels)
    in_dim = pooler.output_length(channels)
    if classifier is not None:
        fc6, fc7 = classifier[0], classifier[3]
        if fc6.in_features != in_dim:
            fc6 = nn.Linear(in_dim, fc6.out_features)
        body: nn.Module = nn.Sequential(
            fc6,
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            fc7,
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
        )
        dim = fc7.out_features
    else:
        if int(head_dim) < 1:
            raise ConfigError(
                f"head_dim: expected a positive integer, got {head_dim!r}"
            )
        body, dim = mlp_body(in_dim, int(head_dim)), int(head_dim)
    return RoIHeads(
        pooler, RoIBoxHead(body, dim, num_classes), num_classes=num_classes, **kwargs
    )


class TwoStageDetector(nn.Module):
    """Normalisation, padding into a batch and target checks shared by Fast and Faster R-CNN."""

    body: nn.Module
    roi_heads: RoIHeads

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN))
        self.register_buffer("std", torch.tensor(IMAGENET_STD))

    def prepare(self, images: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Normalise and pad ``images`` (bottom/right, zeros after normalisation) into ``N x 3 x H x W``."""
        if isinstance(images, Tensor) and images.dim() == 3:
            images = [images]
        if len(images) == 0 or any(
            not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3
            for im in images
        ):
            raise ValueError("images: expected a non-empty list of 3 x H x W tensors")
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
        mean, std = self.mean.view(3, 1, 1), self.std.view(3, 1, 1)
        if len(set(sizes)) == 1:
            x = torch.stack(list(images)) if len(images) > 1 else images[0].unsqueeze(0)
            return (x.to(mean.dtype) - mean) / std, sizes
        h = max(s[0] for s in sizes)
        w = max(s[1] for s in sizes)
        x = mean.new_zeros((len(images), 3, h, w))
        for i, im in enumerate(images):
            x[i, :, : im.shape[1], : im.shape[2]] = (im.to(mean.dtype) - mean) / std
        return x, sizes

    @staticmethod
    def check_targets(
        targets: Sequence[dict[str, Tensor]] | None, n: int, num_classes: int
    ) -> None:
        if targets is None or len(targets) != n:
            raise ValueError(
                f"targets: training needs one target dict per image ({n}), got {None if targets is None else len(targets)}"
            )
        for t in targets:
            boxes, labels = t["boxes"], t["labels"]
            if (
                boxes.dim() != 2
                or boxes.shape[1] != 4
                or labels.shape[0] != boxes.shape[0]
            ):
                raise ValueError(
                    f"targets: expected boxes N x 4 and labels N, got {tuple(boxes.shape)} and {tuple(labels.shape)}"
                )
            if labels.numel() and (
                int(labels.min()) < 0 or int(labels.max()) >= num_classes
            ):
                raise ValueError(f"targets: labels must be in 0..{num_classes - 1}")


class FasterRCNN(TwoStageDetector):
    """``forward(images, targets=None)``: the detection contract (:mod:`convision.models.detection`);
    training losses ``rpn_cls``, ``rpn_box``, ``roi_cls``, ``roi_box``."""

    def __init__(
        self, body: nn.Module, rpn: RegionProposalNetwork, roi_heads: RoIHeads
    ) -> None:
        super().__init__()
        self.body = body
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.num_classes = roi_heads.num_classes

    def device_targets(
        self,
        targets: Sequence[dict[str, Tensor]],
        x: Tensor,
        sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Checked training targets on ``x``'s device (boxes in its dtype)."""
        self.check_targets(targets, len(sizes), self.num_classes)
        return [
            {
                "boxes": t["boxes"].to(x.device, x.dtype),
                "labels": t["labels"].to(x.device),
            }
            for t in targets
        ]

    def features_and_proposals(
        self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None
    ) -> tuple[Tensor, list[Tensor], dict[str, Tensor], list[tuple[int, int]], Any]:
        """The shared trunk: ``(features, proposals, rpn_losses, image sizes, device targets)``."""
        x, sizes = self.prepare(images)
        if self.training:
            targets = self.device_targets(targets, x, sizes)
        features = self.body(x)
        proposals, rpn_losses = self.rpn(
            features, sizes, [t["boxes"] for t in targets] if self.training else None
        )
        return features, proposals, rpn_losses, sizes, targets

    def forward(
        self,
        images: Sequence[Tensor],
        targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        features, proposals, rpn_losses, sizes, targets = self.features_and_proposals(
            images, targets
        )
        if self.training:
            return {**rpn_losses, **self.roi_heads(features, proposals, sizes, targets)}
        return self.roi_heads(features, proposals, sizes)


def faster_rcnn(
    *,
    num_classes: int,
    backbone: str = "mobilenet_v2",
    weights: str | None = "IMAGENET1K_V1",
    pooling: str = "roi_pool",
    roi_size: int = 7,
    spp_levels: Sequence[int] = (6, 3, 2, 1),
    head_dim: int = 1024,
    anchor_sizes: Sequence[float] = (128, 256, 512),
    anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    rpn_channels: int | None = None,
    rpn_pre_nms_train: int = 12000,
    rpn_post_nms_train: int = 2000,
    rpn_pre_nms_test: int = 6000,
    rpn_post_nms_test: int = 300,
    rpn_nms_thresh: float = 0.7,
    rpn_min_size: float = 1.0,
    rpn_batch_size: int = 256,
    roi_batch_size: int = 128,
    bg_iou_low: float = 0.0,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.3,
    detections_per_image: int = 100,
    freeze_early: bool = True,
    freeze_bn: bool | None = None,
    dilated_tail: bool = True,
) -> FasterRCNN:
    """Faster R-CNN (module docstring) for ``num_classes`` user classes.

    ``rpn_channels``: width of the RPN's 3x3 conv (None: 512 for VGG16 as the paper, 256 otherwise).
    ``head_dim``: width of the two fc layers of non-VGG heads. ``spp_levels`` only for ``pooling="spp"``.
    """
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
    mid = (
        int(rpn_channels)
        if rpn_channels is not None
        else (512 if backbone.startswith("vgg") else 256)
    )
    rpn = RegionProposalNetwork(
        channels,
        mid_channels=mid,
        anchor_sizes=anchor_sizes,
        anchor_ratios=anchor_ratios,
        batch_size_per_image=rpn_batch_size,
        pre_nms_train=rpn_pre_nms_train,
        post_nms_train=rpn_post_nms_train,
        pre_nms_test=rpn_pre_nms_test,
        post_nms_test=rpn_post_nms_test,
        nms_thresh=rpn_nms_thresh,
        min_size=rpn_min_size,
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
    return FasterRCNN(body, rpn, heads)
