"""Model registry: ``MODELS[name](**kwargs)``; checkpoints rebuild models with :func:`build_model`.

Builders take keyword arguments only, with JSON-serialisable values, so that a checkpoint's
``{"name": ..., "kwargs": {...}}`` is enough to rebuild the network.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from convision.errors import ConfigError
from convision.models.backbones import BACKBONES, Backbone, build_backbone
from convision.models.classic import alexnet2012, zfnet
from convision.models.classification import Classifier, build_classifier
from convision.models.detection.fast_rcnn import FastRCNN, fast_rcnn
from convision.models.detection.faster_rcnn import FasterRCNN, faster_rcnn
from convision.models.detection.mask_rcnn import MaskRCNN, mask_rcnn
from convision.models.detection.rcnn import RCNN, rcnn
from convision.models.detection.yolo import YOLOv1, yolov1
from convision.models.localization import Localizer, build_localizer
from convision.models.segmentation.deconvnet import DeconvNet, deconvnet
from convision.models.segmentation.dilated import DilatedNet, dilated
from convision.models.segmentation.fcn import FCN, fcn8s, fcn16s, fcn32s
from convision.models.segmentation.segnet import SegNet, segnet
from convision.models.segmentation.unet import UNet, unet

__all__ = [
    "MODELS",
    "build_model",
    "Backbone",
    "BACKBONES",
    "build_backbone",
    "FCN",
    "fcn32s",
    "fcn16s",
    "fcn8s",
]
__all__ += ["Classifier", "build_classifier", "alexnet2012", "zfnet"]
__all__ += ["Localizer", "build_localizer"]
__all__ += [
    "FasterRCNN",
    "faster_rcnn",
    "FastRCNN",
    "fast_rcnn",
    "MaskRCNN",
    "mask_rcnn",
    "YOLOv1",
    "yolov1",
    "RCNN",
    "rcnn",
]
__all__ += [
    "SegNet",
    "segnet",
    "DeconvNet",
    "deconvnet",
    "DilatedNet",
    "dilated",
    "UNet",
    "unet",
]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "fcn32s": fcn32s,
    "fcn16s": fcn16s,
    "fcn8s": fcn8s,
    "segnet": segnet,  # kwargs: num_classes, weights (vgg16_bn)
    "deconvnet": deconvnet,  # kwargs: num_classes, weights (vgg16_bn), fc_channels
    "dilated": dilated,  # kwargs: num_classes, weights, context, fc_channels, backbone (vgg16 = the paper's, mobilenet_v2)
    "unet": unet,  # kwargs: num_classes, backbone (None = the paper's), weights, valid, base_channels, batch_norm, dropout, upsample, decoder_channels
    "classifier": build_classifier,  # kwargs: arch, num_classes, weights, strategy
    "localizer": build_localizer,  # kwargs: arch, num_classes, weights, strategy, hidden, box_input
    "faster_rcnn": faster_rcnn,  # kwargs: num_classes, backbone, weights, pooling, anchor_sizes, ... (detection)
    "mask_rcnn": mask_rcnn,  # kwargs: faster_rcnn's, mask_roi_size, mask_dim, mask_thresh (instance segmentation)
    "fast_rcnn": fast_rcnn,  # kwargs: num_classes, backbone, weights, pooling, ... (needs proposals)
    "rcnn": rcnn,  # kwargs: num_classes, backbone, weights, warp_size, context_padding, svm_C, ... (fitted, not trained)
    "yolov1": yolov1,  # kwargs: num_classes, backbone, weights, image_size, grid, boxes_per_cell, ...
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """``MODELS[name](**kwargs)``; an unknown name or keyword argument raises ``ConfigError``."""
    if name not in MODELS:
        raise ConfigError(f"model: unknown model {name!r} (known: {', '.join(MODELS)})")
    builder = MODELS[name]
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [
            n
            for n, p in params.items()
            if p.kind
            in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        unknown = [k for k in kwargs if k not in accepted]
        if unknown:
            raise ConfigError(
                f"model {name}: unknown argument(s) {', '.join(unknown)} (accepted: {', '.join(accepted)})"
            )
    return builder(**kwargs)
