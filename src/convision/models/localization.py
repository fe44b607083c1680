"""Single-object localization: one classifier backbone, a class head and a box-regression head.

"Classification + localization" as in OverFeat (Sermanet et al., *OverFeat: Integrated
Recognition, Localization and Detection using Convolutional Networks*, ICLR 2014): the same
convolutional features feed the classifier and a regression network that predicts the object's
box; the two are trained with cross-entropy and a squared (Gaussian log-likelihood) box loss.
The class head is the :class:`Classifier`'s own (on its pooled feature vector). The box head
(``box_input``):

``"spatial"`` (default)
    As OverFeat's regressor, on the backbone's last *spatial* feature map (the input of the global
    pooling: MobileNetV2/VGG/AlexNet/DenseNet ``features``, ResNet ``layer4``, GoogLeNet
    ``inception5b``, read with a forward hook): ``Conv1x1(C, 128) -> ReLU -> AdaptiveAvgPool(4x4) ->
    Linear(2048, hidden) -> ReLU -> Linear(hidden, 4)``. Keeping the grid keeps *where* things are.
``"pooled"``
    ``Linear(D, hidden) -> ReLU -> Linear(hidden, 4)`` on the pooled vector (:meth:`Classifier.features`).
    Global pooling throws most position information away (an early 64 px bench run with this head
    reached mean IoU 0.16 against 0.14 for always predicting the mean box; that run also had the
    sigmoid output and a 10x head lr, so the comparison with "spatial" is not a controlled one).

Box parameterisation (the contract of this module): the head predicts the box **normalised to
the network input** as ``(cx, cy, w, h)``, linearly (``0.5 + Linear(...)``, so a fresh head
predicts the centred half-size box). ``"boxes_cxcywh"`` is that raw output (the loss is taken on
it); ``"boxes"`` is the valid box made from it: ``w, h`` at least ``MIN_SIZE``, converted to
normalised ``(x1, y1, x2, y2)`` and clipped to ``[0, 1]``. (A sigmoid on the output was tried
first: with the head at AdamW lr 1e-2 it saturated to zero-size boxes within an epoch and never
recovered, mean IoU 0.) The input is the whole image resized to ``S x S`` (no crop, aspect ratio not kept:
see :mod:`convision.data.localization`), so a normalised box is also normalised to the original
image and :func:`to_pixels` maps it back: ``x * W, y * H``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from convision.errors import ConfigError
from convision.models.classification import Classifier, build_classifier

__all__ = ["Localizer", "build_localizer", "to_pixels", "SPATIAL_MODULES", "BOX_INPUTS"]

#: arch -> the module whose output is the last spatial feature map (before global pooling)
SPATIAL_MODULES: dict[str, str] = {
    "alexnet": "features",
    "vgg11": "features",
    "vgg16": "features",
    "googlenet": "inception5b",
    "resnet18": "layer4",
    "resnet50": "layer4",
    "densenet121": "features",
    "mobilenet_v2": "features",
    "alexnet2012": "features",
    "zfnet": "features",
}
BOX_INPUTS = ("spatial", "pooled")
MIN_SIZE = 1e-3  # smallest predicted width/height (normalised) when boxes are formed
_REDUCED, _GRID = 128, 4


def _keep_output(module: nn.Module, inputs: Any, output: Tensor) -> None:
    """Forward hook: park the spatial map on the module (a plain function, so deepcopy stays correct)."""
    module._localizer_map = output


class Localizer(nn.Module):
    """``forward(images[N,3,S,S]) -> {"logits": [N,K], "boxes": [N,4] normalised xyxy,
    "boxes_cxcywh": [N,4] normalised}``.

    ``classifier`` is a :class:`Classifier` (its ``net`` the backbone, its ``head`` the class head);
    ``box_head`` regresses the box from the same features. Strategies as the classifier's
    (``feature-extract`` freezes the backbone, both heads train).
    """

    def __init__(
        self, classifier: Classifier, hidden: int = 256, box_input: str = "spatial"
    ) -> None:
        super().__init__()
        if box_input not in BOX_INPUTS:
            raise ConfigError(
                f"box_input: unknown {box_input!r} (expected {' | '.join(BOX_INPUTS)})"
            )
        self.classifier = classifier
        self.hidden = int(hidden)
        self.box_input = box_input
        layers: list[nn.Module] = []
        if box_input == "spatial":
            self._spatial_name = SPATIAL_MODULES[classifier.arch]
            spatial = classifier.net.get_submodule(self._spatial_name)
            spatial.register_forward_hook(_keep_output)
            channels = _out_channels(classifier.net, self._spatial_name)
            layers += [
                nn.Conv2d(channels, _REDUCED, 1),
                nn.ReLU(inplace=True),
                nn.AdaptiveAvgPool2d(_GRID),
                nn.Flatten(1),
            ]
            d = _REDUCED * _GRID * _GRID
        else:
            d = classifier.in_features
        if self.hidden > 0:
            layers += [
                nn.Linear(d, self.hidden),
                nn.ReLU(inplace=True),
                nn.Linear(self.hidden, 4),
            ]
        else:
            layers += [nn.Linear(d, 4)]
        self.box_head = nn.Sequential(*layers)
        last = self.box_head[-1]
        nn.init.normal_(last.weight, std=0.01)
        nn.init.zeros_(
            last.bias
        )  # 0.5 + 0: starts at the centred box of half the image's size

    @property
    def arch(self) -> str:
        return self.classifier.arch

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    @property
    def strategy(self) -> str:
        return self.classifier.strategy

    def features(self, images: Tensor) -> Tensor:
        return self.classifier.features(images)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        f = self.classifier.features(images)
        logits = self.classifier.head(f)
        if self.box_input == "spatial":
            holder = self.classifier.net.get_submodule(self._spatial_name)
            fmap = holder.__dict__.pop("_localizer_map")
            if (
                self.classifier.arch == "densenet121"
            ):  # torchvision applies the final ReLU functionally
                fmap = torch.relu(fmap)
            box_in = fmap
        else:
            box_in = f
        cxcywh = (
            0.5 + self.box_head(box_in).float()
        )  # linear: no saturating squashing, the loss always has a gradient
        valid = torch.cat([cxcywh[:, :2], cxcywh[:, 2:].clamp(min=MIN_SIZE)], 1)
        boxes = box_convert(valid, "cxcywh", "xyxy").clamp(0.0, 1.0)
        return {"logits": logits, "boxes": boxes, "boxes_cxcywh": cxcywh}

    def parameter_groups(
        self, lr: float, head_lr_mult: float = 10.0
    ) -> list[dict[str, Any]]:
        """The classifier's groups (backbone at ``lr``, heads at ``lr * head_lr_mult``) with the box head
        in the head group."""
        groups = self.classifier.parameter_groups(lr, head_lr_mult)
        box = [p for p in self.box_head.parameters() if p.requires_grad]
        for g in groups:
            if g["name"] == "head":
                g["params"] = list(g["params"]) + box
                break
        else:
            groups.append(
                {"name": "head", "params": box, "lr": float(lr) * float(head_lr_mult)}
            )
        return groups

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, box_input={self.box_input!r}"


@torch.no_grad()
def _out_channels(net: nn.Module, name: str) -> int:
    """Channels of the spatial map ``name`` produces (one tiny forward pass in eval mode)."""
    was = net.training
    net.eval()
    try:
        net(torch.zeros(1, 3, 64, 64))
    finally:
        net.train(was)
    return int(net.get_submodule(name).__dict__.pop("_localizer_map").shape[1])


def build_localizer(
    arch: str = "mobilenet_v2",
    num_classes: int = 5,
    weights: str | os.PathLike | None = None,
    strategy: str = "finetune",
    hidden: int = 256,
    box_input: str = "spatial",
) -> Localizer:
    """A :class:`Localizer` on :func:`build_classifier`'s network (same ``arch``/``weights``/``strategy``).

    Registered as ``"localizer"`` in :data:`convision.models.MODELS`; all arguments are JSON values.
    """
    if int(hidden) < 0:
        raise ConfigError(
            f"hidden: must be >= 0 (0 = a single linear box layer), got {hidden}"
        )
    if box_input not in BOX_INPUTS:
        raise ConfigError(
            f"box_input: unknown {box_input!r} (expected {' | '.join(BOX_INPUTS)})"
        )
    return Localizer(
        build_classifier(arch, num_classes, weights, strategy),
        hidden=int(hidden),
        box_input=box_input,
    )


def to_pixels(boxes: Tensor, width: int | Tensor, height: int | Tensor) -> Tensor:
    """Normalised xyxy ``[N,4]`` -> pixel xyxy of a ``width x height`` image (x2/y2 exclusive edges)."""
    scale = torch.as_tensor(
        [width, height, width, height], dtype=torch.float32, device=boxes.device
    )
    return boxes.float() * scale
