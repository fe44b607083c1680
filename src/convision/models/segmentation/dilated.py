"""Dilated convolutions: the VGG16 front-end at stride 8 and the multi-scale context module.

Fisher Yu, Vladlen Koltun, "Multi-Scale Context Aggregation by Dilated Convolutions", ICLR 2016
(arXiv:1511.07122). Reference: github.com/fyu/dilation.

Front-end (paper Sec. 4)
------------------------
VGG16 adapted for dense prediction: the last two pooling layers (pool4, pool5) are removed and
every later convolution is dilated by 2 for each removed pooling layer: conv5_1..conv5_3 by 2, fc6
(a 7x7 convolution, the convolutionalised ``Linear(512*7*7, 4096)``) by 4, fc7 a 1x1 convolution,
then ``final``, a 1x1 convolution to ``num_classes``. The output has stride 8 (three 2x2 poolings
remain); fc6/fc7 are followed by ReLU and Dropout(0.5) as in VGG16.

Context module (paper Sec. 3, Table 1)
--------------------------------------
Eight layers on C = ``num_classes`` feature maps: seven 3x3 convolutions with dilations
1, 1, 2, 4, 8, 16, 1, each followed by ReLU ("truncation"), then a 1x1 convolution without
ReLU; receptive field 67x67. ``context="basic"``: every layer has C channels; ``"large"``: output
widths 2C, 2C, 4C, 8C, 16C, 32C, 32C, C. Initialisation (Sec. 3): ``basic`` is the identity,
``k(t, a) = 1[t=0] 1[a=b]`` (t the kernel offset from the centre, a the input and b the output
map), biases zero, so the untrained module passes the front-end's (non-negative part of the)
scores through; ``large`` uses ``k(t, a) = C/c_out`` if ``t = 0`` and
``floor(a C / c_in) == floor(b C / c_out)``, else ``eps ~ N(0, sigma^2)`` with
``sigma = 1e-3 * C / c_out`` (the paper asks for ``sigma << C / c_out``) -- group-averaging layers
whose product is again the identity. ``context="none"`` is the front-end alone.

Front-end on MobileNetV2 (``backbone="mobilenet_v2"``, not in the paper)
-----------------------------------------------------------------------
The paper's recipe applied to torchvision's ImageNet MobileNetV2, the one pretrained network that
loads offline here: the two downsampling steps after stride 8 are removed (the stride-2 depthwise
convolutions of ``features[7]`` and ``features[14]`` get stride 1) and every later 3x3 depthwise
convolution is dilated by 2 (stride-16 stage) and 4 (stride-32 stage), so the 1280-channel map
keeps stride 8; then Dropout(0.2) (MobileNetV2's classifier dropout) and ``final``. Batch
normalisation comes with the network. This is the default of ``convision segment train --model
dilated`` (the ``--backbone`` default): the VGG16 form cannot load its ImageNet weights offline and
does not learn from random weights in a short run (mIoU 0.11 on the built-in scenes).

The stride-8 scores are upsampled 8x by bilinear interpolation (a fixed
:class:`convision.nn.BilinearUpsample` on VGG's "center" grid), as in the paper.

Where this differs from the paper / reference
---------------------------------------------
* The reference removes the padding of the intermediate maps and instead pads the input image by
  reflection (so the output stays aligned with the input); here every convolution keeps PyTorch's
  zero "same" padding (dilated layers: padding = dilation, fc6: 12), and the input is zero-padded
  on the bottom/right to a multiple of 8 and the logits are cropped back to H x W, as FCN does.
  Near the border the layers therefore see zeros rather than reflected content.
* Weights come from torchvision's ``vgg16`` (``weights="IMAGENET1K_V1"``); fc6/fc7 are its
  classifier's Linear layers reshaped. ``final`` starts from N(0, 0.01^2) (the reference's
  Gaussian filler), bias zero.
* The paper trains in stages (front-end first, then the context module on the front-end's
  output with the front-end fixed); with the shared engine train ``context="none"``, then a
  context model with ``--init-from`` the front-end checkpoint (same parameter names).
* ``fc_channels`` (default 4096) narrows fc6/fc7 for small experiments and tests.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from convision.errors import ConfigError
from convision.models.backbones import is_none, load_torchvision_classifier
from convision.models.segmentation.fcn import fc_to_conv
from convision.models.segmentation.segnet import check_num_classes
from convision.nn.upsampling import BilinearUpsample

__all__ = [
    "DilatedNet",
    "dilated",
    "ContextModule",
    "CONTEXT_DILATIONS",
    "CONTEXT_WIDTHS",
    "DILATED_BACKBONES",
]

#: front-ends: the paper's VGG16 and a dilated MobileNetV2
DILATED_BACKBONES: tuple[str, ...] = ("vgg16", "mobilenet_v2")

#: dilations of the context module's eight layers (the last is 1x1)
CONTEXT_DILATIONS: tuple[int, ...] = (1, 1, 2, 4, 8, 16, 1, 1)
#: output widths in units of C (= num_classes) per layer
CONTEXT_WIDTHS: dict[str, tuple[int, ...]] = {
    "basic": (1, 1, 1, 1, 1, 1, 1, 1),
    "large": (2, 2, 4, 8, 16, 32, 32, 1),
}

_ALIGN = 8


def _identity_init(conv: nn.Conv2d, classes: int, sigma_scale: float) -> None:
    """The paper's initialisation (Sec. 3) of one context layer ``c_in -> c_out``."""
    c_out, c_in, kh, kw = conv.weight.shape
    value = classes / c_out
    with torch.no_grad():
        w = torch.zeros_like(conv.weight)
        if sigma_scale > 0:
            w.normal_(0.0, sigma_scale * value)
        a = torch.arange(c_in)
        b = torch.arange(c_out)
        match = (a[None, :] * classes // c_in) == (
            b[:, None] * classes // c_out
        )  # [c_out, c_in]
        centre = w[:, :, kh // 2, kw // 2]
        centre[match] = value
        conv.weight.copy_(w)
        nn.init.zeros_(conv.bias)


class ContextModule(nn.Module):
    """The context module of Table 1 on ``classes`` maps (``kind``: "basic" or "large")."""

    def __init__(
        self, classes: int, kind: str = "basic", sigma_scale: float = 1e-3
    ) -> None:
        super().__init__()
        if kind not in CONTEXT_WIDTHS:
            raise ConfigError(
                f"context: expected 'none', 'basic' or 'large', got {kind!r}"
            )
        self.kind = kind
        layers: list[nn.Module] = []
        cin = classes
        for i, (mult, d) in enumerate(zip(CONTEXT_WIDTHS[kind], CONTEXT_DILATIONS)):
            last = i == len(CONTEXT_DILATIONS) - 1
            k = 1 if last else 3
            conv = nn.Conv2d(
                cin, mult * classes, k, padding=0 if last else d, dilation=d
            )
            _identity_init(conv, classes, sigma_scale if kind == "large" else 0.0)
            layers.append(conv)
            if not last:
                layers.append(nn.ReLU(inplace=True))
            cin = mult * classes
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class DilatedNet(nn.Module):
    """Yu & Koltun's front-end (+ context module); ``forward(x[N,3,H,W]) -> logits[N,C,H,W]``, any H, W.

    Submodules: ``frontend`` (torchvision ``vgg16.features`` without pool4/pool5, conv5 dilated by 2,
    original child names), ``fc6`` (7x7, dilation 4), ``fc7``, ``final`` (1x1 to C), ``context``
    (:class:`ContextModule` or absent) and ``upsample`` (fixed 8x bilinear).
    """

    def __init__(
        self,
        num_classes: int = 21,
        weights: str | os.PathLike | None = None,
        context: str = "large",
        fc_channels: int = 4096,
        backbone: str = "vgg16",
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if context not in ("none", "basic", "large"):
            raise ConfigError(
                f"context: expected 'none', 'basic' or 'large', got {context!r}"
            )
        if (
            isinstance(fc_channels, bool)
            or not isinstance(fc_channels, int)
            or fc_channels < 1
        ):
            raise ConfigError(
                f"fc_channels: must be a positive integer, got {fc_channels!r}"
            )
        if backbone not in DILATED_BACKBONES:
            raise ConfigError(
                f"backbone: the dilated front-end exists for {' | '.join(DILATED_BACKBONES)}, got {backbone!r}"
            )
        self.backbone_name = backbone
        self.context_kind = context
        self.fc_channels = fc_channels
        #: the builder name and its JSON-serialisable keyword arguments
        self.spec: dict[str, Any] = {
            "name": "dilated",
            "kwargs": {
                "num_classes": num_classes,
                "weights": None if weights is None else os.fspath(weights),
                "context": context,
                "fc_channels": fc_channels,
                "backbone": backbone,
            },
        }
        if backbone == "mobilenet_v2":
            self._mobilenet_frontend(weights)
        else:
            self._vgg_frontend(weights, fc_channels)
        nn.init.normal_(self.final.weight, 0.0, 0.01)
        nn.init.zeros_(self.final.bias)
        self.context = (
            ContextModule(num_classes, context) if context != "none" else None
        )
        self.upsample = BilinearUpsample(
            num_classes, 8, learnable=False, grid=self.grid
        )

    def _mobilenet_frontend(self, weights: str | os.PathLike | None) -> None:
        net: Any = load_torchvision_classifier("mobilenet_v2", weights)
        feats = net.features
        for first, last, dilation in (
            (7, 14, 2),
            (14, 18, 4),
        ):  # the stride-16 and stride-32 stages
            for block in feats[first:last]:
                for m in block.modules():
                    if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                        m.stride, m.dilation, m.padding = (
                            (1, 1),
                            (dilation, dilation),
                            (dilation, dilation),
                        )
        self.frontend = feats
        self.fc6 = self.fc7 = None
        self.drop = nn.Dropout(
            next((m.p for m in net.classifier if isinstance(m, nn.Dropout)), 0.0)
        )
        width = [m for m in feats[-1].modules() if isinstance(m, nn.Conv2d)][
            -1
        ].out_channels  # 1280
        self.final = nn.Conv2d(width, self.num_classes, 1)
        self.grid = "corner"  # odd-kernel, padded stride-2 convolutions (see convision.models.backbones)

    def _vgg_frontend(
        self, weights: str | os.PathLike | None, fc_channels: int
    ) -> None:
        pretrained = not is_none(weights)
        if pretrained and fc_channels != 4096:
            raise ConfigError(
                f"fc_channels: pretrained fc6/fc7 have 4096 channels, got {fc_channels} (use weights=none)"
            )
        vgg: Any = load_torchvision_classifier("vgg16", weights)
        feats = vgg.features
        pools = [i for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d)]
        keep = [i for i in range(pools[4]) if i != pools[3]]  # drop pool4 and pool5
        for i in range(pools[3] + 1, pools[4]):
            if isinstance(feats[i], nn.Conv2d):
                feats[i].dilation, feats[i].padding = (2, 2), (2, 2)
        self.frontend = nn.Sequential(OrderedDict((str(i), feats[i]) for i in keep))
        c5 = feats[pools[4] - 2].out_channels  # conv5_3: 512
        if pretrained:
            linears = [m for m in vgg.classifier if isinstance(m, nn.Linear)]
            self.fc6 = fc_to_conv(linears[0], c5, 7, padding=12)
            self.fc7 = fc_to_conv(linears[1], fc_channels, 1)
            params = (*self.fc6.parameters(), *self.fc7.parameters())
            if not all(torch.isfinite(p.sum(dtype=torch.float64)) for p in params):
                warnings.warn(
                    "the VGG classifier weights are not finite (feature-only weights?): fc6/fc7 are initialised randomly",
                    stacklevel=3,
                )
                pretrained = False
        else:
            # skip_init: re-initialised below (a default init of a 4096-wide fc6 alone takes ~1 s on CPU)
            self.fc6 = torch.nn.utils.skip_init(
                nn.Conv2d, c5, fc_channels, 7, padding=12
            )
            self.fc7 = torch.nn.utils.skip_init(nn.Conv2d, fc_channels, fc_channels, 1)
        if not pretrained:
            for conv in (self.fc6, self.fc7):
                nn.init.normal_(
                    conv.weight, 0.0, 0.01
                )  # torchvision's VGG Linear initialisation
                nn.init.zeros_(conv.bias)
        self.fc6.dilation = (4, 4)
        del vgg, feats
        self.relu6, self.drop6 = nn.ReLU(inplace=True), nn.Dropout(0.5)
        self.relu7, self.drop7 = nn.ReLU(inplace=True), nn.Dropout(0.5)
        self.final = nn.Conv2d(fc_channels, self.num_classes, 1)
        self.grid = "center"

    def scores(self, x: Tensor) -> Tensor:
        """Stride-8 class scores (front-end, then the context module if any); ``x``'s size a multiple of 8."""
        x = self.frontend(x)
        if self.fc6 is not None:
            x = self.drop6(self.relu6(self.fc6(x)))
            x = self.drop7(self.relu7(self.fc7(x)))
        else:
            x = self.drop(x)
        x = self.final(x)
        return self.context(x) if self.context is not None else x

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % _ALIGN, -width % _ALIGN
        if pad_h or pad_w:
            x = F.pad(
                x, (0, pad_w, 0, pad_h)
            )  # zeros = the mean colour of normalised input
        return self.upsample(self.scores(x))[..., :height, :width]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, backbone={self.backbone_name!r}, context={self.context_kind!r}"


def dilated(
    *,
    num_classes: int = 21,
    weights: str | os.PathLike | None = None,
    context: str = "large",
    fc_channels: int = 4096,
    backbone: str = "vgg16",
) -> DilatedNet:
    """Yu & Koltun's dilated front-end with the ``context`` module ("none", "basic", "large").
    ``backbone``: "vgg16" (the paper's; ``fc_channels`` wide fc6/fc7) or "mobilenet_v2" (dilated
    MobileNetV2, see the module docstring); ``weights``: 'none', a torchvision weights name of that
    network or a local ``.pth`` of it."""
    return DilatedNet(
        num_classes=num_classes,
        weights=weights,
        context=context,
        fc_channels=fc_channels,
        backbone=backbone,
    )
