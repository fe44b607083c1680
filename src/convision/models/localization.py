"""Single-object localization: one classifier backbone, a class head and a box-regression head.

"Classification + localization" as in OverFeat (Sermanet et al., *OverFeat: Integrated
Recognition, Localization and Detection using Convolutional Networks*, ICLR 2014): the same
convolutional features feed the classifier and a regression network that predicts the object's
box; the two are trained with cross-entropy and a squared (Gaussian log-likelihood) box loss.
Here the features are the classifier backbone's output vector (:meth:`Classifier.features`, e.g.
MobileNetV2's 1280 pooled features), the box head is ``Linear(D, hidden) -> ReLU -> Linear(hidden, 4)``
(OverFeat's regressor had two hidden FC layers on the spatial pool5 maps; one hidden layer on the
pooled vector is the simplification made here).

Box parameterisation (the contract of this module): the head predicts the box **normalised to
the network input** as ``(cx, cy, w, h)`` through a sigmoid, so every coordinate lies in
``(0, 1)`` and ``w, h > 0`` -- a valid box by construction. ``forward`` returns it both as
``"boxes_cxcywh"`` and converted to normalised ``(x1, y1, x2, y2)`` clipped to ``[0, 1]`` as
``"boxes"``. The input is the whole image resized to ``S x S`` (no crop, aspect ratio not kept:
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

__all__ = ["Localizer", "build_localizer", "to_pixels"]


class Localizer(nn.Module):
    """``forward(images[N,3,S,S]) -> {"logits": [N,K], "boxes": [N,4] normalised xyxy,
    "boxes_cxcywh": [N,4] normalised}``.

    ``classifier`` is a :class:`Classifier` (its ``net`` the backbone, its ``head`` the class head);
    ``box_head`` regresses the box from the same features. Strategies as the classifier's
    (``feature-extract`` freezes the backbone, both heads train).
    """

    def __init__(self, classifier: Classifier, hidden: int = 256) -> None:
        super().__init__()
        self.classifier = classifier
        d = classifier.in_features
        self.hidden = int(hidden)
        if self.hidden > 0:
            self.box_head: nn.Module = nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(inplace=True), nn.Linear(self.hidden, 4))
        else:
            self.box_head = nn.Linear(d, 4)
        last = self.box_head[-1] if isinstance(self.box_head, nn.Sequential) else self.box_head
        nn.init.normal_(last.weight, std=0.01)
        nn.init.zeros_(last.bias)  # starts at the centred box of half the image's size

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
        cxcywh = torch.sigmoid(self.box_head(f).float())
        boxes = box_convert(cxcywh, "cxcywh", "xyxy").clamp(0.0, 1.0)
        return {"logits": logits, "boxes": boxes, "boxes_cxcywh": cxcywh}

    def parameter_groups(self, lr: float, head_lr_mult: float = 100.0) -> list[dict[str, Any]]:
        """The classifier's groups (backbone at ``lr``, heads at ``lr * head_lr_mult``) with the box head
        in the head group."""
        groups = self.classifier.parameter_groups(lr, head_lr_mult)
        box = [p for p in self.box_head.parameters() if p.requires_grad]
        for g in groups:
            if g["name"] == "head":
                g["params"] = list(g["params"]) + box
                break
        else:
            groups.append({"name": "head", "params": box, "lr": float(lr) * float(head_lr_mult)})
        return groups

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}"


def build_localizer(arch: str = "mobilenet_v2", num_classes: int = 5, weights: str | os.PathLike | None = None,
                    strategy: str = "finetune", hidden: int = 256) -> Localizer:
    """A :class:`Localizer` on :func:`build_classifier`'s network (same ``arch``/``weights``/``strategy``).

    Registered as ``"localizer"`` in :data:`convision.models.MODELS`; all arguments are JSON values.
    """
    if int(hidden) < 0:
        raise ConfigError(f"hidden: must be >= 0 (0 = a single linear box layer), got {hidden}")
    return Localizer(build_classifier(arch, num_classes, weights, strategy), hidden=int(hidden))


def to_pixels(boxes: Tensor, width: int | Tensor, height: int | Tensor) -> Tensor:
    """Normalised xyxy ``[N,4]`` -> pixel xyxy of a ``width x height`` image (x2/y2 exclusive edges)."""
    scale = torch.as_tensor([width, height, width, height], dtype=torch.float32, device=boxes.device)
    return boxes.float() * scale
